"""Soak: the worker at a steady share of its maximum rate for a bounded time; lag and memory over time.

Runs the real worker (ingest, embed and index in one process) against the real broker and Milvus
Lite, in a fresh namespace:

1. **calibrate** (unless ``--max-docs-per-s`` is given): publish ``--calibration-docs`` stdlib
   documents at once; max rate = documents / (last indexed - first published), as in
   ``bench/pipeline_throughput.py``.
2. **soak**: publish stdlib documents (each copy with a new id and a unique last line, so none
   is skipped as a duplicate; near-duplicate detection off) at ``--fraction`` of that rate, open
   loop, for ``--minutes``. Every ``--sample-s`` seconds: consumer lag of each stage (end offset
   of its input topic minus its committed offset) and the worker's resident memory (VmRSS).
   With ``--id-space N`` the documents are updates of N ids instead of new documents, so the
   dedup state (one entry per distinct document, kept in memory) stops growing after N.

Bounded lag: the largest lag of the last third of the run is not above the largest of the first
third plus one sample period's worth of input. Memory: after ``--warm-up-s``, the median RSS of
the last third of the samples against the median of the first third (one sample is a poor
baseline: RSS swings by 100 MB with the batch in hand), and the least-squares slope in MB per
minute over the same samples. Prints JSON, writes bench/out/soak.{json,png}. Not a test:
it measures, and ``make soak`` runs it (10 minutes by default).

With ``--milvus-server PORT`` the vectors live in a ``milvus-lite server`` process of their own
(what ``LLMOPS_MILVUS_URI`` gives a deployment) instead of Milvus Lite inside the worker; that
process's memory is sampled and summarized beside the worker's.

    python bench/soak.py --minutes 10            # LLMOPS_BOOTSTRAP_SERVERS picks the broker
    python bench/soak.py --minutes 20 --id-space 2000 --milvus-server 19531
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline_throughput import publish_paced, run_pipeline  # noqa: E402

from streams.index.milvus_server import MilvusLiteServer  # noqa: E402
from streams.ingest.corpus import stdlib_documents  # noqa: E402
from streams.ingest.publish import encode_document  # noqa: E402
from streams.kafka.admin import committed_offsets, ensure_topics, offsets  # noqa: E402
from streams.kafka.broker import EmbeddedKafka  # noqa: E402
from streams.kafka.topics import Topics  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.worker_process import start_worker, stop_worker  # noqa: E402

OUT = ROOT / "bench" / "out"
AGENTS = ("embed", "index", "ingest")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def soak_records(corpus: list[dict[str, Any]], count: int, id_space: int | None) -> list[tuple[bytes, bytes]]:
    """``count`` documents cycling through the corpus, each with a unique last line.

    Ids are all new (``id_space`` None: the dedup state grows by one entry per document), or
    cycle through ``id_space`` ids (updates: the state stays bounded, so growth is not state).
    """
    records = []
    for n in range(count):
        doc = corpus[n % len(corpus)]
        doc_id = f"soak-{n if id_space is None else n % id_space}"
        records.append(encode_document({**doc, "id": doc_id, "text": f"{doc['text']}\n\n(soak copy {n})"}))
    return records


async def lags(settings: Settings) -> dict[str, int]:
    """Records each stage still has to commit: end offsets of its input minus the group's commits."""
    topics = Topics(settings.namespace)
    inputs = {"ingest": topics.docs_raw, "embed": topics.docs_clean, "index": topics.docs_embeddings}
    _, end = await offsets(settings, list(inputs.values()))
    committed = await committed_offsets(settings, topics.app_id(*AGENTS))
    return {
        stage: sum(end[tp] - committed.get(tp, 0) for tp in end if tp.topic == topic) for stage, topic in inputs.items()
    }


def soak(
    base: Settings,
    corpus: list[dict[str, Any]],
    rate: float,
    minutes: float,
    sample_s: float,
    id_space: int | None = None,
    store_pid: int | None = None,
):
    settings = base.model_copy(update={"namespace": f"soak-{uuid.uuid4().hex[:6]}", "near_dup_enabled": False})
    asyncio.run(ensure_topics(settings))
    log = settings.data_dir / "logs" / f"{settings.namespace}.log"
    worker = start_worker(settings, log, AGENTS)
    samples: list[dict[str, Any]] = []
    try:
        time.sleep(12)  # the worker loads the model and joins its group
        records = soak_records(corpus, int(rate * minutes * 60), id_space)
        started = time.monotonic()

        async def run() -> None:
            publishing = asyncio.create_task(publish_paced(settings, records, rate))
            while not publishing.done():
                await asyncio.sleep(sample_s)
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker died; see {log}")
                sample = {"t_s": round(time.monotonic() - started, 1), "rss_mb": round(rss_mb(worker.pid), 1)}
                if store_pid is not None:
                    sample["store_rss_mb"] = round(rss_mb(store_pid), 1)
                samples.append(sample | await lags(settings))
                print(json.dumps(samples[-1]), file=sys.stderr)
            await publishing

        asyncio.run(run())
        published_s = time.monotonic() - started
        drained = False
        while time.monotonic() - started < published_s + 300 and not drained:
            drained = not any(asyncio.run(lags(settings)).values())
            time.sleep(1)
        drain_s = round(time.monotonic() - started - published_s, 1)
    finally:
        stop_worker(worker)
    return settings, samples, len(records), round(published_s, 1), drained, drain_s


