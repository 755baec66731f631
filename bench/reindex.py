"""Re-index throughput of a candidate index while production serves search at 10 requests/s.

One worker (ingest, embed, index, infer) indexes, with the live pipeline (int8), every stdlib
document of the modules that hold the relevant documents of the first ``--questions`` answerable
questions of the packaged TEST split. Then, in the same run: production search at an open-loop 10 requests/s for
``--idle-seconds`` (the idle baseline), then a candidate index version (fp32 embedder) is
registered and searches continue at 10 requests/s until its build has committed every docs.raw
record. Reported: the build's records/s and chunks/s, search p50/p99 idle vs during the build,
and the worker's CPU seconds in each phase (robust to a shared machine); then
``llmops eval retrieval --index`` on those questions: production (int8) and the candidate
(fp32) side by side, and the gate's verdict. Prints JSON and writes bench/out/reindex.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.evaluation.harness import module_subset  # noqa: E402
from streams.index.embed import version_for  # noqa: E402
from streams.index.rebuild import committed_progress  # noqa: E402
from streams.index.spec import INDEX_MODEL, IndexSpec  # noqa: E402
from streams.index.vectorstore import MilvusStore  # noqa: E402
from streams.inference.client import InferenceClient, InferenceTimeout  # noqa: E402
from streams.ingest.publish import encode_document, publish_records  # noqa: E402
from streams.kafka.admin import ensure_topics, offsets  # noqa: E402
from streams.kafka.broker import EmbeddedKafka  # noqa: E402
from streams.kafka.progress import wait_for_stages  # noqa: E402
from streams.kafka.topics import Topics  # noqa: E402
from streams.models.lifecycle import load_registry, promote, register_index  # noqa: E402
from streams.models.registry import Stage  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.worker_process import start_worker, stop_worker  # noqa: E402

OUT = ROOT / "bench" / "out"
AGENTS = ("embed", "index", "infer", "ingest")
QUERIES = ["delete a directory recursively", "parse command line options", "read a csv file", "encode json"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its waited-for children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def summary(latencies: list[float]) -> dict[str, float]:
    data = np.asarray(latencies)
    return {
        "requests": len(latencies),
        "p50_ms": round(float(np.percentile(data, 50)), 1),
        "p99_ms": round(float(np.percentile(data, 99)), 1),
    }


async def search_load(settings: Settings, until: Any, rate: float = 10.0) -> tuple[list[float], int]:
    """Open-loop searches at ``rate``/s until ``until()`` is true: (latencies in ms of OK answers, failures).

    ``until`` is polled once a second by a task of its own: polled in the sending loop, its broker
    round trips (the build's committed offsets) held back the sends (4 searches/s, not 10, in the
    first runs' build phase).
    """
    latencies: list[float] = []
    failures = 0
    done = asyncio.Event()

    async def poll() -> None:
        while True:
            if await until():
                done.set()
                return
            await asyncio.sleep(1.0)

    async def one(client: InferenceClient, text: str) -> None:
        nonlocal failures
        started = time.perf_counter()
        try:
            response = await client.ask(text, "search", timeout=60.0, top_k=5)
        except InferenceTimeout:  # counted as failed: on a saturated machine one may wait longer than 60 s
            failures += 1
            return
        if response["status"] == "OK":
            latencies.append((time.perf_counter() - started) * 1000)
        else:
            failures += 1

    async with InferenceClient(settings) as client:
        tasks = []
        n = 0
        next_at = time.perf_counter()
        poller = asyncio.create_task(poll())
        while not done.is_set():
            tasks.append(asyncio.create_task(one(client, QUERIES[n % len(QUERIES)])))
            n += 1
            next_at += 1 / rate
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.gather(poller, *tasks)
    return latencies, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=60)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    args = parser.parse_args()
    base = Settings()
    EmbeddedKafka.from_settings(base).start(progress=lambda line: print(line, file=sys.stderr))
    settings = base.model_copy(update={"namespace": f"bench-reindex-{uuid.uuid4().hex[:6]}"})
    settings = settings.model_copy(update={"data_dir": base.data_dir / "bench-reindex" / settings.namespace})
    asyncio.run(ensure_topics(settings))
    load_at_start = os.getloadavg()
    worker = start_worker(settings, settings.data_dir / "worker.log", AGENTS)
    try:
        documents, questions = module_subset("test", args.questions)
        questions_file = settings.data_dir / "questions.jsonl"
        questions_file.write_text("".join(json.dumps(q) + "\n" for q in questions))
        asyncio.run(publish_records(settings, [encode_document(d) for d in documents]))
        _, raw_end = asyncio.run(offsets(settings, [Topics(settings.namespace).docs_raw]))
        ok, _ = wait_for_stages(settings, [AGENTS], raw_end, 1800.0, alive=lambda: worker.poll() is None)
        assert ok, "the live pipeline did not index the documents"
        while asyncio.run(load_registry(settings)).production(INDEX_MODEL) is None:
            time.sleep(1)

        async def idle_phase() -> tuple[list[float], int]:
            stop_at = time.monotonic() + args.idle_seconds

            async def until() -> bool:
                return time.monotonic() >= stop_at

            return await search_load(settings, until)

        cpu0, wall0 = cpu_seconds(worker.pid), time.monotonic()
        idle, idle_failures = asyncio.run(idle_phase())
        cpu1, wall1 = cpu_seconds(worker.pid), time.monotonic()

        fp32 = settings.model_copy(update={"embed_model": "fp32"})
        spec = IndexSpec("fp32", version_for(fp32))
        candidate = asyncio.run(register_index(settings, spec, actor="bench"))

        async def build_phase() -> tuple[list[float], int]:
            async def until() -> bool:
                done, total = await committed_progress(settings, candidate.version)
                return total > 0 and done >= total

            return await search_load(settings, until)

        building, build_failures = asyncio.run(build_phase())
        cpu2, wall2 = cpu_seconds(worker.pid), time.monotonic()
        records = asyncio.run(committed_progress(settings, candidate.version))[1]
        asyncio.run(promote(settings, INDEX_MODEL, candidate.version, Stage.QA, actor="bench"))
        command = ["eval", "retrieval", str(questions_file), "--index", candidate.version, "--modes", "hybrid"]
        command += ["--timeout", "180"]  # per answer: a saturated machine answered some after more than 30 s
        evaluation = subprocess.run(
            [sys.executable, "-m", "streams.cli", *command, "--json"],
            capture_output=True,
            text=True,
            env={**os.environ, **settings.to_env()},
            check=False,
        )
    finally:
        stop_worker(worker)
    store = MilvusStore.from_settings(spec.settings_for(settings), candidate.version)
    try:
        store.flush()
        chunks = store.count()
    finally:
        store.close()
    build_seconds = wall2 - wall1
    report = {
        "benchmark": "reindex",
        "docs": len(documents),
        "questions": len(questions),
        "candidate": candidate.short,
        "build": {
            "docs_raw_records": records,
            "chunks": chunks,
            "seconds": round(build_seconds, 1),
            "records_per_s": round(records / build_seconds, 2),
            "chunks_per_s": round(chunks / build_seconds, 2),
            "worker_cpu_seconds": round(cpu2 - cpu1, 1),
        },
        "search_idle": {
            **summary(idle),
            "failed": idle_failures,
            "requests_per_s": round((len(idle) + idle_failures) / (wall1 - wall0), 2),
            "worker_cpu_s_per_s": round((cpu1 - cpu0) / (wall1 - wall0), 3),
        },
        "search_during_build": {
            **summary(building),
            "failed": build_failures,
            "requests_per_s": round((len(building) + build_failures) / build_seconds, 2),
            "worker_cpu_s_per_s": round((cpu2 - cpu1) / build_seconds, 3),
        },
        "evaluation": json.loads(evaluation.stdout) if evaluation.stdout.strip() else evaluation.stderr[-2000:],
    }
    # CPU-seconds, robust to a shared machine: the build's own CPU per chunk is the worker's CPU
    # during the build less what serving the same search rate cost it per second when idle.
    idle_rate = (cpu1 - cpu0) / (wall1 - wall0)
    report["build"]["build_cpu_s_per_chunk"] = round((cpu2 - cpu1 - idle_rate * build_seconds) / max(chunks, 1), 4)
    report["machine"] = {
        "load_average_start": load_at_start,
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "reindex.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
