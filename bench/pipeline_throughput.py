"""End-to-end indexing: publish -> searchable throughput, freshness at half rate, worker memory.

Runs the real worker (ingest, embed and index agents in one process, as in the embedded
default) against the real broker and Milvus Lite, each run in a fresh namespace:

1. **max**: publish N stdlib documents at once; throughput = chunks indexed / (last indexed_at
   - first raw timestamp). Compared with the bare embedder on the same chunk texts, same run.
2. **one-at-a-time**: the same with LLMOPS_EMBED_BATCH_SIZE=1 (the embed agent takes one
   message per batch), for the micro-batching ratio.
3. **half rate**: publish paced at half of (1)'s document rate; freshness p50/p99 = indexed_at
   - raw Kafka timestamp per chunk. Twice: one document every 1/rate seconds (``docs``), and
   at the same mean rate with each document's gap in proportion to its tokens (``tokens``), so
   that the work arrives at an even half of the maximum rather than in the corpus's bursts
   (a stretch of long docstrings otherwise runs above the maximum for seconds at a time).

Also reports the worker's peak resident memory (VmHWM). Prints JSON, writes
bench/out/pipeline_throughput.{json,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.index.embed import OnnxEmbedder  # noqa: E402
from streams.index.vectorstore import MilvusStore  # noqa: E402
from streams.ingest.chunk import chunk_text, default_tokenizer  # noqa: E402
from streams.ingest.corpus import stdlib_documents  # noqa: E402
from streams.ingest.publish import encode_document, publish_records  # noqa: E402
from streams.kafka.admin import ensure_topics, offsets, producer  # noqa: E402
from streams.kafka.broker import EmbeddedKafka  # noqa: E402
from streams.kafka.progress import wait_for_stages  # noqa: E402
from streams.kafka.topics import Topics  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.worker_process import start_worker, stop_worker  # noqa: E402

OUT = ROOT / "bench" / "out"
# One worker process with every agent (the embedded default), or with --split ingest apart
# from embed+index (Milvus Lite needs index in the process that owns its file).
WORKERS: list[tuple[str, ...]] = [("embed", "index", "ingest")]
WARM_UP_MS = 10_000


def percentiles(values: np.ndarray) -> dict[str, int]:
    return {"p50": int(np.percentile(values, 50)), "p99": int(np.percentile(values, 99)), "max": int(values.max())}


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (less sensitive to neighbours than wall time)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_pipeline(
    base: Settings, documents: list[dict], rate: float | None = None, pace: str = "docs", **overrides: object
) -> dict:
    """One worker run in a fresh namespace; returns throughput, freshness and memory.

    ``rate``: documents/s on average (None: all at once); ``pace``: "docs" (even gaps) or
    "tokens" (gaps in proportion to each document's tokens).
    """
    settings = base.model_copy(update={"namespace": f"bench-e2e-{uuid.uuid4().hex[:6]}", **overrides})
    asyncio.run(ensure_topics(settings))
    logs = settings.data_dir / "logs"
    processes = [start_worker(settings, logs / f"{settings.namespace}-{'_'.join(w)}.log", w) for w in WORKERS]
    worker = processes[-1]  # the one that runs the embedder and Milvus Lite
    try:
        time.sleep(12)  # let the worker start and join its group before the clock starts
        records = [encode_document(d) for d in documents]
        if rate is None:
            asyncio.run(publish_records(settings, records))
        else:
            tokens = document_tokens(documents) if pace == "tokens" else None
            asyncio.run(publish_paced(settings, records, rate, None if tokens is None else tokens / tokens.mean()))
        _, raw_end = asyncio.run(offsets(settings, [Topics(settings.namespace).docs_raw]))
        ok, _ = wait_for_stages(settings, WORKERS, raw_end, 900, alive=lambda: all(p.poll() is None for p in processes))
        if not ok:
            raise RuntimeError(f"the worker did not finish; see {settings.data_dir}/logs/{settings.namespace}.log")
        memory = peak_rss_mb(worker.pid)
        cpu = sum(cpu_seconds(p.pid) for p in processes)
    finally:
        for process in processes:
            stop_worker(process)
    embedder_version = OnnxEmbedder.from_settings(settings).version
    store = MilvusStore.from_settings(settings, embedder_version)
    try:
        timings = store.timings()
    finally:
        store.close()
    raw = np.array([t[0] for t in timings]), np.array([t[1] for t in timings])
    span = (raw[1].max() - raw[0].min()) / 1000
    freshness = raw[1] - raw[0]
    steady = freshness[raw[0] >= raw[0].min() + WARM_UP_MS]
    return {
        "docs": len(documents),
        "pace": pace if rate else "all at once",
        "chunks_indexed": len(timings),
        "seconds": round(float(span), 2),
        "chunks_per_s": round(len(timings) / float(span), 1),
        "docs_per_s": round(len(documents) / float(span), 1),
        "freshness_ms": percentiles(freshness),
        "freshness_after_first_10s_ms": percentiles(steady) if len(steady) else None,
        "worker_peak_rss_mb": round(memory, 1),
        "worker_cpu_s": round(cpu, 2),
        # Per chunk: seconds since the first raw record, freshness in ms (for the plot, not the JSON).
        "series": ((raw[0] - raw[0].min()) / 1000, freshness),
    }


def document_tokens(documents: list[dict]) -> np.ndarray:
    """Tokens each document becomes (its chunks', specials included): the embedder's work."""
    tokenizer = default_tokenizer()
    return np.array([sum(c.token_count for c in chunk_text(d["text"], tokenizer, 128, 16)) for d in documents], float)


async def publish_paced(settings: Settings, records: list, rate: float, weights: np.ndarray | None = None) -> None:
    """One producer, open loop (no waiting on acks): record i is due ``weights[i-1]`` / ``rate`` s after i-1.

    ``weights`` average 1, so ``rate`` records/s on average; None: even gaps.
    """
    weights = np.ones(len(records)) if weights is None else weights
    client = producer(settings, linger_ms=0)
    await client.start()
    try:
        topic = Topics(settings.namespace).docs_raw
        started = time.monotonic()
        pending = []
        due = np.concatenate([[0.0], np.cumsum(weights)[:-1]]) / rate
        for index, (key, value) in enumerate(records):
            delay = started + due[index] - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(await client.send(topic, value=value, key=key))
        await asyncio.gather(*pending)
    finally:
        await client.stop()


def bare_embedder(settings: Settings, documents: list[dict]) -> float:
    texts = [c.text for d in documents for c in chunk_text(d["text"], default_tokenizer(), 128, 16)]
    embedder = OnnxEmbedder.from_settings(settings)
    embedder.embed(texts[:64])
    start = time.perf_counter()
    embedder.embed(texts)
    return len(texts) / (time.perf_counter() - start)


def write_report(report: dict) -> None:
    """Print the report as JSON and keep it as bench/out/<benchmark>.json (with the core count)."""
    report = {**report, "cpu_count": os.cpu_count()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{report['benchmark']}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--skip-single", action="store_true", help="skip the one-message-per-batch run")
    parser.add_argument("--split", action="store_true", help="run ingest in its own worker process")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/pipeline rounds (median reported)")
    parser.add_argument(
        "--freshness-rate",
        type=float,
        default=None,
        metavar="DOCS_PER_S",
        help="only the freshness run, published at this many documents/s (skips the max-rate rounds)",
    )
    parser.add_argument(
        "--pace",
        choices=("docs", "tokens"),
        default="tokens",
        help="with --freshness-rate: even gaps between documents, or gaps in proportion to their tokens",
    )
    args = parser.parse_args()
    if args.split:
        WORKERS[:] = [("ingest",), ("embed", "index")]
    base = Settings()
    EmbeddedKafka.from_settings(base).start(progress=lambda line: print(line, file=sys.stderr))
    documents = list(stdlib_documents(limit=args.docs))
    if args.freshness_rate:
        half = run_pipeline(base, documents, rate=args.freshness_rate, pace=args.pace)
        series = half.pop("series")
        plot({"rounds": [], "half_rate": half}, series, OUT / "pipeline_freshness.png")
        write_report({"benchmark": "pipeline_freshness", "rate_docs_per_s": args.freshness_rate, "run": half})
        return
    rounds = []
    for number in range(args.rounds):
        # Bare embedder and pipeline alternate, so a noisy neighbour hurts both alike.
        bare = bare_embedder(base, documents)
        full = run_pipeline(base, documents)
        full.pop("series")
        ratio = round(full["chunks_per_s"] / bare, 3)
        print(f"round {number + 1}: bare {bare:.1f} chunks/s, pipeline {full}, ratio {ratio}", file=sys.stderr)
        rounds.append({"bare_embedder_chunks_per_s": round(bare, 1), "max_rate": full, "pipeline_vs_bare": ratio})
    median_round = sorted(rounds, key=lambda r: r["pipeline_vs_bare"])[len(rounds) // 2]
    full = median_round["max_rate"]
    single = None if args.skip_single else run_pipeline(base, documents, embed_batch_size=1)
    if single:
        single.pop("series")
    print(f"pipeline, one message per embed batch: {single}", file=sys.stderr)
    half = run_pipeline(base, documents, rate=full["docs_per_s"] / 2)
    half.pop("series")
    print(f"pipeline, half rate, even gaps: {half}", file=sys.stderr)
    half_tokens = run_pipeline(base, documents, rate=full["docs_per_s"] / 2, pace="tokens")
    series = half_tokens.pop("series")
    print(f"pipeline, half rate, paced by tokens: {half_tokens}", file=sys.stderr)
    report = {
        "benchmark": "pipeline_throughput",
        "rounds": rounds,
        "pipeline_vs_bare_embedder_median": median_round["pipeline_vs_bare"],
        "one_message_per_embed_batch": single,
        "micro_batched_vs_one_at_a_time": round(full["chunks_per_s"] / single["chunks_per_s"], 2) if single else None,
        "half_rate": half,
        "half_rate_paced_by_tokens": half_tokens,
        "targets": {
            "pipeline_vs_bare_embedder": ">= 0.85",
            "half_rate_freshness_p99_ms": "<= 1000",
            "worker_peak_rss_mb": "<= 600",
        },
        "workers": WORKERS,
    }
    plot({**report, "half_rate": half_tokens}, series, OUT / "pipeline_throughput.png")
    write_report(report)


def plot(report: dict, series: tuple[np.ndarray, np.ndarray], path: Path) -> None:
    """Throughput per round (bare embedder vs pipeline) and each chunk's freshness over the paced run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = report["rounds"]
    figure, axes = plt.subplots(1, 2 if rounds else 1, figsize=(12 if rounds else 7, 4), dpi=110, squeeze=False)
    if rounds:
        positions = np.arange(len(rounds))
        bare = [r["bare_embedder_chunks_per_s"] for r in rounds]
        pipeline = [r["max_rate"]["chunks_per_s"] for r in rounds]
        axes[0][0].bar(positions - 0.2, bare, 0.4, label="bare embedder")
        axes[0][0].bar(positions + 0.2, pipeline, 0.4, label="pipeline, publish -> searchable")
        axes[0][0].set_xticks(positions, [f"round {i + 1}" for i in positions])
        axes[0][0].set_ylabel("chunks/s")
        axes[0][0].set_title("throughput (target: pipeline >= 0.85 x bare)")
        axes[0][0].legend(fontsize=8)
    axis = axes[0][-1]
    seconds, freshness = series
    axis.scatter(seconds, freshness, s=3, alpha=0.5)
    axis.axhline(1000, color="red", linestyle=":", label="target p99 1 s")
    axis.axhline(float(np.percentile(freshness, 99)), color="black", linestyle="--", label="p99 measured")
    axis.set_xlabel("seconds since the first document")
    axis.set_ylabel("freshness, ms (raw timestamp -> searchable)")
    axis.set_title(f"freshness at {report['half_rate']['docs_per_s']} docs/s, paced by {report['half_rate']['pace']}")
    axis.legend(fontsize=8)
    figure.tight_layout()
    OUT.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


if __name__ == "__main__":
    main()
