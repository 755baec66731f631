"""Whole-system CPU per indexed chunk against the bare embedder's, cold start, and first-minute freshness.

CPU-seconds are robust to the neighbours that make wall-clock ratios meaningless on shared cores:
every process involved is read from ``/proc/<pid>/stat`` (user + system time) before and after a
run, in the same run as the baseline.

1. **bare**: the ONNX embedder alone embeds the chunk texts of N stdlib documents in this
   process; CPU per chunk = process CPU time / chunks (every thread is counted).
2. **pipeline**: a worker (ingest, embed, index, as in the embedded default) in a fresh
   namespace indexes the same documents published at once. CPU per chunk = (broker + worker
   with any child processes; Milvus Lite runs inside the worker) / chunks indexed, each
   measured from the moment the worker reports ready to the moment the last chunk is in
   Milvus; the publishing client's CPU is reported beside it. ``pipeline_vs_bare`` is the
   ratio of that to the bare embedder's CPU per chunk (target <= 1.15). The idle rate of
   broker and worker (CPU per second over 10 s after ready, before publishing) is reported,
   and the ratio again without it (``pipeline_above_idle_vs_bare``): a cost per second grows
   per chunk when a loaded machine makes the run longer.
3. **cold start**: seconds from the worker's process start to ``/readyz`` answering 200, and
   the worker's CPU seconds by then.
4. **freshness** (``--freshness-rate``, docs/s; default: half the rate of run 2): a new worker,
   documents published from the moment it reports ready, paced by tokens; p50/p99 of publish
   -> searchable over every chunk, the first minute included.

Rounds alternate bare and pipeline so that a noisy neighbour hurts both alike; medians are
reported. Prints JSON and writes bench/out/pipeline_cpu.json.

    python bench/pipeline_cpu.py --docs 2000 --rounds 3
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
import urllib.request
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline_throughput import document_tokens, percentiles, publish_paced  # noqa: E402

from streams.index.embed import OnnxEmbedder  # noqa: E402
from streams.index.vectorstore import MilvusStore  # noqa: E402
from streams.ingest.chunk import chunk_text, default_tokenizer  # noqa: E402
from streams.ingest.corpus import stdlib_documents  # noqa: E402
from streams.ingest.publish import encode_document, publish_records  # noqa: E402
from streams.kafka.admin import ensure_topics, offsets  # noqa: E402
from streams.kafka.broker import EmbeddedKafka  # noqa: E402
from streams.kafka.progress import wait_for_stages  # noqa: E402
from streams.kafka.topics import Topics  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.worker_process import start_worker, stop_worker  # noqa: E402

OUT = ROOT / "bench" / "out"
AGENTS = ("embed", "index", "ingest")
TICK = os.sysconf("SC_CLK_TCK")
IDLE_S = 10.0


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a store or helper the worker starts as a process of its own)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                queue.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (0 for one that has gone)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, process: object, timeout: float = 180.0) -> float:
    """Poll ``/readyz`` until it answers 200; the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:  # type: ignore[attr-defined]
            raise RuntimeError("the worker exited before it was ready; see its log")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
                if reply.status == 200:
                    return time.monotonic()
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the worker was not ready within {timeout:.0f} s")


def chunk_texts(documents: list[dict]) -> list[str]:
    tokenizer = default_tokenizer()
    return [c.text for d in documents for c in chunk_text(d["text"], tokenizer, 128, 16)]


def bare_cpu_ms(settings: Settings, texts: list[str]) -> float:
    """The embedder alone: process CPU milliseconds per chunk (every ONNX thread counted)."""
    embedder = OnnxEmbedder.from_settings(settings)
    embedder.embed(texts[:64])
    started = time.process_time()
    embedder.embed(texts)
    return 1000 * (time.process_time() - started) / len(texts)


