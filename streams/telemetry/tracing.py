"""Tracing: one OpenTelemetry trace per document and per request, across every Kafka hop.

Why this exists:
    SREs follow one document from ``docs.raw`` to Milvus as one trace. W3C trace context
    (``traceparent``, ``tracestate``) travels in Kafka record headers: each agent extracts it
    from the records it consumes, opens a consumer span per record as its child, and injects that
    span's context into every record it produces. Agents consume in micro-batches, so each batch
    also gets one span of its own that links to every member span (and each member links back):
    the batch's work (one ONNX run, one Milvus write) is visible without breaking any document's
    trace. A record without ``traceparent`` starts a new trace.

Usage:
    >>> telemetry = Telemetry.from_settings(settings)       # once per process (exporters)
    >>> tracer = telemetry.agent_tracer("embed", group="llmops-live-embed_index_ingest")
    >>> with tracer.batch([delivery_1, delivery_2]) as batch:
    ...     with batch.step("onnx.embed"):
    ...         vectors = embed(...)
    ...     headers = batch.inject(0, [("llmops.source", b"docs.clean:0:42")])
    >>> telemetry.shutdown()                                  # flushes what is queued

Notes:
    Each agent is its own service (``llmops-ingest``, ``llmops-embed``...) unless
    ``OTEL_SERVICE_NAME`` (or ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``) names one: then
    every span carries exactly that name, and the resource attributes ``llmops.agent`` and
    ``llmops.role`` (``worker``) say which part of the process made it. ``OTEL_RESOURCE_ATTRIBUTES``
    wins over our own resource attributes; ``OTEL_TRACES_SAMPLER(_ARG)`` are read by the SDK's
    tracer provider. ``LLMOPS_TRACING=off`` and ``OTEL_SDK_DISABLED=true`` record nothing, but
    headers still pass an upstream context through, so a trace resumes past a stage that does not trace.
    :func:`model_call` opens a span around a model call with the GenAI attributes
    (:mod:`streams.telemetry.genai`); :func:`record_usage` adds token counts to it from inside the model.
    Span attributes follow the messaging semantic conventions (``messaging.system=kafka``,
    destination, partition, offset, consumer group) plus ``llmops.doc_id``, ``llmops.chunk_id``
    and ``llmops.request_id``, which ``llmops trace --doc/--request`` look up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from streams.settings import Settings
from streams.telemetry import genai

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_HEADERS = (TRACEPARENT, TRACESTATE)
DOC_ID = "llmops.doc_id"
CHUNK_ID = "llmops.chunk_id"
REQUEST_ID = "llmops.request_id"
# A batch of 256 members links to each of them; the SDK's default keeps only 128 links.
MAX_LINKS = 4096
_PROPAGATOR = TraceContextTextMapPropagator()
# The tracer of the agent whose record or batch is being handled (model calls deep in the service
# code open their spans with it), and the model-call span that token counts belong to.
_TRACER: ContextVar[trace.Tracer | None] = ContextVar("llmops_tracer", default=None)
_MODEL_CALL: ContextVar[tuple[Span, str] | None] = ContextVar("llmops_model_call", default=None)


@dataclass(frozen=True)
class Delivery:
    """One consumed Kafka record as tracing sees it: where it was read and its headers."""

    topic: str
    partition: int
    offset: int
    headers: Any  # aiokafka's sequence of (str, bytes) pairs, or a mapping (Faust's test context)
    key: bytes | None = None


def header_items(headers: Any) -> list[tuple[str, bytes]]:
    """Kafka headers as (name, bytes) pairs, whatever container the client handed over."""
    if not headers:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in items]


def extract_context(headers: Any) -> Context:
    """The trace context carried by Kafka headers (empty, so a new trace, when there is none)."""
    carrier = {k: v.decode("ascii", "replace") for k, v in header_items(headers) if k in TRACE_HEADERS}
    return _PROPAGATOR.extract(carrier) if carrier else Context()


def trace_headers(span: Span) -> list[tuple[str, bytes]]:
    """``traceparent`` (and ``tracestate``) for records produced under ``span``; none if invalid."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return [(k, carrier[k].encode()) for k in TRACE_HEADERS if k in carrier]


