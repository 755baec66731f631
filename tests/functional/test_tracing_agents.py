"""Tracing through the ingest agent in Faust's test context, spans kept by ``InMemorySpanExporter``."""

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from structlog.testing import capture_logs

from streams.kafka.avro import AvroCodec, EmbeddedRegistry
from streams.logs import add_trace_ids
from streams.telemetry.tracing import Telemetry
from tests.functional.conftest import ingest_context, wait_for_outputs

CODEC = AvroCodec(EmbeddedRegistry.from_directory())
UPSTREAM_TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{UPSTREAM_TRACE}-b7ad6b7169203331-01"


async def test_outputs_continue_the_upstream_trace_and_logs_carry_span_ids(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    telemetry = Telemetry([SimpleSpanProcessor(exporter)])
    with capture_logs(processors=[add_trace_ids]) as logs:
        async with ingest_context(tmp_path, monkeypatch, telemetry) as (context, sent):
            await context.put(
                b'{"id": "d1", "text": "Hello traced world"}',
                key=b"d1",
                headers=[("traceparent", TRACEPARENT.encode())],
            )
            await context.put(b"not json", key=b"d2")  # no context: starts its own trace
            await wait_for_outputs(sent, 2)
    spans = exporter.get_finished_spans()
    members = {s.attributes["messaging.kafka.message.key"]: s for s in spans if s.name == "ingest functional.docs.raw"}
    good, bad = members["d1"], members["d2"]
    assert trace.format_trace_id(good.context.trace_id) == UPSTREAM_TRACE
    assert good.attributes["llmops.doc_id"] == "d1" and good.attributes["llmops.outcome"] == "indexed"
    clean = next(s for s in sent if s[0] == "functional.docs.clean")
    good_parent = f"00-{UPSTREAM_TRACE}-{trace.format_span_id(good.context.span_id)}-01"
    assert dict(clean[3])["traceparent"] == good_parent.encode()
    assert CODEC.decode(clean[2], "CleanChunk")["traceparent"] == good_parent
    letter = next(s for s in sent if s[0] == "functional.deadletter")
    assert dict(letter[3])["traceparent"].decode().split("-")[1] == trace.format_trace_id(bad.context.trace_id)
    assert bad.status.status_code == trace.StatusCode.ERROR
    assert bad.attributes["llmops.dead_letter.reason"] == "BAD_JSON"
    line = next(entry for entry in logs if entry["event"] == "dead_letter")
    assert (line["trace_id"], line["span_id"]) == (
        trace.format_trace_id(bad.context.trace_id),
        trace.format_span_id(bad.context.span_id),
    )
