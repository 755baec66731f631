"""The standard OTEL_* variables, tested as an operator uses them: a worker process and a real OTLP receiver.

Each test runs ``llmops worker`` as a subprocess with one combination of variables, publishes
documents on the real broker, waits until the worker committed them, stops it (which flushes
every exporter) and then looks at what the OTLP receiver (tests/otlp_receiver.py: the OTLP
TraceService over gRPC and OTLP/HTTP protobuf) and ``telemetry.spans`` received. The tests that
expect no spans at the receiver also prove the documents were handled, so they can fail.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from streams.ingest.publish import publish_records
from streams.kafka.admin import ensure_topics, offsets, read_topic
from streams.kafka.progress import wait_for_stages
from streams.kafka.topics import Topics
from streams.settings import Settings
from streams.telemetry import genai
from tests.otlp_receiver import OtlpReceiver, attributes

from .conftest import WorkerProcess, run, run_cli

OTEL_NAMES = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
)
TEXT = " ".join(f"Sentence {i} says how spans of a document reach an OTLP receiver." for i in range(12))


class OtelWorker(WorkerProcess):
    """A worker whose environment holds exactly the given OTEL_* variables (and none inherited)."""

    def __init__(self, settings: Settings, otel: dict[str, str], agents: str = "ingest") -> None:
        super().__init__(settings, agents)
        self.otel = otel

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in super().env().items() if k not in OTEL_NAMES}
        return {**env, **self.otel}


@pytest.fixture
def receiver() -> Any:
    with OtlpReceiver() as otlp:
        yield otlp


def handle_documents(settings: Settings, otel: dict[str, str], agents: str = "ingest", docs: int = 2) -> OtelWorker:
    """Run a worker with ``otel`` until it committed ``docs`` documents, then stop it (flushing spans)."""
    worker = OtelWorker(settings, otel, agents).start()
    try:
        run(ensure_topics(settings))
        records = [(f"d{n}".encode(), json.dumps({"id": f"d{n}", "text": TEXT}).encode()) for n in range(docs)]
        run(publish_records(settings, records))
        _, raw_end = run(offsets(settings, [Topics(settings.namespace).docs_raw]))
        ok, _ = wait_for_stages(settings, [agents.split(",")], raw_end, 240.0, alive=worker.alive)
        assert ok, f"the worker did not handle the documents; log:\n{worker.log_tail()}"
    finally:
        assert worker.stop() == 0, worker.log_tail()
    return worker


def kafka_spans(settings: Settings) -> list[Any]:
    """Every span on telemetry.spans (the project's own export, beside the OTEL_* exporters)."""
    spans = []

    async def read() -> None:
        async for message in read_topic(settings, Topics(settings.namespace).telemetry_spans):
            request = ExportTraceServiceRequest.FromString(message.value)
            spans.extend(s for r in request.resource_spans for scope in r.scope_spans for s in scope.spans)

    run(read())
    return spans


def doc_spans(received: list[tuple[Any, dict[str, Any], Any]]) -> dict[str, Any]:
    """The consumer span of each document, by document id."""
    found = {}
    for _, _, span in received:
        doc = attributes(span.attributes).get("llmops.doc_id")
        if span.name.startswith("ingest ") and doc:
            found[doc] = span
    return found


def test_grpc_export_carries_the_service_name_resource_attributes_headers_and_genai_attributes(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    worker = handle_documents(
        settings,
        {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20s3cr3t-t0ken,x-tenant=acme",
            "OTEL_SERVICE_NAME": "acme-rag",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=staging,service.version=1.2.3",
        },
        agents="ingest,embed",
    )
    received = receiver.spans()
    assert received, f"no span reached the gRPC receiver; worker log:\n{worker.log_tail()}"
    assert {item.protocol for item, _, _ in received} == {"grpc"}
    assert {item.headers.get("authorization") for item, _, _ in received} == {"Bearer s3cr3t-t0ken"}
    assert {item.headers.get("x-tenant") for item, _, _ in received} == {"acme"}
    resources = [resource for _, resource, _ in received]
    assert {r["service.name"] for r in resources} == {"acme-rag"}, "OTEL_SERVICE_NAME exactly, no suffix"
    assert {(r["deployment.environment"], r["service.version"], r["llmops.role"]) for r in resources} == {
        ("staging", "1.2.3", "worker")
    }
    assert {r["llmops.agent"] for r in resources} == {"ingest", "embed"}
    assert set(doc_spans(received)) == {"d0", "d1"}

    embeds = [attributes(span.attributes) for _, _, span in received if span.name == "onnx.embed"]
    assert embeds, "the embed agent's model call reached the receiver"
    for model_call in embeds:
        assert model_call[genai.OPERATION_NAME] == "embeddings"
        assert model_call[genai.PROVIDER_NAME] == model_call[genai.SYSTEM] == "onnxruntime"
        assert model_call[genai.REQUEST_MODEL] == "all-MiniLM-L6-v2"
        assert model_call[genai.RESPONSE_MODEL].startswith("all-MiniLM-L6-v2@")
        assert model_call[genai.USAGE_INPUT_TOKENS] > model_call["llmops.chunks"], "tokens counted per chunk"

    # The project's own export to telemetry.spans runs beside OTLP; the auth header is in no log line.
    assert len(kafka_spans(settings)) == len(received)
    assert "s3cr3t-t0ken" not in worker.log.read_text(errors="replace")


def test_http_protobuf_export_follows_the_traces_specific_variables(settings: Settings, receiver: OtlpReceiver) -> None:
    worker = handle_documents(
        settings,
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",  # the traces variables below win over the general ones
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{receiver.http_endpoint}/v1/traces",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-api-key=k3y-for-traces",
        },
    )
    received = receiver.spans()
    assert received, f"no span reached the HTTP receiver; worker log:\n{worker.log_tail()}"
    assert {item.protocol for item, _, _ in received} == {"http/protobuf"}
    assert {item.headers.get("x-api-key") for item, _, _ in received} == {"k3y-for-traces"}
    assert {resource["service.name"] for _, resource, _ in received} == {"llmops-ingest"}, "the default name"
    assert set(doc_spans(received)) == {"d0", "d1"}


def test_a_base_http_endpoint_gets_the_signal_path_and_console_prints_the_same_spans(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    worker = handle_documents(
        settings,
        {
            "OTEL_TRACES_EXPORTER": "console,otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint,  # the exporter adds /v1/traces
        },
    )
    received = receiver.spans()
    assert set(doc_spans(received)) == {"d0", "d1"}
    # ConsoleSpanExporter writes each span as a JSON object to stdout (the worker log here).
    output = worker.log.read_text(errors="replace")
    printed = {span.span_id.hex() for _, _, span in received}
    assert all(f'"span_id": "0x{span_id}"' in output for span_id in printed)


@pytest.mark.parametrize(
    ("otel", "on_kafka"),
    [
        pytest.param({"OTEL_TRACES_SAMPLER": "always_off"}, False, id="sampler-always_off"),
        pytest.param(
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}, False, id="sampler-ratio-0"
        ),
        pytest.param({"OTEL_SDK_DISABLED": "true"}, False, id="sdk-disabled"),
        pytest.param({"OTEL_TRACES_EXPORTER": "none"}, True, id="exporter-none"),
    ],
)
def test_no_span_reaches_the_receiver_when_the_variables_say_so(
    settings: Settings, receiver: OtlpReceiver, otel: dict[str, str], on_kafka: bool
) -> None:
    worker = handle_documents(
        settings,
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint, **otel},
    )
    assert receiver.received == [], "the documents were handled (the worker committed them) but sent no span"
    spans = kafka_spans(settings)
    if on_kafka:  # OTEL_TRACES_EXPORTER is about the SDK's exporters; telemetry.spans keeps its spans
        assert {attributes(s.attributes).get("llmops.doc_id") for s in spans} >= {"d0", "d1"}
    else:
        assert spans == [], worker.log_tail()


def test_a_command_runs_with_grpc_configured_and_reads_the_trace_back(
    settings: Settings, receiver: OtlpReceiver
) -> None:
    otel = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint}
    handle_documents(settings, otel, docs=1)
    shown = run_cli(settings, "trace", "--doc", "d0", "--json", timeout=120, env=otel)
    assert shown.returncode == 0, shown.stderr
    trace = json.loads(shown.stdout)
    assert "llmops-ingest" in trace["services"]
    received = doc_spans(receiver.spans())["d0"]
    assert received.trace_id.hex() == trace["trace_id"], "telemetry.spans and the gRPC receiver hold one trace"