def service_name(agent: str) -> str:
    """``OTEL_SERVICE_NAME`` (or ``service.name`` of ``OTEL_RESOURCE_ATTRIBUTES``) as given, else ``llmops-<agent>``."""
    return str(OTELResourceDetector().detect().attributes.get("service.name") or f"llmops-{agent}")


def agent_resource(service: str, **attributes: Any) -> Resource:
    """The SDK's resource (``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SERVICE_NAME``) over our defaults.

    ``Resource.create`` lets explicit attributes win over the environment; merging the
    environment's resource on top again lets an operator's ``OTEL_RESOURCE_ATTRIBUTES`` win.
    """
    ours = Resource.create({**attributes, "service.name": service})
    return ours.merge(OTELResourceDetector().detect())


@contextlib.contextmanager
def model_call(
    operation: str,
    model: str,
    *,
    provider: str = genai.LOCAL_PROVIDER,
    response_model: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    **attributes: Any,
) -> Iterator[Span]:
    """A span ``<operation> <model>`` with the GenAI attributes, child of the current span.

    It is recorded while an agent handles a record or a batch (and tracing is on); elsewhere it
    yields a span that records nothing. ``attributes`` are named as in :meth:`BatchTrace.step`.
    """
    tracer = _TRACER.get()
    if tracer is None:
        yield trace.INVALID_SPAN
        return
    common = genai.model_attributes(operation, model, provider=provider, response_model=response_model)
    with tracer.start_as_current_span(
        f"{operation} {model}", kind=kind, attributes={**common, **_clean(attributes)}
    ) as span:
        token = _MODEL_CALL.set((span, operation))
        try:
            yield span
        finally:
            _MODEL_CALL.reset(token)


def record_usage(operation: str, **usage: Any) -> None:
    """Token counts (``input_tokens``, ``output_tokens``...) on the current ``operation`` model-call span.

    Called from inside a model, which does not know who called it: an embedding run inside a
    ``classify`` span (an explanation) leaves that span's counts alone.
    """
    current = _MODEL_CALL.get()
    if current is not None and current[1] == operation and current[0].is_recording():
        current[0].set_attributes(genai.usage_attributes(**usage))


class AgentTracer:
    """The spans of one agent: a consumer span per record and a linked span per batch."""

    def __init__(self, tracer: trace.Tracer | None, stage: str, group: str) -> None:
        """``tracer`` None means tracing is off: headers pass through, nothing is recorded."""
        self.tracer = tracer
        self.stage = stage
        self.group = group

    def batch(self, deliveries: Sequence[Delivery]) -> BatchTrace:
        """Spans for one micro-batch; use as a context manager (ends every span on exit)."""
        return BatchTrace(self, deliveries)

    def record(self, delivery: Delivery) -> BatchTrace:
        """Spans for one record handled on its own (a request): its consumer span is the only root.

        No batch span and no links: ``step`` spans are children of the record's span, so the
        record's trace holds all of its work, and a request pays for two spans instead of three.
        """
        return BatchTrace(self, [delivery], alone=True)

    @contextlib.contextmanager
    def send(self, topic: str, **attributes: Any) -> Iterator[list[tuple[str, bytes]]]:
        """A PRODUCER span around sending one record (a client's request); yields its trace headers.

        A request sent inside it starts (or continues, if a span is current) the trace that the
        serving agent's consumer span and the response continue: one trace from request to answer.
        """
        if self.tracer is None:
            yield trace_headers(trace.get_current_span())
            return
        common = {"messaging.system": "kafka", "messaging.operation.type": "send", "messaging.destination.name": topic}
        with self.tracer.start_as_current_span(
            f"{self.stage} {topic}", kind=SpanKind.PRODUCER, attributes={**common, **_clean(attributes)}
        ) as span:
            yield trace_headers(span)


