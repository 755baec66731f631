"""Search, classify and rag latency, client send -> reply over Kafka: idle, and while the worker indexes.

Runs the real broker and worker (ingest, embed, index, infer), indexes the documents the labelled
questions are about plus distractors (``--docs`` in all) and times that bulk load: its documents
per second are the worker's **maximum indexing rate** here. Then it trains and promotes the
retrieval ranker and the stdlib-topic classifier as ``make run`` does, waits for Milvus Lite to
settle after the bulk writes, and sends the TEST questions one after another at ``--rate`` per
second: search in each mode (bm25, dense, hybrid, ranked = hybrid + ranker), rag (ranked
retrieval + extractive answer + groundedness check) and classify. It does so twice:

1. **idle**: nothing else runs in the worker;
2. **mixed**: the same requests while new documents (stdlib docstrings not indexed yet, so dedup
   keeps them) are published at ``--load-share`` (default 0.5) of the maximum rate, so the same
   worker cleans, embeds and indexes them while it answers.

Reports per task and mode the round trip and the worker's own time per request (p50/p99) side by
side for both phases, with the mixed/idle ratio; the documents actually published per second
during the mixed phase; the CPU-seconds the worker used in each phase (from /proc, robust to
neighbours' load); and how long the worker took to catch up with the load once it stopped.

Targets: issue 23, ranked search p50 <= 25 ms idle and extractive rag p50 <= 60 ms; issue 20,
search and classify p50 <= 15 ms idle, p50 <= 25 ms and p99 <= 60 ms mixed.

Run:  .venv/bin/python bench/answer_latency.py [--docs 1500] [--rate 10] [--load-share 0.5] [--json]
      [--tasks classify] [--phases idle]

``--tasks classify`` runs classify alone (no ranker training, no wait for Milvus Lite to settle) and
``--phases idle`` the idle phase alone: a quick loop while working on one figure. The report then
has only those rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from background import Background  # noqa: E402
from confluent_kafka import Producer  # noqa: E402
from inference_latency import settle, summary  # noqa: E402
from pipeline_throughput import cpu_seconds  # noqa: E402

from streams.cli.demo_inference import promote_demo_classifier, promote_demo_ranker, wait_for_ranker  # noqa: E402
from streams.evaluation.harness import packaged_questions, read_questions  # noqa: E402
from streams.inference.client import InferenceClient  # noqa: E402
from streams.ingest.corpus import stdlib_documents  # noqa: E402
from streams.ingest.publish import encode_document, publish_records  # noqa: E402
from streams.kafka.admin import ensure_topics, offsets  # noqa: E402
from streams.kafka.broker import EmbeddedKafka  # noqa: E402
from streams.kafka.progress import wait_for_stages  # noqa: E402
from streams.kafka.rdkafka import rdkafka_config  # noqa: E402
from streams.kafka.topics import Topics  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.worker_process import start_worker, stop_worker  # noqa: E402

OUT = ROOT / "bench" / "out"
AGENTS = ("embed", "index", "infer", "ingest")
WORK = ("embed_ms", "search_ms", "classify_ms", "screen_ms", "generate_ms")
RUNS = [("search", m) for m in ("bm25", "dense", "hybrid", "ranked")] + [("rag", "ranked"), ("classify", "-")]
LOAD_WARMUP_S = 5.0  # the load runs this long before the mixed phase's first request


def corpus(docs: int) -> tuple[list[dict[str, Any]], Iterator[dict[str, Any]]]:
    """(the documents to index first: the labelled ones and distractors; the rest, for the load)."""
    wanted = {d for split in ("dev", "test") for q in read_questions(packaged_questions(split)) for d in q.relevant}
    chosen = [d for d in stdlib_documents() if d["id"] in wanted]
    chosen += [d for d in stdlib_documents() if d["id"] not in wanted][: max(0, docs - len(chosen))]
    taken = {d["id"] for d in chosen}
    return chosen, (d for d in stdlib_documents() if d["id"] not in taken)


class Load(Background):
    """Publishes ``documents`` to docs.raw at ``rate`` per second from a thread, until stopped."""

    def __init__(self, settings: Settings, documents: Iterator[dict[str, Any]], rate: float) -> None:
        super().__init__("bench-load")
        self.settings, self.documents, self.rate = settings, documents, rate
        self.sent = 0
        self.seconds = 0.0

    def _run(self) -> None:
        producer = Producer(rdkafka_config(self.settings, **{"linger.ms": 5}))
        topic = Topics(self.settings.namespace).docs_raw
        started = time.perf_counter()
        for document in self.documents:
            delay = started + self.sent / self.rate - time.perf_counter()
            if self._stop.wait(max(0.0, delay)):
                break
            key, value = encode_document(document)
            producer.produce(topic, value, key)
            producer.poll(0)
            self.sent += 1
        self.seconds = time.perf_counter() - started
        producer.flush(30)


async def paced(settings: Settings, questions: list[str], task: str, mode: str, rate: float) -> dict[str, Any]:
    """One request at a time, started every 1/rate s: round trip and the worker's work per request."""
    round_trips, work, stages = [], [], []
    options = {} if task == "classify" else {"retrieval": mode}
    async with InferenceClient(settings, client_id=f"bench-{task}-{mode}") as client:
        for question in questions:
            started, sent_ms = time.perf_counter(), time.time() * 1000
            response = await client.ask(question, task, timeout=60, **options)
            round_trips.append((time.perf_counter() - started) * 1000)
            # Where the round trip went, on the wall clock (ms): the reply's hop from the worker's
            # response to the client's loop, and the client's own send (request built, queued, stamped by librdkafka).
            hops = {
                "reply_hop_ms": float(response["received_at_ms"] - response["created_at_ms"]),
                "client_send_ms": float(response["created_at_ms"] - sent_ms) - response["latency"]["total_ms"],
            }
            if response["status"] != "OK":
                raise RuntimeError(f"{task}/{mode}: {response['status']} {response['error']}")
            work.append(sum(response["latency"][stage] for stage in WORK))
            stages.append(response["latency"] | hops)
            await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - started)))
    return {
        "task": task,
        "mode": mode,
        "requests": len(questions),
        "round_trip_ms": summary(round_trips),
        "worker_work_ms": summary(work),
        # p50 of each stage the response reports; total_ms runs from the request's send (its record
        # timestamp) to the response's creation, so the round trip minus it is the reply's hop.
        "stages_p50_ms": {name: summary([s[name] for s in stages])["p50"] for name in stages[0]} if stages else {},
    }