def run_worker(base: Settings, broker_pid: int, documents: list[dict], rate: float | None) -> dict:
    """One worker in a fresh namespace: cold start, CPU per chunk by process, freshness."""
    port = free_port()
    namespace = f"bench-cpu-{uuid.uuid4().hex[:6]}"
    # A data folder per run: a fresh Milvus Lite file, and none shared with another bench's worker.
    update = {"namespace": namespace, "sre_port": port, "data_dir": base.data_dir / "bench-cpu" / namespace}
    settings = base.model_copy(update={**update, "models_dir": base.models_dir or base.data_dir / "models"})
    asyncio.run(ensure_topics(settings))
    records = [encode_document(d) for d in documents]
    log = settings.data_dir / "logs" / f"{settings.namespace}.log"
    launched = time.monotonic()
    worker = start_worker(settings, log, AGENTS)
    try:
        ready = wait_ready(port, worker)
        tree = process_tree(worker.pid)
        cold_cpu = cpu_seconds(tree)
        # The idle rate (consumer fetches, heartbeats, timers, the broker's own work), to tell a
        # cost per second from a cost per chunk: on a loaded machine a run lasts longer.
        idle_from = (cpu_seconds([broker_pid]), cold_cpu, time.monotonic())
        time.sleep(IDLE_S)
        idle_s = time.monotonic() - idle_from[2]
        before = {"broker": cpu_seconds([broker_pid]), "worker": cpu_seconds(tree)}
        idle = {
            "broker": (before["broker"] - idle_from[0]) / idle_s,
            "worker": (before["worker"] - idle_from[1]) / idle_s,
        }
        client_before = time.process_time()
        started = time.monotonic()
        if rate is None:
            asyncio.run(publish_records(settings, records))
        else:
            tokens = document_tokens(documents)
            asyncio.run(publish_paced(settings, records, rate, tokens / tokens.mean()))
        client = time.process_time() - client_before
        _, raw_end = asyncio.run(offsets(settings, [Topics(settings.namespace).docs_raw]))
        ok, _ = wait_for_stages(settings, [AGENTS], raw_end, 900, alive=lambda: worker.poll() is None)
        if not ok:
            raise RuntimeError(f"the worker did not finish; see {log}")
        seconds = time.monotonic() - started
        tree = process_tree(worker.pid)
        after = {"broker": cpu_seconds([broker_pid]), "worker": cpu_seconds(tree)}
    finally:
        stop_worker(worker)
    store = MilvusStore.from_settings(settings, OnnxEmbedder.from_settings(settings).version)
    try:
        timings = store.timings()
    finally:
        store.close()
    raw = np.array([t[0] for t in timings])
    indexed = np.array([t[1] for t in timings])
    chunks = len(timings)
    cpu = {name: after[name] - before[name] for name in before} | {"client": client}
    return {
        "cold_start_s": round(ready - launched, 2),
        "cold_start_worker_cpu_s": round(cold_cpu, 2),
        "idle_cpu_ms_per_s": {name: round(1000 * rate, 1) for name, rate in idle.items()},
        "system_cpu_ms_per_chunk_above_idle": round(
            1000 * sum(cpu[name] - idle[name] * seconds for name in idle) / chunks, 3
        ),
        "chunks": chunks,
        "seconds": round(seconds, 2),
        "docs_per_s": round(len(documents) / ((indexed.max() - raw.min()) / 1000), 1),
        "cpu_ms_per_chunk": {name: round(1000 * value / chunks, 3) for name, value in cpu.items()},
        "system_cpu_ms_per_chunk": round(1000 * (cpu["broker"] + cpu["worker"]) / chunks, 3),
        "freshness_ms": percentiles(indexed - raw),
        "processes": len(tree),
    }


def median(values: list[float]) -> float | None:
    """The median, or None with no values (``--rounds 0``: the freshness run alone)."""
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/pipeline rounds (medians)")
    parser.add_argument("--freshness-rate", type=float, default=None, metavar="DOCS_PER_S")
    parser.add_argument("--skip-freshness", action="store_true")
    args = parser.parse_args()
    base = Settings()
    load_at_start = os.getloadavg()
    broker = EmbeddedKafka.from_settings(base)
    started_here = broker.status().pid is None  # a broker this bench starts, it stops
    broker.start(progress=lambda line: print(line, file=sys.stderr))
    try:
        measure(args, base, broker.status().pid, load_at_start)
    finally:
        if started_here:
            broker.stop()


def measure(args: argparse.Namespace, base: Settings, broker_pid: int | None, load_at_start: tuple[float, ...]) -> None:
    """The rounds and the freshness run against the broker ``broker_pid``; prints and writes the report."""
    if broker_pid is None:
        raise SystemExit("the broker at LLMOPS_BOOTSTRAP_SERVERS was not started by llmops: its CPU cannot be read")
    documents = list(stdlib_documents(limit=args.docs))
    texts = chunk_texts(documents)
    rounds = []
    for number in range(args.rounds):
        bare = bare_cpu_ms(base, texts)
        run = run_worker(base, broker_pid, documents, None)
        ratio = round(run["system_cpu_ms_per_chunk"] / bare, 3)
        above_idle = round(run["system_cpu_ms_per_chunk_above_idle"] / bare, 3)
        print(f"round {number + 1}: bare {bare:.2f} ms/chunk, pipeline {run}, ratio {ratio}", file=sys.stderr)
        rounds.append(
            {
                "bare_cpu_ms_per_chunk": round(bare, 3),
                "pipeline": run,
                "pipeline_vs_bare": ratio,
                "pipeline_above_idle_vs_bare": above_idle,
            }
        )
    report: dict = {
        "benchmark": "pipeline_cpu",
        "docs": args.docs,
        "chunk_texts": len(texts),
        "rounds": rounds,
        "pipeline_vs_bare_median": median([r["pipeline_vs_bare"] for r in rounds]),
        "pipeline_above_idle_vs_bare_median": median([r["pipeline_above_idle_vs_bare"] for r in rounds]),
        "cold_start_s_median": median([r["pipeline"]["cold_start_s"] for r in rounds]),
        "batch_seconds": {stage: getattr(base, f"{stage}_batch_seconds") for stage in ("ingest", "embed", "index")},
        "load_average_at_start": load_at_start,
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "targets": {"pipeline_vs_bare": "<= 1.15", "cold_start_s": "<= 10", "freshness_p99_ms": "<= 1000"},
    }
    if not args.skip_freshness:
        max_rate = statistics.median(r["pipeline"]["docs_per_s"] for r in rounds) if rounds else None
        rate = args.freshness_rate or (max_rate / 2 if max_rate else None)
        if rate is None:
            raise SystemExit("--freshness-rate is needed with --rounds 0")
        fresh = run_worker(base, broker_pid, documents, rate)
        print(f"freshness at {rate:.1f} docs/s: {fresh}", file=sys.stderr)
        report["freshness"] = {"rate_docs_per_s": round(rate, 1), "from_ready_including_first_minute": fresh}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "pipeline_cpu.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
