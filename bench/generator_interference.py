"""Does a generation delay search? Search latency idle and while streamed rag answers run, one run.

Runs the real broker, the local generator (``llama_cpp.server`` with the packaged SmolLM2, as
``llmops generator serve`` runs it: 1 thread, ``--nice`` 10 unless told) and a worker whose infer
agent uses it (``LLMOPS_GENERATOR_URL``), indexes ``--docs`` stdlib documents, waits for Milvus Lite
to settle, then alternates blocks of paced search requests (client send -> reply over Kafka):

- ``idle``: nothing else in flight;
- ``generating``: a streamed rag answer is being generated the whole block (one after another,
  each capped at the server's 512 tokens); only searches sent while a generation was in flight count.

Blocks alternate (idle, generating, idle, ...) so that both phases see the same background load
on shared cores. Reports p50/p95/p99 per phase and their ratio, the CPU seconds the worker and
the generator server used per phase, the partial replies received, and the 1-minute load average.

Target (issue 23): search p99 while generating within 10% of idle.

Run:  .venv/bin/python bench/generator_interference.py [--docs 300] [--blocks 4] [--per-block 40] [--nice 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from inference_latency import queries, settle, summary  # noqa: E402

from streams.inference.client import InferenceClient  # noqa: E402
from streams.inference.local_model import start_local_server, stop_local_server, wait_until_ready  # noqa: E402
from streams.ingest.corpus import stdlib_documents  # noqa: E402
from streams.ingest.publish import encode_document, publish_records  # noqa: E402
from streams.kafka.admin import ensure_topics, offsets  # noqa: E402
from streams.kafka.broker import EmbeddedKafka  # noqa: E402
from streams.kafka.progress import wait_for_stages  # noqa: E402
from streams.kafka.topics import Topics  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.worker_process import start_worker, stop_worker  # noqa: E402

OUT = ROOT / "bench" / "out"
AGENTS = ("embed", "index", "infer", "ingest")
RAG_QUESTIONS = (
    "Explain in detail how to compress and decompress data with gzip, with examples.",
    "Describe everything the json module can do when encoding and decoding, step by step.",
    "How do I read and write CSV files? Give a long explanation with every option.",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (and its reaped children) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class Generations:
    """Streamed rag answers one after another while ``running``; counts partial replies."""

    def __init__(self, client: InferenceClient) -> None:
        self.client = client
        self.in_flight = False
        self.partials = 0
        self.answers = 0
        self.running = False
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        n = 0
        while self.running:
            question = RAG_QUESTIONS[n % len(RAG_QUESTIONS)]
            n += 1
            self.in_flight = True
            try:
                async for reply in self.client.stream(question, "rag", timeout=300, top_k=3):
                    if not reply["final"]:
                        self.partials += 1
                    elif reply["status"] != "OK":
                        raise RuntimeError(f"rag answered {reply['status']}: {reply['error']}")
            finally:
                self.in_flight = False
            self.answers += 1

    async def start(self) -> None:
        """Start generating; returns once the first partial reply arrived (tokens are flowing)."""
        self.running = True
        seen = self.partials
        self._task = asyncio.ensure_future(self._loop())
        while self.partials == seen:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Stop after the answer in flight (awaited, so the next idle block is idle)."""
        self.running = False
        if self._task is not None:
            await self._task


async def block(client: InferenceClient, texts: list[str], rate: float, generations: Generations | None) -> list[float]:
    """Paced searches; round trips of those sent (and answered) while a generation ran, or all when idle."""
    kept = []
    for text in texts:
        started = time.perf_counter()
        during = generations is not None and generations.in_flight
        response = await client.ask(text, "search", timeout=60)
        elapsed = (time.perf_counter() - started) * 1000
        if response["status"] != "OK":
            raise RuntimeError(f"search answered {response['status']}: {response['error']}")
        if generations is None or (during and generations.in_flight):
            kept.append(elapsed)
        await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - started)))
    return kept


