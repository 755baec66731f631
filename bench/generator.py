"""The local generator's speed: time to first token and tokens/s for rag-sized prompts.

Starts the real ``llama_cpp.server`` with the packaged SmolLM2-135M-Instruct GGUF (what
``llmops generator serve`` runs; needs ``make install-generator``) and asks it N questions
through ``GeneratorClient.stream``, each with a numbered context of about T tokens built from
stdlib docstrings the way the rag path builds it ([n] title (chunk id), then the text).

Per question: prompt tokens (the server's count, from a non-streamed call after the timed one),
time to first token (request -> first text: prompt processing dominates it), output tokens
(content chunks, one per token on llama.cpp) and generation tokens/s (tokens after the first over
the time after the first). ``streamed_equals_whole`` compares the streamed answer with the
non-streamed one sent right after it: that second request finds its prompt in llama.cpp's cache,
whose logits differ slightly from a fresh evaluation, so greedy answers can diverge. Default 1
thread: on 2 shared cores, 2 llama.cpp threads wait on each other. The 1-minute load average
before and after says how busy the machine was: on shared cores the figures move with it.

Prints JSON and writes bench/out/generator.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.inference.generator import GeneratorClient  # noqa: E402
from streams.inference.local_model import (  # noqa: E402
    packaged_gguf,
    start_local_server,
    stop_local_server,
    wait_until_ready,
)
from streams.ingest.corpus import stdlib_documents  # noqa: E402

OUT = ROOT / "bench" / "out"
MODULES = ("json", "pathlib", "functools", "typing", "collections", "argparse", "logging", "asyncio", "csv", "re")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def count_tokens(base_url: str, text: str) -> int:
    """Tokens in ``text`` by the served model's own tokenizer (llama_cpp.server's /extras endpoint)."""
    root = base_url.removesuffix("/v1")
    reply = httpx.post(f"{root}/extras/tokenize/count", json={"input": text}, timeout=30)
    reply.raise_for_status()
    return int(reply.json()["count"])


def contexts(base_url: str, target_tokens: int) -> list[tuple[str, str]]:
    """(question, numbered context of about ``target_tokens`` tokens) for each module in MODULES."""
    by_module: dict[str, list[dict[str, Any]]] = {module: [] for module in MODULES}
    for doc in stdlib_documents():
        top = doc["metadata"]["top_level"]
        if top in by_module and len(by_module[top]) < 40:
            by_module[top].append(doc)
    pairs = []
    for module, docs in by_module.items():
        passages: list[str] = []
        for n, doc in enumerate(docs, 1):
            passage = f"[{n}] {doc['title']} ({doc['id']}#0)\n{doc['text'][:1200]}"
            if count_tokens(base_url, "\n\n".join([*passages, passage])) > target_tokens:
                break
            passages.append(passage)
        pairs.append(
            (f"What does the {module} module's main function do, and how is it called?", "\n\n".join(passages))
        )
    return pairs


async def measure(client: GeneratorClient, base_url: str, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    rows = []
    for question, context in pairs:
        answer = client.stream(question, context)
        deltas = [delta async for delta in answer]
        result = answer.result
        assert result is not None
        whole = await client.complete(question, context)  # the exact prompt count; not timed
        rows.append(
            {
                "context_tokens": count_tokens(base_url, context),
                "prompt_tokens": whole.input_tokens,
                "time_to_first_token_ms": round(result.time_to_first_token_ms or 0.0, 1),
                "output_tokens": result.output_tokens,
                "generation_tokens_per_s": round(result.tokens_per_s or 0.0, 1),
                "duration_ms": round(result.duration_ms, 1),
                "deltas": len(deltas),
                "finish_reason": result.finish_reason,
                "streamed_equals_whole": result.text == whole.text,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=10, help="how many questions (at most 10)")
    parser.add_argument("--context-tokens", type=int, default=800, help="target context size in model tokens")
    parser.add_argument(
        "--threads", type=int, default=1, help="llama.cpp CPU threads (2 on 2 shared cores: threads wait on each other)"
    )
    parser.add_argument("--max-tokens", type=int, default=256, help="cap on each answer")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    log = OUT / "generator-server.log"
    started = time.perf_counter()
    server = start_local_server(free_port(), log, n_ctx=2048, threads=args.threads)
    try:
        wait_until_ready(server, timeout_s=180)
        ready_s = time.perf_counter() - started
        client = GeneratorClient(server.url, server.model_alias, timeout_s=300, max_tokens=args.max_tokens)
        pairs = contexts(server.url, args.context_tokens)[: args.questions]
        asyncio.run(client.complete("Say hello.", "[1] hello"))  # warm-up: first call allocates buffers
        rows = asyncio.run(measure(client, server.url, pairs))
    finally:
        stop_local_server(server)

    def median(key: str) -> float:
        return round(statistics.median(float(row[key]) for row in rows), 1)

    report = {
        "model": packaged_gguf().name,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "server_ready_s": round(ready_s, 2),
        "questions": len(rows),
        "median_prompt_tokens": median("prompt_tokens"),
        "median_time_to_first_token_ms": median("time_to_first_token_ms"),
        "max_time_to_first_token_ms": max(row["time_to_first_token_ms"] for row in rows),
        "median_output_tokens": median("output_tokens"),
        "median_generation_tokens_per_s": median("generation_tokens_per_s"),
        "streamed_equals_whole": sum(row["streamed_equals_whole"] for row in rows),
        "load_average_1m_before": round(load_before, 2),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "rows": rows,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "generator.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
