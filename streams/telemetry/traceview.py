"""Read traces back from ``telemetry.spans``: find one, order it as a tree, print it.

Why this exists:
    ``llmops trace`` and the demo show one document's (or one request's) trace without Jaeger:
    the spans every agent exported as OTLP protobuf are decoded with the ``opentelemetry-proto``
    classes, the trace is found by id, by ``llmops.doc_id``, by ``llmops.request_id`` or as the
    latest, and printed as a tree with durations and attributes plus a terminal waterfall.

Usage:
    >>> data = load_trace(settings, doc_id="json")    # or trace_id=..., request_id=..., or none: the latest
    >>> print_trace(Console(), data)

Notes:
    Decoding and selection are pure functions over :class:`SpanRecord`; only :func:`read_spans`
    talks to Kafka. A batch span lives in its own trace and links to its members, so a
    document's tree shows each stage's span with a link to the batch that did the work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from streams.kafka.topics import Topics
from streams.settings import Settings
from streams.telemetry.tracing import CHUNK_ID, DOC_ID, REQUEST_ID

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}
BATCH_SIZE_ATTRIBUTE = "messaging.batch.message_count"
KEY_ATTRIBUTE = "messaging.kafka.message.key"


@dataclass(frozen=True)
class SpanRecord:
    """One span as read back: ids in hex, times in Unix nanoseconds."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    service: str
    kind: str
    start_ns: int
    end_ns: int
    status: str
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    links: tuple[tuple[str, str], ...] = ()

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``llmops trace --json``)."""
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_id or None,
            "name": self.name,
            "service": self.service,
            "kind": self.kind,
            "start_unix_ns": self.start_ns,
            "duration_ms": round(self.duration_ms, 3),
            "status": self.status,
            "status_message": self.status_message or None,
            "attributes": self.attributes,
            "links": [{"trace_id": t, "span_id": s} for t, s in self.links],
        }


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind) if kind else None


def _span_record(span: Any, service: str) -> SpanRecord:
    return SpanRecord(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_id=span.parent_span_id.hex(),
        name=span.name,
        service=service,
        kind=KINDS.get(span.kind, str(span.kind)),
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        status=STATUS.get(span.status.code, str(span.status.code)),
        status_message=span.status.message,
        attributes={kv.key: _value(kv.value) for kv in span.attributes},
        links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
    )


def decode_spans(payload: bytes) -> list[SpanRecord]:
    """The spans of one ``ExportTraceServiceRequest`` (a ``telemetry.spans`` record value)."""
    request = ExportTraceServiceRequest.FromString(payload)
    spans: list[SpanRecord] = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        service = str(resource.get("service.name", "?"))
        for scope_spans in resource_spans.scope_spans:
            spans.extend(_span_record(span, service) for span in scope_spans.spans)
    return spans


def find_trace_id(
    spans: Iterable[SpanRecord],
    *,
    trace_id: str | None = None,
    doc_id: str | None = None,
    request_id: str | None = None,
) -> str | None:
    """The trace asked for: by id, the latest one of a document or request, or the latest of all.

    A document is found by ``llmops.doc_id`` or by its Kafka key (a record rejected before its
    id could be read has only the key). With none of the three, the latest trace of a document
    or request is chosen (batch traces aside), or else the latest of any.
    """
    spans = list(spans)
    if trace_id is not None:
        wanted = trace_id.lower()
        return wanted if any(s.trace_id == wanted for s in spans) else None
    if doc_id is not None:
        matches = [s for s in spans if doc_id in (s.attributes.get(DOC_ID), s.attributes.get(KEY_ATTRIBUTE))]
    elif request_id is not None:
        matches = [s for s in spans if s.attributes.get(REQUEST_ID) == request_id]
    else:
        matches = [s for s in spans if DOC_ID in s.attributes or REQUEST_ID in s.attributes] or spans
    if not matches:
        return None
    return max(matches, key=lambda s: s.start_ns).trace_id


def trace_spans(spans: Iterable[SpanRecord], trace_id: str) -> list[SpanRecord]:
    """The spans of one trace as a depth-first tree walk (children by start time)."""
    own = {s.span_id: s for s in spans if s.trace_id == trace_id}  # a span exported twice counts once
    children: dict[str, list[SpanRecord]] = {}
    for span in own.values():
        parent = span.parent_id if span.parent_id in own else ""
        children.setdefault(parent, []).append(span)
    ordered: list[SpanRecord] = []

    def walk(parent: str) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: (s.start_ns, s.name)):
            ordered.append(span)
            walk(span.span_id)

    walk("")
    return ordered


def depths(spans: Sequence[SpanRecord]) -> list[int]:
    """Depth of each span of a :func:`trace_spans` walk (0 = a root, or its parent is missing)."""
    depth_of: dict[str, int] = {}
    result = []
    for span in spans:
        depth = depth_of.get(span.parent_id, -1) + 1
        depth_of[span.span_id] = depth
        result.append(depth)
    return result


def trace_as_dict(spans: Sequence[SpanRecord]) -> dict[str, Any]:
    """One trace as JSON: its id, services, duration and spans (tree order, with depth)."""
    if not spans:
        return {"trace_id": None, "spans": []}
    start = min(s.start_ns for s in spans)
    return {
        "trace_id": spans[0].trace_id,
        "services": sorted({s.service for s in spans}),
        "span_count": len(spans),
        "duration_ms": round((max(s.end_ns for s in spans) - start) / 1e6, 3),
        "errors": sum(s.status == "ERROR" for s in spans),
        "spans": [
            {**s.to_dict(), "depth": d, "offset_ms": round((s.start_ns - start) / 1e6, 3)}
            for s, d in zip(spans, depths(spans), strict=True)
        ],
    }


# What the terminal view shows of each span, by label (``--json`` has every attribute).
SHOWN_ATTRIBUTES = {
    "doc_id": DOC_ID,
    "chunk_id": CHUNK_ID,
    "request_id": REQUEST_ID,
    "outcome": "llmops.outcome",
    "op": "llmops.op",
    "dead_letter": "llmops.dead_letter.reason",
    "partition": "messaging.kafka.destination.partition",
    "offset": "messaging.kafka.message.offset",
}


def print_trace(console: Any, data: dict[str, Any]) -> None:
    """One :func:`trace_as_dict` trace as a table: indented span tree with attributes, ms, waterfall."""
    from rich.table import Table
    from rich.text import Text

    width = min(40, max(10, console.width - 70))
    total_ms = max(data["duration_ms"], 1e-3)
    table = Table(
        title=f"trace {data['trace_id']}: {data['span_count']} spans, {data['duration_ms']:.1f} ms, "
        f"{data['errors']} errors, services {', '.join(data['services'])}",
        title_justify="left",
    )
    table.add_column("span (attributes)", ratio=1)
    table.add_column("ms", justify="right")
    table.add_column("waterfall", no_wrap=True, width=width)
    for span in data["spans"]:
        begin = min(int(span["offset_ms"] / total_ms * width), width - 1)
        length = min(max(1, round(span["duration_ms"] / total_ms * width)), width - begin)
        error = span["status"] == "ERROR"
        bar = Text(" " * begin) + Text("█" * length, style="red" if error else "cyan")
        indent = "  " * span["depth"]
        attributes = [
            f"{label}={span['attributes'][key]}"
            for label, key in SHOWN_ATTRIBUTES.items()
            if span["attributes"].get(key) is not None
        ]
        if BATCH_SIZE_ATTRIBUTE in span["attributes"]:
            attributes.append(f"members={span['attributes'][BATCH_SIZE_ATTRIBUTE]}")
        else:
            attributes += [f"batch={link['trace_id'][:12]}…" for link in span["links"][:1]]
        cell = Text(indent) + Text(span["name"], style="bold red" if error else "bold")
        cell += Text(f" [{span['service'].removeprefix('llmops-')}]", style="dim")
        if attributes:
            cell += Text("\n" + indent + "  " + " ".join(attributes), style="dim")
        if error and span["status_message"]:
            cell += Text("\n" + indent + "  " + span["status_message"], style="red")
        table.add_row(cell, f"{span['duration_ms']:.1f}", bar)
    console.print(table)


async def read_spans(settings: Settings) -> list[SpanRecord]:
    """Every span currently on ``telemetry.spans`` of the settings' namespace."""
    from streams.kafka.admin import read_topic

    spans: list[SpanRecord] = []
    async for message in read_topic(settings, Topics(settings.namespace).telemetry_spans):
        if message.value:
            spans.extend(decode_spans(message.value))
    return spans


def load_trace(
    settings: Settings, *, trace_id: str | None = None, doc_id: str | None = None, request_id: str | None = None
) -> dict[str, Any] | None:
    """One trace from ``telemetry.spans`` as :func:`trace_as_dict` (see :func:`find_trace_id`), or None.

    ``load_trace(settings, request_id=...)`` is what the demo shows for an inference request.
    """
    spans = asyncio.run(read_spans(settings))
    found = find_trace_id(spans, trace_id=trace_id, doc_id=doc_id, request_id=request_id)
    return trace_as_dict(trace_spans(spans, found)) if found else None