def summarize(samples: list[dict[str, Any]], rate: float, sample_s: float, warm_up_s: float) -> dict[str, Any]:
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    total = [sum(s[stage] for stage in ("ingest", "embed", "index")) for s in samples]
    warm = [s for s in samples if s["t_s"] >= warm_up_s] or samples
    memory = memory_growth(warm, "rss_mb")
    first_max = max(total[:third])
    last_max = max(total[-third:])
    return {
        "lag_records": {
            "max": max(total),
            "max_first_third": first_max,
            "max_last_third": last_max,
            "at_end_of_publishing": total[-1],
            "per_stage_max": {stage: max(s[stage] for s in samples) for stage in ("ingest", "embed", "index")},
        },
        "lag_bounded": last_max <= first_max + rate * sample_s,
        **memory,
        **({"store": memory_growth(warm, "store_rss_mb")} if "store_rss_mb" in warm[0] else {}),
        "samples": len(samples),
        "first_samples": first[:3],
        "last_samples": last[-3:],
    }


def memory_growth(warm: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Median RSS of the first and last third of the samples after warm-up, growth and slope."""
    third = max(1, len(warm) // 3)
    start = float(np.median([s[key] for s in warm[:third]]))
    end = float(np.median([s[key] for s in warm[-third:]]))
    growth = (end - start) / start
    slope = np.polyfit([s["t_s"] / 60 for s in warm], [s[key] for s in warm], 1)[0] if len(warm) > 1 else 0.0
    return {
        "rss_mb": {
            "warm_median_first_third": round(start, 1),
            "end_median_last_third": round(end, 1),
            "from_s": warm[0]["t_s"],
            "min": min(s[key] for s in warm),
            "max": max(s[key] for s in warm),
        },
        "rss_slope_mb_per_min": round(float(slope), 2),
        "rss_growth_pct": round(100 * growth, 1),
        "rss_growth_under_10pct": growth < 0.10,
    }


def plot(samples: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s["t_s"] / 60 for s in samples]
    fig, (memory, lag) = plt.subplots(2, 1, sharex=True, figsize=(8, 6))
    memory.plot(minutes, [s["rss_mb"] for s in samples], color="tab:red", label="worker")
    if "store_rss_mb" in samples[0]:
        memory.plot(minutes, [s["store_rss_mb"] for s in samples], color="tab:purple", label="milvus-lite server")
        memory.legend()
    memory.set_ylabel("RSS (MB)")
    memory.set_title(title)
    for stage in ("ingest", "embed", "index"):
        lag.plot(minutes, [s[stage] for s in samples], label=stage)
    lag.set_ylabel("consumer lag (records)")
    lag.set_xlabel("minutes")
    lag.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fraction", type=float, default=0.7, help="share of the maximum rate to publish at")
    parser.add_argument("--max-docs-per-s", type=float, default=None, help="skip calibration; use this maximum")
    parser.add_argument("--calibration-docs", type=int, default=800)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--warm-up-s", type=float, default=30.0, help="memory is compared from this time on")
    parser.add_argument("--id-space", type=int, default=None, help="cycle through this many document ids (updates)")
    parser.add_argument(
        "--milvus-server",
        type=int,
        default=None,
        metavar="PORT",
        help="keep the vectors in a `milvus-lite server` process on this port (as LLMOPS_MILVUS_URI would)",
    )
    args = parser.parse_args()
    base = Settings()
    with contextlib.ExitStack() as stack:
        store_pid = None
        if args.milvus_server:
            server = MilvusLiteServer(base.data_dir / f"soak-milvus-{uuid.uuid4().hex[:6]}", args.milvus_server)
            server.start()
            stack.callback(server.stop)
            store_pid = server.pid
            base = base.model_copy(update={"milvus_uri": server.uri})
        run_soak(args, base, store_pid)


def run_soak(args: argparse.Namespace, base: Settings, store_pid: int | None) -> None:
    EmbeddedKafka.from_settings(base).start(progress=lambda line: print(line, file=sys.stderr))
    corpus = list(stdlib_documents())
    calibration = None
    max_rate = args.max_docs_per_s
    if max_rate is None:
        calibration = run_pipeline(base, corpus[: args.calibration_docs], near_dup_enabled=False)
        max_rate = calibration["docs_per_s"]
        print(f"calibration: {calibration}", file=sys.stderr)
    rate = max_rate * args.fraction
    settings, samples, published, published_s, drained, drain_s = soak(
        base, corpus, rate, args.minutes, args.sample_s, args.id_space, store_pid
    )
    report = {
        "benchmark": "soak",
        "minutes": args.minutes,
        "max_docs_per_s": max_rate,
        "calibration": calibration,
        "fraction": args.fraction,
        "id_space": args.id_space,
        "vector_store": "milvus-lite server process" if store_pid else "Milvus Lite in the worker",
        "docs_per_s": round(rate, 1),
        "published_docs": published,
        "publishing_s": published_s,
        "drained_after_publishing": drained,
        "drain_s": drain_s,
        **summarize(samples, rate, args.sample_s, args.warm_up_s),
        "namespace": settings.namespace,
        "cpu_count": os.cpu_count(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "soak.json").write_text(json.dumps(report, indent=2))
    title = f"soak: {report['docs_per_s']} docs/s for {args.minutes:g} min" + (
        f", updates of {args.id_space} ids" if args.id_space else ", new documents"
    )
    plot(samples, OUT / "soak.png", title)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
