"""The generator client and the local server launcher without llama.cpp: event-stream lines, chunk folding,
token counts, streams over a small loopback HTTP server, and the launcher's errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from streams.inference.generator import (
    DONE,
    GeneratorClient,
    GeneratorError,
    StreamAccumulator,
    completion_result,
    parse_sse_line,
)
from streams.inference.local_model import (
    LOOPBACK,
    LocalGeneratorError,
    LocalServer,
    packaged_gguf,
    require_llama_server,
    server_command,
    stop_local_server,
    wait_until_ready,
)
from tests.unit.loopback_http import loopback_server


def chunk(content: str | None = None, finish: str | None = None, usage: dict[str, int] | None = None) -> dict:
    choice = {"index": 0, "delta": {} if content is None else {"content": content}, "finish_reason": finish}
    return {"object": "chat.completion.chunk", "choices": [choice], **({"usage": usage} if usage else {})}


def test_event_stream_lines_are_chunks_done_or_nothing() -> None:
    assert parse_sse_line('data: {"choices": []}') == {"choices": []}
    assert parse_sse_line('data:{"a": 1}') == {"a": 1}, "the space after the colon is optional"
    assert parse_sse_line("data: [DONE]") is DONE
    for ignored in ("", ": ping - 2026-12-07 16:00:00", "event: message", "id: 7", "retry: 100", "data: "):
        assert parse_sse_line(ignored) is None
    with pytest.raises(GeneratorError, match="not JSON"):
        parse_sse_line("data: {truncated")
    with pytest.raises(GeneratorError, match="not a JSON object"):
        parse_sse_line("data: [1, 2]")


def test_chunks_fold_into_deltas_then_a_result_with_timings() -> None:
    acc = StreamAccumulator(started=10.0)
    assert acc.add(chunk(), 10.1) == "", "the role-only first chunk carries no text"
    assert acc.add(chunk("The "), 10.5) == "The "
    assert acc.add(chunk("answer"), 10.7) == "answer"
    assert acc.add(chunk(" [1]."), 10.9) == " [1]."
    assert acc.add(chunk(finish="stop"), 11.0) == ""
    result = acc.result(11.0)
    assert result.text == "The answer [1]."
    assert (result.input_tokens, result.output_tokens, result.usage_reported) == (None, 3, False)
    assert result.time_to_first_token_ms == pytest.approx(500.0)
    assert result.duration_ms == pytest.approx(1000.0)
    assert result.tokens_per_s == pytest.approx(2 / 0.5), "tokens after the first over the time after the first"
    assert result.finish_reason == "stop"


def test_reported_usage_wins_over_counted_chunks() -> None:
    acc = StreamAccumulator(started=0.0)
    acc.add(chunk("two tokens"), 1.0)
    acc.add({"choices": [], "usage": {"prompt_tokens": 812, "completion_tokens": 2, "total_tokens": 814}}, 2.0)
    result = acc.result(2.0)
    assert (result.input_tokens, result.output_tokens, result.usage_reported) == (812, 2, True)
    assert result.tokens_per_s == pytest.approx(1.0)


def test_an_error_event_in_the_stream_is_a_generator_error_with_credentials_masked() -> None:
    acc = StreamAccumulator(started=0.0)
    with pytest.raises(GeneratorError, match="context window") as failed:
        acc.add({"error": {"message": "exceeds the context window at http://u:pw123@host/v1"}}, 0.1)
    assert "pw123" not in str(failed.value)


def test_an_empty_stream_has_no_first_token_and_no_rate() -> None:
    result = StreamAccumulator(started=0.0).result(0.5)
    assert (result.text, result.output_tokens, result.time_to_first_token_ms, result.tokens_per_s) == (
        "",
        0,
        None,
        None,
    )


def test_a_non_streamed_reply_gives_text_and_the_endpoints_counts() -> None:
    reply = {
        "choices": [{"message": {"role": "assistant", "content": "Yes [2]."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 4, "total_tokens": 44},
    }
    result = completion_result(reply, started=1.0, now=1.5)
    assert (result.text, result.input_tokens, result.output_tokens, result.usage_reported) == ("Yes [2].", 40, 4, True)
    assert result.tokens_per_s == pytest.approx(8.0) and result.time_to_first_token_ms is None
    silent = completion_result({"choices": [{"message": {"content": "ok"}}]}, started=0.0, now=1.0)
    assert (silent.output_tokens, silent.usage_reported, silent.tokens_per_s) == (None, False, None)
    with pytest.raises(GeneratorError, match="no answer: model not loaded"):
        completion_result({"error": {"message": "model not loaded"}}, started=0.0, now=1.0)


def test_the_request_asks_for_the_grounded_answer_at_temperature_zero() -> None:
    client = GeneratorClient("http://127.0.0.1:8089/v1/", "smollm2-135m-instruct")
    assert client.endpoint == "http://127.0.0.1:8089/v1/chat/completions"
    assert GeneratorClient(client.endpoint, "m").endpoint == client.endpoint
    body = client.request_body("Why?", "[1] Because.")
    assert body["temperature"] == 0 and body["model"] == "smollm2-135m-instruct"
    assert body["messages"][1]["content"] == "Context:\n[1] Because.\n\nQuestion: Why?"
    assert body["max_tokens"] == 512, "a cap, so a small model cannot ramble to the end of its window"
    assert "max_tokens" not in GeneratorClient(client.url, "m", max_tokens=None).request_body("q", "c")


def test_the_local_server_listens_on_loopback_only() -> None:
    command = server_command(Path("/m/model.gguf"), 8089, n_ctx=4096, threads=2)
    assert command[1:3] == ["-m", "llama_cpp.server"]
    assert command[command.index("--host") + 1] == LOOPBACK == "127.0.0.1"
    assert command[command.index("--n_threads") + 1] == "2"
    with pytest.raises(ValueError, match="--port"):
        server_command(Path("/m/model.gguf"), 70000)


def test_a_missing_model_package_names_the_make_target() -> None:
    with pytest.raises(LocalGeneratorError, match="make install-generator") as missing:
        packaged_gguf("llmops-no-such-model-package")
    assert "llmops-no-such-model-package" in str(missing.value)


def test_a_missing_server_module_names_the_make_target() -> None:
    require_llama_server(("json",))
    with pytest.raises(LocalGeneratorError, match="'llmops_no_such_module' module; run 'make install-generator'"):
        require_llama_server(("json", "llmops_no_such_module"))


def test_a_server_that_exits_while_starting_is_reported_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "print('error loading model: bad magic'); raise SystemExit(3)"], stdout=out
        )
    process.wait(timeout=30)
    with pytest.raises(LocalGeneratorError, match="exited with code 3") as failed:
        wait_until_ready(LocalServer(process, 9, log), timeout_s=30)
    assert "bad magic" in str(failed.value)


def test_a_server_that_never_answers_times_out_on_the_given_clock(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    ticks = iter(range(100))
    try:
        with pytest.raises(LocalGeneratorError, match="did not answer within 5 s"):
            # Port 9 (discard) on loopback: nothing listens, every probe is refused at once.
            wait_until_ready(
                LocalServer(process, 9, tmp_path / "none.log"),
                timeout_s=5,
                clock=lambda: float(next(ticks)),
                sleep=lambda _: None,
            )
    finally:
        assert stop_local_server(LocalServer(process, 9, tmp_path / "none.log")) != 0, "stopped by SIGTERM"


class EventStream(BaseHTTPRequestHandler):
    """Answers every POST with the server-sent events in ``EventStream.lines``."""

    lines: list[str] = []  # noqa: RUF012 - set by each test before its request

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for line in EventStream.lines:
            self.wfile.write(line.encode() + b"\n\n")
            self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def event_server() -> Iterator[str]:
    with loopback_server(EventStream) as port:
        yield f"http://127.0.0.1:{port}/v1"


async def test_a_stream_over_http_yields_deltas_and_ends_at_done(event_server: str) -> None:
    chunks = [chunk(), chunk("Use "), chunk("json.loads"), chunk(" [1]."), chunk(finish="stop")]
    EventStream.lines = [": ping", *(f"data: {json.dumps(c)}" for c in chunks), "data: [DONE]", "data: {ignored"]
    answer = GeneratorClient(event_server, "m").stream("q", "c")
    assert [delta async for delta in answer] == ["Use ", "json.loads", " [1]."]
    assert answer.result is not None and answer.result.text == "Use json.loads [1]."
    assert answer.result.output_tokens == 3 and answer.result.finish_reason == "stop"


async def test_a_stream_cut_before_done_is_an_error_not_a_short_answer(event_server: str) -> None:
    EventStream.lines = [f"data: {json.dumps(chunk('Use '))}"]
    answer = GeneratorClient(event_server, "m").stream("q", "c")
    with pytest.raises(GeneratorError, match=r"ended before \[DONE\]"):
        _ = [delta async for delta in answer]
    assert answer.result is None
