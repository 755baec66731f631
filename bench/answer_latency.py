"""Search and rag latency, client send -> reply over Kafka, per retrieval mode, on an idle worker.

Runs the real broker and worker (ingest, embed, index, infer), indexes the documents the labelled
questions are about plus distractors (``--docs`` in all), trains and promotes the retrieval ranker
as ``make run`` does, waits for Milvus Lite to settle after the bulk writes, then sends the TEST
questions one after another at ``--rate`` per second: search in each mode (bm25, dense, hybrid,
ranked = hybrid + ranker) and rag (ranked retrieval + extractive answer + groundedness check).
Reports the round trip and the worker's own time per request (p50/p99).

Targets (issue 23): ranked search p50 <= 25 ms; extractive rag p50 <= 60 ms.

Run:  .venv/bin/python bench/answer_latency.py [--docs 1500] [--rate 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from inference_latency import settle, summary  # noqa: E402

from streams.cli.demo_inference import promote_demo_ranker, wait_for_ranker  # noqa: E402
from streams.evaluation.harness import packaged_questions, read_questions  # noqa: E402
from streams.inference.client import InferenceClient  # noqa: E402
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
WORK = ("embed_ms", "search_ms", "screen_ms", "generate_ms")


def corpus(docs: int) -> list[dict[str, Any]]:
    wanted = {d for split in ("dev", "test") for q in read_questions(packaged_questions(split)) for d in q.relevant}
    chosen = [d for d in stdlib_documents() if d["id"] in wanted]
    chosen += [d for d in stdlib_documents() if d["id"] not in wanted][: max(0, docs - len(chosen))]
    return chosen


async def paced(settings: Settings, questions: list[str], task: str, mode: str, rate: float) -> dict[str, Any]:
    """One request at a time, started every 1/rate s: round trip and the worker's work per request."""
    round_trips, work = [], []
    async with InferenceClient(settings, client_id=f"bench-{task}-{mode}") as client:
        for question in questions:
            started = time.perf_counter()
            response = await client.ask(question, task, timeout=60, retrieval=mode)
            round_trips.append((time.perf_counter() - started) * 1000)
            if response["status"] != "OK":
                raise RuntimeError(f"{task}/{mode}: {response['status']} {response['error']}")
            work.append(sum(response["latency"][stage] for stage in WORK))
            await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - started)))
    return {
        "task": task,
        "mode": mode,
        "requests": len(questions),
        "round_trip_ms": summary(round_trips),
        "worker_work_ms": summary(work),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1500, help="documents to index (labelled ones first)")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second (idle: one at a time)")
    parser.add_argument("--questions", type=int, default=100, help="test questions per mode")
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    args = parser.parse_args()
    base = Settings()
    EmbeddedKafka.from_settings(base).start(progress=lambda line: print(line, file=sys.stderr))
    settings = base.model_copy(update={"namespace": f"bench-ans-{uuid.uuid4().hex[:6]}"})
    worker = start_worker(settings, settings.data_dir / "logs" / f"{settings.namespace}.log", AGENTS)
    questions = [q.question for q in read_questions(packaged_questions("test"))][: args.questions]
    report: dict[str, Any] = {"benchmark": "answer_latency", "docs": args.docs, "rate_per_s": args.rate, "runs": []}
    try:
        asyncio.run(ensure_topics(settings))
        asyncio.run(publish_records(settings, [encode_document(d) for d in corpus(args.docs)]))
        _, raw_end = asyncio.run(offsets(settings, [Topics(settings.namespace).docs_raw]))
        if not wait_for_stages(settings, [AGENTS], raw_end, 1800)[0]:
            raise RuntimeError("the worker did not index the documents")
        ranker = promote_demo_ranker(settings, log=lambda line: print(line, file=sys.stderr))
        asyncio.run(wait_for_ranker(settings, ranker["version"] if ranker else None))
        report["settled_after_s"] = round(asyncio.run(settle(settings, questions)), 1)
        asyncio.run(paced(settings, questions[:20], "search", "ranked", 50))  # warm-up
        for task, mode in [("search", m) for m in ("bm25", "dense", "hybrid", "ranked")] + [("rag", "ranked")]:
            result = asyncio.run(paced(settings, questions, task, mode, args.rate))
            print(json.dumps(result), file=sys.stderr)
            report["runs"].append(result)
    finally:
        stop_worker(worker)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "answer_latency.json").write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{'task':<7} {'mode':<7} {'round trip p50':>15} {'p99':>8} {'worker p50':>11}")
    for run in report["runs"]:
        rt, work = run["round_trip_ms"], run["worker_work_ms"]
        print(f"{run['task']:<7} {run['mode']:<7} {rt['p50']:>15.1f} {rt['p99']:>8.1f} {work['p50']:>11.1f}")


if __name__ == "__main__":
    main()
