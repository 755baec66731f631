"""Trace context through Kafka headers, batch spans with links, span export and log ids."""

import json
import logging
import threading

import pytest
import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError

from streams.logs import configure_logging, get_logger
from streams.settings import Settings
from streams.telemetry.span_export import DroppingSpanProcessor, OtlpProtoSpanExporter, encode_payloads
from streams.telemetry.traceview import decode_spans, find_trace_id, print_trace, trace_as_dict, trace_spans
from streams.telemetry.tracing import Delivery, Telemetry, extract_context, header_items, service_name

UPSTREAM_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
UPSTREAM_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{UPSTREAM_TRACE}-{UPSTREAM_SPAN}-01"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def telemetry_with(exporter: InMemorySpanExporter) -> Telemetry:
    return Telemetry([SimpleSpanProcessor(exporter)])


def test_context_is_read_from_aiokafka_tuples_and_from_mappings() -> None:
    for headers in ([("llmops.source", b"x:0:1"), ("traceparent", TRACEPARENT.encode())], {"traceparent": TRACEPARENT}):
        context = trace.get_current_span(extract_context(headers)).get_span_context()
        assert (trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)) == (
            UPSTREAM_TRACE,
            UPSTREAM_SPAN,
        )
    assert not trace.get_current_span(extract_context(None)).get_span_context().is_valid
    assert header_items({"a": "b"}) == [("a", b"b")]


def test_a_record_alone_is_one_span_whose_trace_holds_its_steps(spans: InMemorySpanExporter) -> None:
    tracer = telemetry_with(spans).agent_tracer("infer", group="g1")
    delivery = Delivery("inference.requests", 0, 7, [("traceparent", TRACEPARENT.encode())], b"client-1")
    with pytest.raises(RuntimeError), tracer.record(delivery) as request:
        with request.step("infer.answer", task="search"):
            pass
        headers = request.inject(0, [])
        raise RuntimeError("boom")
    (answer,) = [s for s in spans.get_finished_spans() if s.name == "infer.answer"]
    (consumer,) = [s for s in spans.get_finished_spans() if s.name == "infer inference.requests"]
    assert len(spans.get_finished_spans()) == 2 and not consumer.links
    assert trace.format_trace_id(consumer.context.trace_id) == UPSTREAM_TRACE
    assert answer.parent is not None and answer.parent.span_id == consumer.context.span_id
    assert consumer.status.status_code is trace.StatusCode.ERROR and consumer.events[0].name == "exception"
    assert dict(headers)["traceparent"].decode().split("-")[2] == trace.format_span_id(consumer.context.span_id)


def test_members_continue_their_traces_and_the_batch_links_them_all(spans: InMemorySpanExporter) -> None:
    tracer = telemetry_with(spans).agent_tracer("embed", group="g1")
    deliveries = [
        Delivery("docs.clean", 2, 41, [("traceparent", TRACEPARENT.encode()), ("tracestate", b"vendor=1")], b"d1"),
        Delivery("docs.clean", 2, 42, [], b"d2"),  # no context upstream: a new trace
    ]
    with tracer.batch(deliveries) as batch:
        with batch.step("onnx.embed", chunks=2):
            pass
        batch.annotate(0, doc_id="d1", chunk_id="d1#0")
        headers = batch.inject(0, [("llmops.source", b"docs.clean:2:41"), ("traceparent", b"stale")])
        fresh = batch.inject(1, [])
    finished = {s.name: s for s in spans.get_finished_spans() if s.name != "embed docs.clean"}
    members = [s for s in spans.get_finished_spans() if s.name == "embed docs.clean"]
    first, second = sorted(members, key=lambda s: s.attributes["messaging.kafka.message.offset"])
    assert trace.format_trace_id(first.context.trace_id) == UPSTREAM_TRACE
    assert trace.format_span_id(first.parent.span_id) == UPSTREAM_SPAN
    assert first.kind == trace.SpanKind.CONSUMER
    assert first.resource.attributes["service.name"] == "llmops-embed"
    assert {
        k: first.attributes[k]
        for k in (
            "messaging.system",
            "messaging.destination.name",
            "messaging.kafka.destination.partition",
            "messaging.kafka.consumer.group",
            "llmops.doc_id",
        )
    } == {
        "messaging.system": "kafka",
        "messaging.destination.name": "docs.clean",
        "messaging.kafka.destination.partition": 2,
        "messaging.kafka.consumer.group": "g1",
        "llmops.doc_id": "d1",
    }
    assert second.parent is None and second.context.trace_id != first.context.trace_id
    batch_span = finished["embed batch"]
    assert batch_span.context.trace_id not in (first.context.trace_id, second.context.trace_id)
    assert [link.context.span_id for link in batch_span.links] == [first.context.span_id, second.context.span_id]
    assert all(m.links[0].context.span_id == batch_span.context.span_id for m in members)
    assert finished["onnx.embed"].parent.span_id == batch_span.context.span_id
    expected = f"00-{trace.format_trace_id(first.context.trace_id)}-{trace.format_span_id(first.context.span_id)}-01"
    assert headers == [
        ("llmops.source", b"docs.clean:2:41"),
        ("traceparent", expected.encode()),
        ("tracestate", b"vendor=1"),
    ]
    assert fresh[0][1].decode().split("-")[1] == trace.format_trace_id(second.context.trace_id)


