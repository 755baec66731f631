"""The generator client against the real local server: llama_cpp.server with the packaged SmolLM2.

A separate tier (``make test-generator`` installs the ``generator`` extra, then runs it). Without
the extra these tests fail and say how to install it; they never skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from streams.inference.client import InferenceClient
from streams.inference.generator import GenerationResult, GeneratorClient, GeneratorError
from streams.inference.local_model import (
    MODEL_ALIAS,
    LocalGeneratorError,
    LocalServer,
    packaged_gguf,
    require_llama_server,
    start_local_server,
    stop_local_server,
    wait_until_ready,
)
from streams.ingest.publish import encode_document
from streams.settings import Settings

from .conftest import index_with_worker, run, run_cli

pytestmark = pytest.mark.generator

CONTEXT = (
    "[1] (python-docs#json) The json module encodes Python objects as JSON text with json.dumps "
    "and decodes JSON text with json.loads.\n"
    "[2] (python-docs#pathlib) pathlib.Path represents a filesystem path; Path.read_text returns "
    "the contents of a file as a string."
)
QUESTION = "Which function decodes JSON text?"


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def require_generator_extra() -> Path:
    try:
        require_llama_server()
        return packaged_gguf()
    except LocalGeneratorError as error:
        pytest.fail(f"the local generator tier needs the generator extra: {error}")


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    require_generator_extra()
    # The workers' CPU priority (niceness 0): on loaded shared cores a niced server's answers are
    # starved for minutes, and these tests are about answers, not priorities.
    log = tmp_path_factory.mktemp("generator") / "server.log"
    server = start_local_server(free_loopback_port(), log, n_ctx=2048, niceness=0)
    try:
        wait_until_ready(server, timeout_s=180)
        yield server
    finally:
        stop_local_server(server)


@pytest.fixture
def client(local_server: LocalServer) -> GeneratorClient:
    return GeneratorClient(local_server.url, local_server.model_alias, timeout_s=120)


async def streamed(client: GeneratorClient, question: str, context: str) -> tuple[list[str], GenerationResult]:
    answer = client.stream(question, context)
    deltas = [delta async for delta in answer]
    assert answer.result is not None, "the result is set once the stream has ended"
    return deltas, answer.result


async def test_generate_returns_text_with_the_servers_token_counts(client: GeneratorClient) -> None:
    result = await client.complete(QUESTION, CONTEXT)
    assert result.text.strip()
    assert result.usage_reported and result.input_tokens is not None and result.output_tokens is not None
    assert result.input_tokens > 40, "the system prompt, both passages and the question were sent"
    assert result.output_tokens > 0 and result.finish_reason in {"stop", "length"}
    assert await client.generate(QUESTION, CONTEXT) == result.text, "temperature 0: the same answer again"


async def test_stream_yields_deltas_that_join_into_the_non_streamed_answer(client: GeneratorClient) -> None:
    # llama.cpp reuses the cached prompt of the previous request: a prompt evaluated afresh and one
    # taken from the cache give slightly different logits, which can flip a greedy choice. So both
    # compared answers start from the same cache state: the prompt already evaluated once.
    await client.complete(QUESTION, CONTEXT)
    deltas, result = await streamed(client, QUESTION, CONTEXT)
    whole = await client.complete(QUESTION, CONTEXT)
    assert len(deltas) > 1 and all(deltas)
    assert "".join(deltas) == result.text == whole.text, "greedy decoding: streamed and whole answers agree"
    assert result.output_tokens == whole.output_tokens, "one content chunk per token, as the server counts them"
    assert result.time_to_first_token_ms is not None and 0 < result.time_to_first_token_ms <= result.duration_ms
    assert result.tokens_per_s is not None and result.tokens_per_s > 0


async def test_a_prompt_beyond_the_context_window_is_a_generator_error(client: GeneratorClient) -> None:
    too_long = CONTEXT + "\n" + " ".join(f"[{n}] filler passage number {n}." for n in range(3, 900))
    with pytest.raises(GeneratorError, match="generator endpoint"):
        await client.complete(QUESTION, too_long)
    with pytest.raises(GeneratorError, match="generator endpoint"):
        await streamed(client, QUESTION, too_long)


def test_llmops_generator_serve_answers_on_loopback_and_stops_on_sigterm(tmp_path: Path) -> None:
    require_generator_extra()
    port = free_loopback_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "generator", "serve", "--port", str(port), "--threads", "1"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
    server = LocalServer(process, port, log)
    try:
        wait_until_ready(server, timeout_s=180)
        models = httpx.get(server.url + "/models", timeout=10).json()
        assert [model["id"] for model in models["data"]] == [MODEL_ALIAS]
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        # The command execs the server: had it started a child, the child would still answer here.
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/models", timeout=10)
    finally:
        stop_local_server(server)
    assert f"http://127.0.0.1:{port}/v1" in log.read_text()


async def test_a_generated_sentence_no_cited_passage_supports_is_flagged(
    client: GeneratorClient, tmp_path: Path
) -> None:
    """rag through the real service, a real store and the real local server: the groundedness check
    flags what the generator writes beyond its passages (here it is asked about something they lack)."""
    from streams.index.embed import OnnxEmbedder
    from streams.index.vectorstore import ChunkRow, MilvusStore
    from streams.inference.requests import InferenceRequest
    from streams.inference.service import InferenceService, ModelSet

    embedder = OnnxEmbedder.default(workers=1)
    store = MilvusStore(str(tmp_path / "milvus.db"), "chunks_v2_gen_0123456789abcdef", embedder.dimension)
    try:
        texts = {
            "gzip-doc": "gzip.compress compresses data in one shot and returns the compressed bytes.",
            "json-doc": "json.loads decodes a JSON document from a string into Python objects.",
        }
        vectors = embedder.embed(list(texts.values()))
        store.upsert(
            [
                ChunkRow(f"{doc}#0", doc, 0, "", text, doc, "test", "h", 1, 2, vector.tolist())
                for (doc, text), vector in zip(texts.items(), vectors, strict=True)
            ]
        )
        service = InferenceService(ModelSet(embedder, store), generator=client)
        question = "Write three sentences about the history of the Roman Empire and its emperors."
        response, _ = await service.answer(InferenceRequest("r1", "rag", question, top_k=2), 0)
    finally:
        store.close()
    assert response["status"] == "OK" and response["answer"], response
    assert {"name": "generator", "version": client.model, "stage": "external"} in response["models"]
    assert response["grounded"] in ("partial", "false") and response["unsupported"], response
    assert all(sentence in response["answer"] for sentence in response["unsupported"])
    assert "not supported by a cited passage" in response["note"]


STREAM_DOCUMENTS = [
    {
        "id": "gzip-guide",
        "title": "gzip: compress data",
        "text": "gzip.compress compresses data in one shot and returns the compressed bytes. "
        "gzip.decompress returns the original bytes of compressed data.",
    },
    {
        "id": "json-guide",
        "title": "json: decode documents",
        "text": "json.loads decodes a JSON document from a string into Python objects. "
        "json.dumps encodes Python objects as a JSON string.",
    },
]


async def stream_beside_a_search(settings: Settings, question: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A streamed rag answer; a search is sent once its first partial reply arrived and answered meanwhile."""
    async with InferenceClient(settings) as client:
        replies: list[dict[str, Any]] = []
        search: asyncio.Task[dict[str, Any]] | None = None
        async for reply in client.stream(question, "rag", timeout=180, top_k=2):
            replies.append(reply)
            if search is None:
                search = asyncio.ensure_future(client.ask("compress bytes", "search", timeout=180, top_k=2))
        assert search is not None
        return replies, await search