def phase(
    settings: Settings, worker_pid: int, questions: list[str], rate: float, tasks: list[tuple[str, str]]
) -> dict[str, Any]:
    """Every task and mode of ``tasks`` once, paced; with the worker's CPU-seconds over the phase."""
    cpu_before, started = cpu_seconds(worker_pid), time.perf_counter()
    runs = []
    for task, mode in tasks:
        result = asyncio.run(paced(settings, questions, task, mode, rate))
        print(json.dumps(result), file=sys.stderr)
        runs.append(result)
    seconds = time.perf_counter() - started
    return {"runs": runs, "seconds": round(seconds, 1), "worker_cpu_s": round(cpu_seconds(worker_pid) - cpu_before, 1)}


def index_all(settings: Settings, timeout: float) -> float:
    """Wait until the worker has indexed everything on docs.raw; returns the seconds waited."""
    started = time.perf_counter()
    _, raw_end = asyncio.run(offsets(settings, [Topics(settings.namespace).docs_raw]))
    if not wait_for_stages(settings, [AGENTS], raw_end, timeout)[0]:
        raise RuntimeError("the worker did not index the documents")
    return time.perf_counter() - started


def ratio(mixed: float, idle: float) -> float:
    return round(mixed / idle, 2) if idle else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1500, help="documents to index (labelled ones first)")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second (one at a time)")
    parser.add_argument("--questions", type=int, default=100, help="test questions per task and mode")
    parser.add_argument("--load-share", type=float, default=0.5, help="indexing load, share of the maximum rate")
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    parser.add_argument("--tasks", default="search,rag,classify", help="comma-separated: search, rag, classify")
    parser.add_argument("--phases", default="idle,mixed", help="comma-separated: idle, mixed")
    args = parser.parse_args()
    tasks = [(task, mode) for task, mode in RUNS if task in args.tasks.split(",")]
    phases = args.phases.split(",")
    if not tasks or not set(phases) <= {"idle", "mixed"} or not phases:
        parser.error("--tasks names search, rag or classify; --phases names idle or mixed")
    searching = any(task != "classify" for task, _ in tasks)
    base = Settings()
    broker = EmbeddedKafka.from_settings(base)
    started_here = broker.status().pid is None  # a broker this bench starts, it stops
    broker.start(progress=lambda line: print(line, file=sys.stderr))
    settings = base.model_copy(update={"namespace": f"bench-ans-{uuid.uuid4().hex[:6]}"})
    worker = start_worker(settings, settings.data_dir / "logs" / f"{settings.namespace}.log", AGENTS)
    questions = [q.question for q in read_questions(packaged_questions("test"))][: args.questions]
    first, rest = corpus(args.docs)
    report: dict[str, Any] = {"benchmark": "answer_latency", "docs": len(first), "rate_per_s": args.rate}
    try:
        asyncio.run(ensure_topics(settings))
        # One document through every stage first: the bulk load's time excludes the worker's start.
        asyncio.run(publish_records(settings, [encode_document(first[0])]))
        index_all(settings, 600)
        started = time.perf_counter()
        asyncio.run(publish_records(settings, [encode_document(d) for d in first[1:]]))
        index_all(settings, 1800)
        max_rate = (len(first) - 1) / (time.perf_counter() - started)
        report["max_index_rate_docs_per_s"] = round(max_rate, 1)
        if searching:
            ranker = promote_demo_ranker(settings, log=lambda line: print(line, file=sys.stderr))
            asyncio.run(wait_for_ranker(settings, ranker["version"] if ranker else None))
        promote_demo_classifier(settings, log=lambda line: print(line, file=sys.stderr))
        if searching:
            report["settled_after_s"] = round(asyncio.run(settle(settings, questions)), 1)
            asyncio.run(paced(settings, questions[:20], "search", "ranked", 50))  # warm-up
        asyncio.run(paced(settings, questions[:20], "classify", "-", 50))
        if "idle" in phases:
            report["idle"] = phase(settings, worker.pid, questions, args.rate, tasks)
        if "mixed" in phases:
            load_rate = args.load_share * max_rate
            with Load(settings, rest, load_rate) as load:
                time.sleep(LOAD_WARMUP_S)
                report["mixed"] = phase(settings, worker.pid, questions, args.rate, tasks)
            report["load"] = {
                "target_docs_per_s": round(load_rate, 1),
                "published_docs_per_s": round(load.sent / load.seconds, 1) if load.seconds else 0.0,
                "published_docs": load.sent,
                "caught_up_after_s": round(index_all(settings, 600), 1),
            }
    finally:
        stop_worker(worker)
        if started_here:
            broker.stop()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "answer_latency.json").write_text(json.dumps(report, indent=2))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"max indexing rate {report['max_index_rate_docs_per_s']} docs/s")
    if "load" in report:
        load = report["load"]
        print(
            f"mixed load {load['published_docs_per_s']} docs/s ({load['published_docs']} docs, caught up "
            f"{load['caught_up_after_s']} s after the phase)"
        )
    for name in phases:
        print(f"worker CPU-s {name} {report[name]['worker_cpu_s']} over {report[name]['seconds']} s")
    if phases != ["idle", "mixed"]:
        print(f"{'task':<9}{'mode':<7}{'phase':<7}{'p50':>7}{'p99':>7}{'work p50':>9}{'p99':>7}")
        for name in phases:
            for run in report[name]["runs"]:
                trip, work = run["round_trip_ms"], run["worker_work_ms"]
                print(
                    f"{run['task']:<9}{run['mode']:<7}{name:<7}{trip['p50']:>7.1f}{trip['p99']:>7.1f}"
                    f"{work['p50']:>9.1f}{work['p99']:>7.1f}"
                )
        return
    print(
        f"{'task':<9}{'mode':<7}{'idle p50':>9}{'p99':>7}{'mixed p50':>10}{'p99':>7}{'ratio p50':>10}{'p99':>6}"
        f"{'work idle p50':>14}{'mixed':>7}"
    )
    for idle, mixed in zip(report["idle"]["runs"], report["mixed"]["runs"], strict=True):
        a, b = idle["round_trip_ms"], mixed["round_trip_ms"]
        print(
            f"{idle['task']:<9}{idle['mode']:<7}{a['p50']:>9.1f}{a['p99']:>7.1f}{b['p50']:>10.1f}{b['p99']:>7.1f}"
            f"{ratio(b['p50'], a['p50']):>10.2f}{ratio(b['p99'], a['p99']):>6.2f}"
            f"{idle['worker_work_ms']['p50']:>14.1f}{mixed['worker_work_ms']['p50']:>7.1f}"
        )


if __name__ == "__main__":
    main()