class BatchTrace:
    """One batch span linked to a consumer span per member; members continue their traces."""

    def __init__(self, owner: AgentTracer, deliveries: Sequence[Delivery], alone: bool = False) -> None:
        """``alone``: one record handled on its own; its consumer span also parents the steps."""
        self._owner = owner
        self.deliveries = list(deliveries)
        self._headers: dict[int, list[tuple[str, bytes]]] = {}
        self._alone = alone
        tracer = owner.tracer
        if tracer is None:
            # Tracing off: the "member span" is the upstream context itself, so outputs carry it on.
            self.batch_span: Span = trace.INVALID_SPAN
            self.members = [trace.get_current_span(extract_context(d.headers)) for d in self.deliveries]
            return
        destination = self.deliveries[0].topic if self.deliveries else ""
        common = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": destination,
            "messaging.kafka.consumer.group": owner.group,
        }
        if alone:
            self.members = [self._start_member(tracer, self.deliveries[0], common, ())]
            self.batch_span = self.members[0]
            return
        self.batch_span = tracer.start_span(
            f"{owner.stage} batch",
            context=Context(),  # its own trace: many documents' traces meet here
            kind=SpanKind.CONSUMER,
            attributes={**common, "messaging.batch.message_count": len(self.deliveries)},
        )
        batch_link = [Link(self.batch_span.get_span_context())]
        self.members = []
        for delivery in self.deliveries:
            member = self._start_member(tracer, delivery, common, batch_link)
            self.batch_span.add_link(member.get_span_context())
            self.members.append(member)

    def _start_member(
        self, tracer: trace.Tracer, delivery: Delivery, common: dict[str, Any], links: Sequence[Link]
    ) -> Span:
        """The consumer span of one record, child of the context its headers carry."""
        attributes: dict[str, Any] = {
            **common,
            "messaging.destination.name": delivery.topic,
            "messaging.kafka.destination.partition": delivery.partition,
            "messaging.kafka.message.offset": delivery.offset,
        }
        if delivery.key is not None:
            attributes["messaging.kafka.message.key"] = delivery.key.decode("utf-8", "replace")
        return tracer.start_span(
            f"{self._owner.stage} {delivery.topic}",
            context=extract_context(delivery.headers),
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )

    def __enter__(self) -> BatchTrace:
        self._tracer_token = _TRACER.set(self._owner.tracer)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        _TRACER.reset(self._tracer_token)
        self.end(error)

    def end(self, error: BaseException | None = None) -> None:
        """End the member spans, then the batch span (ERROR status if ``error``)."""
        if self._owner.tracer is None:
            return
        if error is not None:
            self.batch_span.record_exception(error)
            self.batch_span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        for member in self.members:
            if error is not None:
                member.set_status(Status(StatusCode.ERROR, type(error).__name__))
            member.end()
        if not self._alone:
            self.batch_span.end()

    @contextlib.contextmanager
    def step(self, name: str, **attributes: Any) -> Iterator[Span]:
        """A child span of the batch span (the record's span when alone) around one piece of work.

        A step whose attributes name a ``gen_ai.operation.name`` is a model call: token counts
        recorded inside it (:func:`record_usage`) land on it.
        """
        if self._owner.tracer is None:
            yield trace.INVALID_SPAN
            return
        with self._owner.tracer.start_as_current_span(
            name, context=trace.set_span_in_context(self.batch_span), attributes=_clean(attributes)
        ) as span:
            operation = attributes.get(genai.OPERATION_NAME)
            token = _MODEL_CALL.set((span, operation)) if operation else None
            try:
                yield span
            finally:
                if token is not None:
                    _MODEL_CALL.reset(token)

    @contextlib.contextmanager
    def current(self, index: int) -> Iterator[Span]:
        """Make member ``index`` the current span, so that log lines carry its ids."""
        with trace.use_span(self.members[index], end_on_exit=False) as span:
            yield span

    def annotate(self, index: int, **attributes: Any) -> None:
        """Set attributes (``doc_id=...`` becomes ``llmops.doc_id``) on member ``index``."""
        span = self.members[index]
        if span.is_recording():
            span.set_attributes(_clean(attributes))

    def fail(self, index: int, reason: str, detail: str = "") -> None:
        """Mark member ``index`` as rejected (dead-lettered) with its reason code."""
        span = self.members[index]
        if span.is_recording():
            span.set_attribute("llmops.dead_letter.reason", reason)
            span.set_status(Status(StatusCode.ERROR, f"{reason}: {detail}"[:200]))

    def inject(self, index: int, headers: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """Headers for a record produced for member ``index``: its trace continues there."""
        context = self._headers.get(index)
        if context is None:
            context = self._headers[index] = trace_headers(self.members[index])
        return [*(h for h in headers if h[0] not in TRACE_HEADERS), *context]

    def traceparent(self, index: int) -> str | None:
        """The ``traceparent`` of member ``index`` (for records that also carry it in their value)."""
        for name, value in self.inject(index, []):
            if name == TRACEPARENT:
                return value.decode()
        return None


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword names to span attributes: ``doc_id`` -> ``llmops.doc_id``; None values dropped."""
    return {(k if "." in k else f"llmops.{k}"): v for k, v in attributes.items() if v is not None}


class Telemetry:
    """The span pipeline of one process: exporters shared by one tracer provider per agent."""

    def __init__(self, processors: Sequence[SpanProcessor], enabled: bool = True, role: str = "worker") -> None:
        """``role`` (``worker``, ``cli``) goes into the resource attribute ``llmops.role``."""
        self.processors = list(processors)
        self.enabled = enabled
        self.role = role
        self._providers: list[TracerProvider] = []

    @classmethod
    def from_settings(cls, settings: Settings, role: str = "worker") -> Telemetry:
        """Kafka export to ``telemetry.spans``, plus the exporters ``OTEL_TRACES_EXPORTER`` names.

        A command (``role`` other than ``worker``) exports only to the latter: a client's
        principal may not write ``telemetry.spans`` (docs/security.md), and with none of them
        configured it records nothing, as before.
        """
        if not settings.tracing or settings.otel_sdk_disabled:
            return cls([], enabled=False, role=role)
        from streams.telemetry.span_export import exporters_from_settings

        processors = exporters_from_settings(settings, to_topic=role == "worker")
        return cls(processors, enabled=bool(processors), role=role)

    def provider(self, service: str, **resource: Any) -> TracerProvider:
        """A tracer provider for ``service`` (the SDK reads OTEL_TRACES_SAMPLER and _ARG)."""
        provider = TracerProvider(
            resource=agent_resource(service, **{**resource, "llmops.role": self.role}),
            span_limits=SpanLimits(max_links=MAX_LINKS),
            shutdown_on_exit=False,  # Telemetry.shutdown flushes the shared processors once
        )
        for processor in self.processors:
            provider.add_span_processor(processor)
        self._providers.append(provider)
        return provider

    def agent_tracer(self, agent: str, group: str, namespace: str = "") -> AgentTracer:
        """The tracer of one agent, its own service (``llmops-<agent>``)."""
        if not self.enabled:
            return AgentTracer(None, agent, group)
        provider = self.provider(service_name(agent), **{"llmops.agent": agent, "llmops.namespace": namespace})
        return AgentTracer(provider.get_tracer("llmops-streams"), agent, group)

    def flush(self, timeout_millis: int = 10_000) -> bool:
        """Export everything queued so far."""
        return all(processor.force_flush(timeout_millis) for processor in self.processors)

    def shutdown(self) -> None:
        """Flush and stop the exporters (their producer and thread)."""
        for processor in self.processors:
            processor.shutdown()
        self.processors.clear()
