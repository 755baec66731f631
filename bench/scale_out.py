"""Scale-out where two cores cannot show speed-up: CPU per indexed chunk with 1 and 2 workers, rebalance pauses.

Runs its own broker (one KRaft node on ``--kafka-port``, fresh storage) and one Milvus Lite server
(``--milvus-port``) that every worker shares, as ``LLMOPS_MILVUS_URI`` gives a deployment:

1. **CPU per chunk**: the same ``--docs`` unique stdlib documents (6 partitions) through 1, then 2
   workers (ingest, embed, index and infer in each), each run in a fresh namespace after a
   warm-up batch. CPU-seconds (user + system, from /proc) of every process: the broker, the
   Milvus server and each worker, divided by the chunks indexed. Then ``--requests`` hybrid
   searches at 10/s from one client per partition, CPU per request the same way. On 2 shared cores wall time
   says little; CPU per chunk says what the coordination of two workers costs. Target: the
   2-worker figure within 10% of the 1-worker one.
2. **Rebalance pause**: 2 workers under a steady paced stream (``--pause-rate`` docs/s); a third
   worker joins, later one is killed with SIGKILL. The pause of an event is the longest gap
   between consecutive ``docs.embeddings`` records of any one partition around it (records
   stopped somewhere and flowed again everywhere); the quiet baseline is measured the same way
   before the first event. Target: <= 10 s with the session timeout stated
   (``LLMOPS_KAFKA_SESSION_TIMEOUT_S``, ``--session-timeout``).

Prints JSON; writes bench/out/scale_out.json. Run it niced on a shared machine:

    nice -n 5 python bench/scale_out.py --docs 1500 --kafka-port 19392 --milvus-port 19531
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline_throughput import cpu_seconds, publish_paced  # noqa: E402

from streams.index.milvus_server import MilvusLiteServer  # noqa: E402
from streams.inference.client import InferenceClient, client_ids_per_partition  # noqa: E402
from streams.ingest.corpus import stdlib_documents  # noqa: E402
from streams.ingest.publish import encode_document, publish_records  # noqa: E402
from streams.kafka.admin import ensure_topics, offsets, read_range  # noqa: E402
from streams.kafka.broker import EmbeddedKafka  # noqa: E402
from streams.kafka.progress import wait_for_stages  # noqa: E402
from streams.kafka.topics import Topics  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.worker_process import start_worker, stop_worker  # noqa: E402

OUT = ROOT / "bench" / "out"
AGENTS = ("ingest", "embed", "index", "infer")
WARM_UP_DOCS = 60
Records = list[tuple[bytes | None, bytes | None]]


def unique_records(count: int, offset: int, tag: str) -> Records:
    """Stdlib documents made unique by a last line (no copy is skipped as a duplicate)."""
    documents = list(stdlib_documents(limit=count + offset))[offset:]
    return [encode_document({**d, "text": f"{d['text']}\n\n({tag} {i})"}) for i, d in enumerate(documents)]


class Run:
    """Workers of one namespace sharing the broker and the Milvus server."""

    def __init__(self, base: Settings, label: str) -> None:
        self.settings = base.model_copy(update={"namespace": f"bench-scale-{label}-{uuid.uuid4().hex[:6]}"})
        self.topics = Topics(self.settings.namespace)
        self.workers: list[subprocess.Popen[bytes]] = []
        asyncio.run(ensure_topics(self.settings))

    def add_worker(self) -> subprocess.Popen[bytes]:
        log = self.settings.data_dir / "logs" / f"{self.settings.namespace}-{len(self.workers)}.log"
        self.workers.append(start_worker(self.settings, log, AGENTS))
        return self.workers[-1]

    def alive(self) -> bool:
        return any(worker.poll() is None for worker in self.workers)

    def publish_and_wait(self, records: Records) -> None:
        asyncio.run(publish_records(self.settings, records))
        self.wait()

    def wait(self, timeout: float = 1800.0) -> None:
        _, raw_end = asyncio.run(offsets(self.settings, [self.topics.docs_raw]))
        ok, _ = wait_for_stages(self.settings, [AGENTS], raw_end, timeout, alive=self.alive)
        if not ok:
            raise RuntimeError(f"the workers did not catch up; logs in {self.settings.data_dir / 'logs'}")

    def chunks(self) -> int:
        return sum(asyncio.run(offsets(self.settings, [self.topics.docs_embeddings]))[1].values())

    def stop(self) -> list[int]:
        return [stop_worker(worker) for worker in self.workers]


async def ask_paced(settings: Settings, count: int, rate: float) -> int:
    """``count`` hybrid searches at ``rate``/s from one client per partition; how many were answered."""
    clients = [InferenceClient(settings, i) for i in client_ids_per_partition("bench-client", settings.partitions)]
    for client in clients:
        await client.start()
    questions = ["how do I read a zip file?", "parse command line options", "format a date", "decode json"]
    try:
        pending = []
        for i in range(count):
            client = clients[i % len(clients)]
            request = client.request(questions[i % len(questions)], "search", top_k=5, retrieval="hybrid")
            pending.append(await client.send(request))
            await asyncio.sleep(1 / rate)
        done, _ = await asyncio.wait(pending, timeout=300)
        return sum(1 for f in done if not f.cancelled() and f.exception() is None)
    finally:
        for client in clients:
            await client.stop()


def cpu_delta(pids: dict[str, int], work: Callable[[], Any]) -> tuple[dict[str, float], float]:
    """CPU-seconds each process spent while ``work()`` ran, and the wall seconds."""
    before, started = {k: cpu_seconds(p) for k, p in pids.items()}, time.monotonic()
    work()
    return {k: round(cpu_seconds(p) - before[k], 2) for k, p in pids.items()}, round(time.monotonic() - started, 1)


def per_unit(cpu: dict[str, float], units: int) -> dict[str, Any]:
    """CPU of every process, in all and in ms per unit (chunk or request), workers apart."""
    workers = sum(v for k, v in cpu.items() if k.startswith("worker"))
    return {
        "cpu_s": cpu,
        "cpu_s_total": round(sum(cpu.values()), 2),
        "cpu_ms_per_unit": round(sum(cpu.values()) / max(units, 1) * 1000, 2),
        "worker_cpu_ms_per_unit": round(workers / max(units, 1) * 1000, 2),
    }


def cpu_per_unit(
    base: Settings, workers: int, records: Records, others: dict[str, int], requests: int
) -> dict[str, Any]:
    """``records`` through ``workers`` workers, then ``requests`` searches: CPU of every process per unit."""
    run = Run(base, f"w{workers}")
    answered: list[int] = []
    try:
        for _ in range(workers):
            run.add_worker()
        run.publish_and_wait(unique_records(WARM_UP_DOCS, 4000, "warm-up"))  # models loaded, group formed
        pids = {**others, **{f"worker{i}": w.pid for i, w in enumerate(run.workers)}}
        chunks_before = run.chunks()
        cpu, wall = cpu_delta(pids, lambda: run.publish_and_wait(records))
        chunks = run.chunks() - chunks_before
        result: dict[str, Any] = {"workers": workers, "chunks_indexed": chunks, "wall_s": wall}
        result["per_chunk"] = per_unit(cpu, chunks)
        if requests:
            asyncio.run(ask_paced(run.settings, 12, 4.0))  # warm-up: the first searches load the collection
            asked, asked_wall = cpu_delta(
                pids, lambda: answered.append(asyncio.run(ask_paced(run.settings, requests, 10.0)))
            )
            result["requests"] = {"sent": requests, "answered": answered[0], "wall_s": asked_wall}
            result["per_request"] = per_unit(asked, requests)
    finally:
        result_codes = run.stop()
    result["exit_codes"] = result_codes
    return result


def longest_gaps(stamps: dict[int, list[int]], start_ms: int, end_ms: int) -> dict[int, float]:
    """Per partition: the longest gap (s) between consecutive records that overlaps [start, end]
    (a gap that began before the event and ended after it counts whole)."""
    gaps: dict[int, float] = {}
    for partition, times in stamps.items():
        overlapping = [b - a for a, b in itertools.pairwise(times) if b >= start_ms and a <= end_ms]
        gaps[partition] = max(overlapping, default=0) / 1000
    return gaps


def topic_stamps(settings: Settings, topic: str) -> list[tuple[int, bytes, int]]:
    """(partition, key, Kafka timestamp) of every record of ``topic``."""

    async def read() -> list[tuple[int, bytes, int]]:
        _, end = await offsets(settings, [topic])
        return [(m.partition, m.key or b"", m.timestamp) async for m in read_range(settings, {}, end)]

    return asyncio.run(read())


def embedding_stamps(embeddings: list[tuple[int, bytes, int]]) -> dict[int, list[int]]:
    """Kafka timestamps of the docs.embeddings records ``embeddings``, per partition, in order."""
    stamps: dict[int, list[int]] = {}
    for partition, _, stamp in embeddings:
        stamps.setdefault(partition, []).append(stamp)
    return {p: sorted(t) for p, t in stamps.items()}


def document_delays(
    embeddings: list[tuple[int, bytes, int]], raw: list[tuple[int, bytes, int]], since_ms: int
) -> list[tuple[int, float]]:
    """(publish ms, seconds to its first embedding) of every document published after ``since_ms``.

    A document published while its partition has no consumer waits out the pause: the delays of
    documents published around an event say how long records stood still, whatever the rate.
    """
    embedded: dict[bytes, int] = {}
    for _, key, stamp in embeddings:
        embedded[key] = min(stamp, embedded.get(key, stamp))
    published = [(stamp, key) for _, key, stamp in raw if stamp >= since_ms]
    return sorted((stamp, (embedded[key] - stamp) / 1000) for stamp, key in published if key in embedded)


def delay_after(delays: list[tuple[int, float]], start_ms: int, end_ms: int) -> dict[str, Any]:
    """The delays of documents published in [start, end): median, p99 and max (s)."""
    values = sorted(d for stamp, d in delays if start_ms <= stamp < end_ms)
    if not values:
        return {"documents": 0}
    return {
        "documents": len(values),
        "p50_s": round(values[len(values) // 2], 2),
        "p99_s": round(values[min(len(values) - 1, int(len(values) * 0.99))], 2),
        "max_s": round(values[-1], 2),
    }


def rebalance_pauses(base: Settings, rate: float, seconds: float, join_at: float, kill_at: float) -> dict[str, Any]:
    """2 workers under a paced stream; a third joins at ``join_at`` s, one is SIGKILLed at ``kill_at`` s."""
    run = Run(base, "pause")
    events: dict[str, int] = {}
    try:
        run.add_worker()
        run.add_worker()
        run.publish_and_wait(unique_records(WARM_UP_DOCS, 4000, "warm-up"))
        records = unique_records(int(rate * seconds), 0, "paced")
        publisher = threading.Thread(target=lambda: asyncio.run(publish_paced(run.settings, records, rate)))
        began = time.time()
        publisher.start()
        time.sleep(join_at)
        events["join"] = int(time.time() * 1000)
        run.add_worker()
        time.sleep(max(kill_at - (time.time() - began), 0))
        events["kill"] = int(time.time() * 1000)
        run.workers[0].kill()
        run.workers[0].wait()
        publisher.join()
        events["published"] = int(time.time() * 1000)
        run.wait()
    finally:
        codes = run.stop()
    # The paced records only (the warm-up batch is long done).
    topics = Topics(run.settings.namespace)
    embeddings = topic_stamps(run.settings, topics.docs_embeddings)  # read once, for both measures
    stamps = {p: [t for t in times if t >= began * 1000] for p, times in embedding_stamps(embeddings).items()}
    first = min(t for times in stamps.values() for t in times)
    windows = {
        "quiet": (first + 2_000, events["join"]),
        "join": (events["join"], events["kill"]),
        "kill": (events["kill"], events["published"]),  # records that resume in the drain count too
    }
    gaps = {name: longest_gaps(stamps, *window) for name, window in windows.items()}
    delays = document_delays(embeddings, topic_stamps(run.settings, topics.docs_raw), int(began * 1000))
    delay = {name: delay_after(delays, *window) for name, window in windows.items()}
    quiet = delay["quiet"].get("p50_s", 0.0)
    return {
        "docs_per_s": rate,
        "seconds": seconds,
        # A document published just after an event waits the whole pause (plus the usual delay).
        "pause_s": {
            name: round(delay[name]["max_s"] - quiet, 2) for name in ("join", "kill") if delay[name].get("max_s")
        },
        "document_delay_s": delay,
        "longest_gap_s": {name: max(g.values()) for name, g in gaps.items()},
        "longest_gap_s_per_partition": gaps,
        "exit_codes_after_kill": codes,
        "note": "join: from starting the third process (it loads its models first) to the kill",
    }


def ratio(runs: list[dict[str, Any]], section: str, key: str) -> float:
    return round(runs[1][section][key] / runs[0][section][key], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1500, help="documents of the CPU runs (0: rebalance pauses only)")
    parser.add_argument(
        "--kafka-port", type=int, default=19392, help="its own broker (and the port after, its controller)"
    )
    parser.add_argument("--milvus-port", type=int, default=19531)
    parser.add_argument("--session-timeout", type=float, default=6.0, help="LLMOPS_KAFKA_SESSION_TIMEOUT_S")
    parser.add_argument("--embed-workers", type=int, default=1, help="ONNX threads per worker (both runs)")
    parser.add_argument(
        "--requests", type=int, default=300, help="hybrid searches at 10/s after the documents (0: none)"
    )
    parser.add_argument("--pause-rate", type=float, default=0.0, help="docs/s of the paced stream (0: skip)")
    parser.add_argument("--pause-seconds", type=float, default=90.0)
    parser.add_argument("--keep-logs", type=Path, help="copy the workers' logs here before the run's data is removed")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    broker = EmbeddedKafka(ROOT / ".llmops" / "kafka", port=args.kafka_port, heap="512m")
    broker.stop()
    shutil.rmtree(broker.storage_dir, ignore_errors=True)
    broker.start(timeout=180)
    milvus = MilvusLiteServer(data / "milvus", args.milvus_port)
    try:
        milvus.start()
        assert milvus.pid is not None
        base = Settings(
            bootstrap_servers=broker.bootstrap,
            data_dir=data,
            models_dir=ROOT / ".llmops" / "models",
            milvus_uri=milvus.uri,
            partitions=6,
            near_dup_enabled=False,
            embed_workers=args.embed_workers,
            kafka_session_timeout_s=args.session_timeout,
        )
        others = {"broker": int(broker.pid_file.read_text().strip()), "milvus_server": milvus.pid}
        records = unique_records(args.docs, 0, "bench")
        load_before = os.getloadavg()
        runs = [cpu_per_unit(base, n, records, others, args.requests) for n in (1, 2)] if args.docs else []
        report: dict[str, Any] = {
            "benchmark": "scale_out",
            "docs": args.docs,
            "partitions": 6,
            "embed_workers_per_worker": args.embed_workers,
            "session_timeout_s": args.session_timeout,
            "heartbeat_s": base.kafka_heartbeat_s,
            "runs": runs,
            "cpu_per_chunk_2_over_1": ratio(runs, "per_chunk", "cpu_ms_per_unit") if runs else None,
            "worker_cpu_per_chunk_2_over_1": ratio(runs, "per_chunk", "worker_cpu_ms_per_unit") if runs else None,
            "cpu_per_request_2_over_1": ratio(runs, "per_request", "cpu_ms_per_unit")
            if runs and args.requests
            else None,
            "load_average_before": load_before,
            "load_average_after_cpu_runs": os.getloadavg(),
        }
        if args.pause_rate > 0:
            report["rebalance"] = rebalance_pauses(
                base, args.pause_rate, args.pause_seconds, args.pause_seconds / 4, args.pause_seconds * 0.6
            )
            report["load_average_after"] = os.getloadavg()
    finally:
        milvus.stop()
        broker.stop()
        shutil.rmtree(broker.storage_dir, ignore_errors=True)
        if args.keep_logs and (data / "logs").is_dir():
            shutil.copytree(data / "logs", args.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(data, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "scale_out.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