@pytest.mark.timeout(1800)  # a worker starting and indexing on 2 shared cores took 5 minutes at load 27
def test_a_streamed_rag_answer_over_kafka_is_partial_replies_then_one_final_reply(
    local_server: LocalServer, settings: Settings
) -> None:
    """The real broker, worker, Milvus Lite and local server: tokens arrive as partial replies in
    order, the final reply holds the whole checked answer and the token counts, a search sent
    during the generation is answered, and `llmops query --stream` prints the answer as it comes."""
    settings = settings.model_copy(
        update={"generator_url": local_server.url, "generator_model": local_server.model_alias}
    )
    agents = ("embed", "index", "infer", "ingest")
    worker = index_with_worker(settings, [encode_document(d) for d in STREAM_DOCUMENTS], agents, timeout=900.0)
    try:
        replies, search = run(stream_beside_a_search(settings, QUESTION))
        shown = run_cli(settings, "query", QUESTION, "--task", "rag", "--stream", "--top-k", "2", "--timeout", "180")
        as_json = run_cli(settings, "query", QUESTION, "--task", "rag", "--stream", "--json", "--timeout", "180")
    finally:
        code = worker.stop()
        assert code == 0, f"worker exit code {code}; log:\n{worker.log_tail()}"

    *partials, final = replies
    assert partials, "a generated answer streams at least one partial reply"
    assert [r["sequence"] for r in replies] == list(range(len(replies))), "in order, numbered from 0"
    assert not any(r["final"] for r in partials) and final["final"]
    assert all(r["delta"] and r["status"] == "OK" for r in partials)
    assert "".join(r["delta"] for r in partials) == final["answer"]
    assert all(r["answer"] is None for r in partials), "a partial reply carries its delta alone"
    assert final["status"] == "OK" and final["context"] and final["hits"], final
    assert {"name": "generator", "version": local_server.model_alias, "stage": "external"} in final["models"]
    assert final["grounded"] in ("true", "partial", "false")
    assert all(f"[{c['n']}]" in final["answer"] for c in final["citations"])
    assert all(sentence in final["answer"] for sentence in final["unsupported"])
    # llama.cpp's server sends no `usage` in a stream: no prompt count, one output token per content chunk.
    assert final["input_tokens"] is None and final["output_tokens"] == len(partials)
    assert search["status"] == "OK" and search["final"] and search["sequence"] == 0 and search["hits"], search

    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "answer: " in shown.stdout and "grounded: " in shown.stdout, shown.stdout
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    lines = as_json.stdout.splitlines()
    first = json.loads(lines[0])
    assert first["final"] is False and first["sequence"] == 0 and first["delta"], first
