"""Replay throughput vs live pipeline throughput for the same range (target: >= 90%).

Each round publishes N stdlib documents to a fresh live namespace and runs the worker there
(the same agent set a replay runs), then replays that docs.raw range into a fresh replay
namespace with ``run_replay`` (copy, worker, wait), and measures both the same way: chunks
indexed / (last ``indexed_at`` - first raw Kafka timestamp), read from each side's Milvus
collection after its worker stopped. Rounds alternate live and replay, so a noisy neighbour
hurts both alike. Prints JSON and writes bench/out/replay_throughput.json.
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

from streams.index.embed import version_for  # noqa: E402
from streams.index.vectorstore import MilvusStore  # noqa: E402
from streams.ingest.corpus import stdlib_documents  # noqa: E402
from streams.ingest.publish import encode_document, publish_records  # noqa: E402
from streams.kafka.admin import ensure_topics, offsets  # noqa: E402
from streams.kafka.broker import EmbeddedKafka  # noqa: E402
from streams.kafka.progress import wait_for_stages  # noqa: E402
from streams.kafka.topics import Topics  # noqa: E402
from streams.replay.runner import REPLAY_AGENTS, ReplaySpec, replay_settings, run_replay  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.worker_process import start_worker, stop_worker  # noqa: E402

OUT = ROOT / "bench" / "out"


def indexed_rate(settings: Settings) -> dict[str, float]:
    """Chunks per second from the first raw timestamp to the last indexing, from the collection."""
    store = MilvusStore.from_settings(settings, version_for(settings))
    try:
        timings = np.array(store.timings())
    finally:
        store.close()
    span = (timings[:, 1].max() - timings[:, 0].min()) / 1000
    return {"chunks": len(timings), "seconds": round(float(span), 2), "chunks_per_s": round(len(timings) / span, 1)}


def live_run(base: Settings, documents: list[dict]) -> tuple[Settings, dict[str, float]]:
    """Publish to a fresh live namespace with its worker running; wait; measure."""
    live = base.model_copy(update={"namespace": f"bench-live-{uuid.uuid4().hex[:6]}"})
    live = live.model_copy(update={"data_dir": base.data_dir / "bench-replay" / live.namespace})
    asyncio.run(ensure_topics(live))
    worker = start_worker(live, live.data_dir / "worker.log", REPLAY_AGENTS)
    try:
        time.sleep(12)  # the worker joins its group before the clock starts (as a replay's worker does)
        asyncio.run(publish_records(live, [encode_document(d) for d in documents]))
        _, end = asyncio.run(offsets(live, [Topics(live.namespace).docs_raw]))
        if not wait_for_stages(live, [REPLAY_AGENTS], end, 900, alive=lambda: worker.poll() is None)[0]:
            raise RuntimeError(f"the live worker did not finish; see {live.data_dir / 'worker.log'}")
    finally:
        stop_worker(worker)
    return live, indexed_rate(live)


def replay_run(live: Settings) -> dict[str, float]:
    namespace = f"bench-rp-{uuid.uuid4().hex[:6]}"
    manifest = run_replay(live, ReplaySpec("docs.raw", namespace))
    if not manifest.caught_up:
        raise RuntimeError(f"the replay did not finish; see {live.data_dir}/replays/{namespace}/worker.log")
    return indexed_rate(replay_settings(live, namespace))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    base = Settings()
    EmbeddedKafka.from_settings(base).start(progress=lambda line: print(line, file=sys.stderr))
    documents = list(stdlib_documents(limit=args.docs))
    rounds = []
    for number in range(args.rounds):
        live, live_rate = live_run(base, documents)
        replay_rate = replay_run(live)
        ratio = round(replay_rate["chunks_per_s"] / live_rate["chunks_per_s"], 3)
        print(f"round {number + 1}: live {live_rate}, replay {replay_rate}, ratio {ratio}", file=sys.stderr)
        rounds.append({"live": live_rate, "replay": replay_rate, "replay_vs_live": ratio})
    ratios = sorted(r["replay_vs_live"] for r in rounds)
    report = {
        "benchmark": "replay_throughput",
        "docs": args.docs,
        "rounds": rounds,
        "replay_vs_live_median": ratios[len(ratios) // 2],
        "target": ">= 0.90",
        "cpu_count": os.cpu_count(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "replay_throughput.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