async def measure(
    settings: Settings, texts: list[str], blocks: int, per_block: int, rate: float, pids: dict[str, int]
) -> dict[str, Any]:
    phases: dict[str, list[float]] = {"idle": [], "generating": []}
    cpu = {phase: dict.fromkeys(pids, 0.0) for phase in phases}
    wall = dict.fromkeys(phases, 0.0)
    async with (
        InferenceClient(settings, client_id="bench-search") as searches,
        InferenceClient(settings, client_id="bench-rag") as rag,
    ):
        await block(searches, texts[:20], 50, None)  # warm-up
        generations = Generations(rag)
        for n in range(blocks * 2):
            phase = "idle" if n % 2 == 0 else "generating"
            chunk = texts[(n * per_block) % len(texts) :][:per_block]
            if phase == "generating":
                await generations.start()
            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            started = time.perf_counter()
            phases[phase] += await block(searches, chunk, rate, generations if phase == "generating" else None)
            wall[phase] += time.perf_counter() - started
            for name, pid in pids.items():
                cpu[phase][name] += cpu_seconds(pid) - before[name]
            if phase == "generating":
                await generations.stop()
            print(f"block {n}: {phase} {len(phases[phase])} searches so far", file=sys.stderr)
    idle, busy = summary(phases["idle"]), summary(phases["generating"])
    return {
        "searches": {phase: len(values) for phase, values in phases.items()},
        "idle_ms": idle,
        "generating_ms": busy,
        "p50_ratio": round(busy["p50"] / idle["p50"], 3),
        "p99_ratio": round(busy["p99"] / idle["p99"], 3),
        "cpu_seconds_per_wall_second": {
            phase: {name: round(seconds / wall[phase], 3) for name, seconds in cpu[phase].items()} for phase in phases
        },
        "rag_answers": generations.answers,
        "partial_replies": generations.partials,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=300, help="stdlib documents to index")
    parser.add_argument("--blocks", type=int, default=4, help="blocks per phase (they alternate)")
    parser.add_argument("--per-block", type=int, default=40, help="searches per block")
    parser.add_argument("--rate", type=float, default=10.0, help="searches per second")
    parser.add_argument("--nice", type=int, default=10, help="the generator server's niceness (0: the workers')")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    base = Settings()
    EmbeddedKafka.from_settings(base).start(progress=lambda line: print(line, file=sys.stderr))
    server = start_local_server(free_port(), OUT / "interference-server.log", threads=args.threads, niceness=args.nice)
    worker = None
    try:
        wait_until_ready(server, timeout_s=180)
        settings = base.model_copy(
            update={
                "namespace": f"bench-gen-{uuid.uuid4().hex[:6]}",
                "generator_url": server.url,
                "generator_model": server.model_alias,
            }
        )
        worker = start_worker(settings, settings.data_dir / "logs" / f"{settings.namespace}.log", AGENTS)
        asyncio.run(ensure_topics(settings))
        documents = list(stdlib_documents(limit=args.docs))
        asyncio.run(publish_records(settings, [encode_document(d) for d in documents]))
        _, raw_end = asyncio.run(offsets(settings, [Topics(settings.namespace).docs_raw]))
        if not wait_for_stages(settings, [AGENTS], raw_end, 1800)[0]:
            raise RuntimeError("the worker did not index the documents")
        texts = queries(args.per_block * args.blocks * 2, skip=args.docs)
        settled = asyncio.run(settle(settings, texts))
        pids = {"worker": worker.pid, "generator_server": server.process.pid}
        result = asyncio.run(measure(settings, texts, args.blocks, args.per_block, args.rate, pids))
    finally:
        if worker is not None:
            stop_worker(worker)
        stop_local_server(server)
    report = {
        "benchmark": "generator_interference",
        "docs": args.docs,
        "rate_per_s": args.rate,
        "generator": {"nice": args.nice, "threads": args.threads},
        "settled_after_s": round(settled, 1),
        **result,
        "cpus": os.cpu_count(),
        "load_average_1m_before": round(load_before, 2),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"generator_interference-nice{args.nice}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
