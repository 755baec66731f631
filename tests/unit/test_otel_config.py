"""The standard OTEL_* variables pick exporters and switch the SDK off; model calls carry GenAI attributes.

The exporters here are the SDK's real classes, loaded by its own configuration code; what they
send is tested against a real OTLP receiver in tests/integration/test_otlp_export.py.
"""

import asyncio
import contextvars
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError

from streams.settings import Settings, describe_settings_error
from streams.telemetry import genai
from streams.telemetry.span_export import DroppingSpanProcessor, standard_exporters
from streams.telemetry.tracing import Delivery, Telemetry, model_call, record_usage

OTEL_VARIABLES = (
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SDK_DISABLED",
)


@pytest.fixture(autouse=True)
def clean_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def exporter_types(settings: Settings) -> list[type]:
    exporters = standard_exporters(settings)
    try:
        return [type(exporter) for exporter in exporters]
    finally:
        for exporter in exporters:
            exporter.shutdown()


def test_without_otel_traces_exporter_otlp_runs_only_when_an_endpoint_is_set() -> None:
    assert Settings().trace_exporters == []
    assert Settings(otlp_endpoint="http://127.0.0.1:9").trace_exporters == ["otlp"]
    assert exporter_types(Settings(otlp_endpoint="http://127.0.0.1:9")) == [HttpExporter]


def test_otel_traces_exporter_names_the_sdk_exporters_and_otlp_follows_the_protocol(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp, console")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert exporter_types(Settings()) == [GrpcExporter, ConsoleSpanExporter]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")  # the traces variable wins
    assert exporter_types(Settings()) == [HttpExporter, ConsoleSpanExporter]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    assert exporter_types(Settings()) == [], "none means none, even with an endpoint"


def test_an_unknown_exporter_is_refused_by_the_variable_name_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp,s3cr3t-token")
    with pytest.raises(ValidationError) as error:
        Settings()
    described = describe_settings_error(error.value)
    assert "OTEL_TRACES_EXPORTER" in described and "s3cr3t" not in described


def test_otel_sdk_disabled_records_nothing_but_passes_the_upstream_context_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    telemetry = Telemetry.from_settings(Settings())
    assert not telemetry.enabled and telemetry.processors == []
    traceparent = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    tracer = telemetry.agent_tracer("ingest", group="g")
    with tracer.batch([Delivery("docs.raw", 0, 0, [("traceparent", traceparent)])]) as batch:
        assert batch.inject(0, []) == [("traceparent", traceparent)]


def test_a_command_exports_only_to_the_otel_exporters_and_records_nothing_without_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not Telemetry.from_settings(Settings(), role="cli").enabled  # a client may not write telemetry.spans
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    command = Telemetry.from_settings(Settings(), role="cli")
    worker = Telemetry.from_settings(Settings())
    try:
        processors = [p for p in command.processors if isinstance(p, DroppingSpanProcessor)]
        assert command.enabled and [type(p.exporter) for p in processors] == [ConsoleSpanExporter]
        assert len(worker.processors) == 2, "the worker: telemetry.spans and the console"
    finally:
        command.shutdown()
        worker.shutdown()


@pytest.mark.parametrize(
    ("value", "disabled"), [("true", True), ("TRUE ", True), ("false", False), ("", False), ("1", False)]
)
def test_otel_sdk_disabled_is_read_as_the_spec_says(
    monkeypatch: pytest.MonkeyPatch, value: str, disabled: bool
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", value)
    assert Settings().otel_sdk_disabled is disabled


def test_blank_otel_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        monkeypatch.setenv(name, "")
    settings = Settings()
    assert (settings.otel_traces_exporter, settings.traces_protocol, settings.trace_exporters) == (
        None,
        "http/protobuf",
        [],
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")  # a blank traces variable leaves the general one
    assert Settings().traces_protocol == "grpc"


def recording() -> tuple[InMemorySpanExporter, Telemetry]:
    exporter = InMemorySpanExporter()
    return exporter, Telemetry([SimpleSpanProcessor(exporter)])


def test_model_calls_carry_genai_attributes_and_token_counts_even_from_a_worker_thread() -> None:
    exporter, telemetry = recording()
    tracer = telemetry.agent_tracer("infer", group="g")

    def embed_in_model() -> None:  # what OnnxEmbedder.embed does, in the infer agent's thread
        with model_call(genai.EMBEDDINGS, "all-MiniLM-L6-v2", response_model="all-MiniLM-L6-v2@abc"):
            record_usage(genai.EMBEDDINGS, input_tokens=7)
        with model_call(genai.CLASSIFY, "topics", response_model="topics@v1", stage="production"):
            record_usage(genai.EMBEDDINGS, input_tokens=99)  # an explanation's embedding runs: not this span's

    async def handle() -> None:
        with tracer.record(Delivery("inference.requests", 0, 1, [])) as request, request.step("infer.answer"):
            in_context = contextvars.copy_context().run
            with ThreadPoolExecutor(1) as threads:
                await asyncio.get_running_loop().run_in_executor(threads, in_context, embed_in_model)

    asyncio.run(handle())
    spans = {span.name: span for span in exporter.get_finished_spans()}
    embed, classify = spans["embeddings all-MiniLM-L6-v2"], spans["classify topics"]
    assert dict(embed.attributes or {}) == {
        genai.OPERATION_NAME: "embeddings",
        genai.PROVIDER_NAME: "onnxruntime",
        genai.SYSTEM: "onnxruntime",
        genai.REQUEST_MODEL: "all-MiniLM-L6-v2",
        genai.RESPONSE_MODEL: "all-MiniLM-L6-v2@abc",
        genai.USAGE_INPUT_TOKENS: 7,
    }
    assert embed.parent is not None and embed.parent.span_id == spans["infer.answer"].context.span_id
    assert genai.USAGE_INPUT_TOKENS not in (classify.attributes or {})
    assert (classify.attributes or {})["llmops.stage"] == "production"


def test_a_model_call_outside_an_agent_records_nothing() -> None:
    exporter, _ = recording()
    with model_call(genai.CHAT, "m") as span:
        record_usage(genai.CHAT, input_tokens=1)
    assert not span.is_recording() and exporter.get_finished_spans() == ()


def test_a_step_that_is_a_model_call_takes_the_token_counts() -> None:
    exporter, telemetry = recording()
    tracer = telemetry.agent_tracer("embed", group="g")
    model = genai.model_attributes(genai.EMBEDDINGS, "minilm")
    with tracer.batch([Delivery("docs.clean", 0, 0, [])]) as batch, batch.step("onnx.embed", chunks=1, **model):
        record_usage(genai.EMBEDDINGS, input_tokens=12)
    (step,) = [span for span in exporter.get_finished_spans() if span.name == "onnx.embed"]
    assert (step.attributes or {})[genai.USAGE_INPUT_TOKENS] == 12
    assert (step.attributes or {})[genai.OPERATION_NAME] == "embeddings"


def test_usage_of_an_openai_chat_completion() -> None:
    from streams.inference.generator import usage_of

    answer = {
        "model": "qwen2.5-0.5b-instruct-q4",
        "choices": [{"message": {"content": "x"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129},
    }
    assert genai.usage_attributes(**usage_of(answer)) == {
        genai.USAGE_INPUT_TOKENS: 120,
        genai.USAGE_OUTPUT_TOKENS: 9,
        genai.RESPONSE_MODEL: "qwen2.5-0.5b-instruct-q4",
        genai.RESPONSE_FINISH_REASONS: ["stop"],
    }
    assert genai.usage_attributes(**usage_of({"choices": [{"message": {"content": "x"}}]})) == {}