def test_with_tracing_off_nothing_is_recorded_and_upstream_context_passes_through() -> None:
    tracer = Telemetry.from_settings(Settings(tracing=False)).agent_tracer("ingest", group="g")
    with tracer.batch([Delivery("docs.raw", 0, 0, [("traceparent", TRACEPARENT.encode())])]) as batch:
        with batch.step("ingest.pipeline") as step:
            assert not step.is_recording()
        assert batch.inject(0, []) == [("traceparent", TRACEPARENT.encode())]
        assert batch.traceparent(0) == TRACEPARENT


def test_a_failed_batch_marks_every_span_as_error(spans: InMemorySpanExporter) -> None:
    tracer = telemetry_with(spans).agent_tracer("index", group="g")
    with pytest.raises(RuntimeError), tracer.batch([Delivery("docs.embeddings", 0, 7, [])]) as batch:
        batch.fail(0, "FOREIGN_MODEL_VERSION", "another model")
        raise RuntimeError("milvus down")
    statuses = {s.name: (s.status.status_code, s.status.description) for s in spans.get_finished_spans()}
    assert statuses["index docs.embeddings"][0] == trace.StatusCode.ERROR
    assert statuses["index batch"] == (trace.StatusCode.ERROR, "RuntimeError")


def test_otel_service_name_is_used_exactly_and_the_agent_and_role_are_resource_attributes(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert service_name("ingest") == "llmops-ingest"  # the default: one service per agent
    monkeypatch.setenv("OTEL_SERVICE_NAME", "acme-rag")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging,llmops.role=batch-worker")
    assert service_name("ingest") == "acme-rag"
    tracer = telemetry_with(spans).agent_tracer("ingest", group="g", namespace="ns1")
    with tracer.batch([Delivery("ns1.docs.raw", 0, 0, [])]):
        pass
    resource = spans.get_finished_spans()[0].resource.attributes
    assert {key: resource[key] for key in ("service.name", "deployment.environment", "llmops.namespace")} == {
        "service.name": "acme-rag",
        "deployment.environment": "staging",
        "llmops.namespace": "ns1",
    }
    # The agent is said beside the name; the operator's resource attributes win over our defaults.
    assert (resource["llmops.agent"], resource["llmops.role"]) == ("ingest", "batch-worker")


def test_service_name_in_otel_resource_attributes_is_used_when_otel_service_name_is_not_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes")
    assert service_name("embed") == "from-attributes"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-name")  # the spec: OTEL_SERVICE_NAME wins
    assert service_name("embed") == "from-name"


def test_sampler_variables_are_honoured(spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    tracer = telemetry_with(spans).agent_tracer("ingest", group="g")
    with tracer.batch([Delivery("docs.raw", 0, 0, [])]):
        pass
    assert spans.get_finished_spans() == ()


def test_log_lines_inside_a_span_carry_its_ids(spans: InMemorySpanExporter, capsys: pytest.CaptureFixture[str]) -> None:
    tracer = telemetry_with(spans).agent_tracer("ingest", group="g")
    configure_logging(Settings(log_format="json"))
    try:
        delivery = Delivery("docs.raw", 0, 0, [("traceparent", TRACEPARENT.encode())])
        with tracer.batch([delivery]) as batch, batch.current(0):
            get_logger("test").warning("dead_letter", reason="BAD_JSON")
            logging.getLogger("faust").warning("a standard-library line inside the span")
        get_logger("test").info("outside any span")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    member = next(s for s in spans.get_finished_spans() if s.name == "ingest docs.raw")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    ids = (UPSTREAM_TRACE, trace.format_span_id(member.context.span_id))
    assert [(line.get("trace_id"), line.get("span_id")) for line in lines] == [ids, ids, (None, None)]


def test_spans_export_as_otlp_protobuf_and_split_to_fit_a_record(spans: InMemorySpanExporter) -> None:
    tracer = telemetry_with(spans).agent_tracer("ingest", group="g")
    with tracer.batch([Delivery("docs.raw", 0, n, []) for n in range(20)]) as batch:
        for n in range(20):
            batch.annotate(n, doc_id=f"doc-{n}")
    finished = spans.get_finished_spans()
    payloads: list[bytes] = []
    assert OtlpProtoSpanExporter(payloads.extend).export(finished) == SpanExportResult.SUCCESS
    request = ExportTraceServiceRequest.FromString(payloads[0])
    assert request.resource_spans[0].resource.attributes[0].key  # a real OTLP message
    assert len(decode_spans(payloads[0])) == 21
    parts = encode_payloads(finished, max_bytes=len(payloads[0]) // 3)
    assert len(parts) > 2
    assert sorted(s.span_id for p in parts for s in decode_spans(p)) == sorted(
        s.span_id for s in decode_spans(payloads[0])
    )


def test_a_failing_sink_counts_what_it_lost(spans: InMemorySpanExporter) -> None:
    def broken(_: list[bytes]) -> None:
        raise ConnectionError("broker down")

    tracer = telemetry_with(spans).agent_tracer("ingest", group="g")
    with tracer.batch([Delivery("docs.raw", 0, 0, [])]):
        pass
    exporter = OtlpProtoSpanExporter(broken)
    assert exporter.export(spans.get_finished_spans()) == SpanExportResult.FAILURE
    assert exporter.failed == 2


class _BlockedExporter(InMemorySpanExporter):
    """Holds the export thread until released, as a slow Kafka would."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def export(self, spans):  # type: ignore[no-untyped-def]
        self.release.wait(30)
        return super().export(spans)


def test_a_full_queue_drops_and_counts_spans_instead_of_blocking() -> None:
    exporter = _BlockedExporter()
    processor = DroppingSpanProcessor(exporter, max_queue_size=64, warn_every=3600, clock=lambda: 0.0)
    tracer = Telemetry([processor]).agent_tracer("embed", group="g")
    with tracer.batch([Delivery("docs.clean", 0, n, []) for n in range(73)]):
        pass  # 73 members + 1 batch span = 74 spans: 64 fit, 10 are dropped
    assert processor.dropped == 10
    exporter.release.set()
    processor.shutdown()
    assert len(exporter.get_finished_spans()) == 64


def test_a_trace_is_found_by_doc_id_and_printed_as_a_tree() -> None:
    exporter = InMemorySpanExporter()
    telemetry = telemetry_with(exporter)
    ingest = telemetry.agent_tracer("ingest", group="g")
    embed = telemetry.agent_tracer("embed", group="g")
    with ingest.batch([Delivery("docs.raw", 0, 0, [("traceparent", TRACEPARENT.encode())], b"d1")]) as first:
        first.annotate(0, doc_id="d1")
        headers = first.inject(0, [])
    with embed.batch([Delivery("docs.clean", 0, 0, headers), Delivery("docs.clean", 0, 1, headers)]) as second:
        second.annotate(0, doc_id="d1", chunk_id="d1#0")
        second.annotate(1, doc_id="d1", chunk_id="d1#1")
    payloads: list[bytes] = []
    OtlpProtoSpanExporter(payloads.extend).export(exporter.get_finished_spans())
    records = decode_spans(payloads[0])
    assert find_trace_id(records, doc_id="d1") == UPSTREAM_TRACE
    assert find_trace_id(records) == UPSTREAM_TRACE  # --last skips batch-only traces
    assert find_trace_id(records, trace_id=UPSTREAM_TRACE.upper()) == UPSTREAM_TRACE
    assert find_trace_id(records, request_id="r1") is None
    tree = trace_spans(records, UPSTREAM_TRACE)
    data = trace_as_dict(tree)
    assert [(s["name"], s["depth"]) for s in data["spans"]] == [
        ("ingest docs.raw", 0),
        ("embed docs.clean", 1),
        ("embed docs.clean", 1),
    ]
    assert data["services"] == ["llmops-embed", "llmops-ingest"]
    from rich.console import Console

    console = Console(record=True, width=200)
    print_trace(console, data)
    text = console.export_text()
    assert "embed docs.clean" in text and "chunk_id=d1#1" in text and "█" in text


def test_tracing_settings_come_from_llmops_and_standard_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_TRACING", "off")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    settings = Settings()
    assert not settings.tracing
    assert settings.otlp_traces_url == "http://collector:4318/v1/traces"
    env = settings.to_env()  # what a worker subprocess reads back
    assert (env["LLMOPS_TRACING"], env["OTEL_EXPORTER_OTLP_ENDPOINT"]) == ("false", "http://collector:4318/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/custom")
    assert Settings().otlp_traces_url == "http://traces:4318/custom"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert Settings().otlp_protocol == "grpc"
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    assert Settings().otlp_traces_url == "http://collector:4318/", "over gRPC the base endpoint is used as is"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")  # the signal's own variable wins
    assert Settings().otlp_traces_url == "http://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")  # refused at start, not ignored
    with pytest.raises(ValidationError, match=r"OTLP_TRACES_PROTOCOL\n  Input should be 'grpc' or 'http/protobuf'"):
        Settings()


def test_otlp_export_is_added_only_when_an_endpoint_is_set_and_nothing_connects_before_a_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streams.telemetry.span_export import exporters_from_settings

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    kafka_only = exporters_from_settings(Settings())
    with_otlp = exporters_from_settings(Settings(otlp_endpoint="http://127.0.0.1:9/"))
    assert (len(kafka_only), len(with_otlp)) == (1, 2)
    for processor in [*kafka_only, *with_otlp]:
        processor.shutdown()  # no span ended: the Kafka sink never started, nothing to flush


def test_a_request_and_its_response_are_one_trace(spans: InMemorySpanExporter) -> None:
    telemetry = telemetry_with(spans)
    client = telemetry.agent_tracer("query", group="")
    server = telemetry.agent_tracer("infer", group="g")
    with client.send("inference.requests", request_id="r-1") as request_headers:
        pass
    with server.batch([Delivery("inference.requests", 0, 5, request_headers, b"r-1")]) as batch:
        batch.annotate(0, request_id="r-1")
        response_headers = batch.inject(0, [])
    with client.batch([Delivery("inference.responses", 0, 9, response_headers, b"r-1")]) as received:
        received.annotate(0, request_id="r-1")
    by_name = {s.name: s for s in spans.get_finished_spans()}
    send = by_name["query inference.requests"]
    serve = by_name["infer inference.requests"]
    answer = by_name["query inference.responses"]
    assert send.kind == trace.SpanKind.PRODUCER and send.parent is None
    assert serve.parent.span_id == send.context.span_id and answer.parent.span_id == serve.context.span_id
    assert len({s.context.trace_id for s in (send, serve, answer)}) == 1
    assert all(s.attributes["llmops.request_id"] == "r-1" for s in (send, serve, answer))
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing left current


def test_with_tracing_off_a_client_passes_on_the_current_context() -> None:
    tracer = Telemetry([], enabled=False).agent_tracer("query", group="")
    context = extract_context([("traceparent", TRACEPARENT.encode())])
    token = otel_context.attach(context)
    try:
        with tracer.send("inference.requests") as headers:
            assert headers == [("traceparent", TRACEPARENT.encode())]
    finally:
        otel_context.detach(token)
