"""Request -> response latency over Kafka at fixed open-loop rates, saturation, and the in-process baseline.

Runs the real worker (all agents; the infer agent answers) against the real broker and Milvus
Lite, after indexing N stdlib documents and promoting a stdlib-topic classifier:

1. **open loop**: for each task (search, classify) and rate (10, 50, 100 requests/s), one client
   sends requests on a fixed schedule whatever the answers do, for S seconds; per request the
   round trip (send -> response in the client), the work the agent reports (embed + search +
   classify) and the **Kafka overhead** = round trip - work.
2. **saturation**: C requests kept in flight for S seconds; answered requests per second.
3. **in process**: after the worker stops, the same requests answered by the same
   ``InferenceService`` code in this process (same models, same Milvus Lite collection): the
   work alone, no Kafka.

The Kafka floor (a plain aiokafka two-hop echo through the same broker) is measured at the start
and again at the end, when the broker is warm, 100 echoes a second; and at each open-loop rate's
own spacing (``floor_at_rate_ms``), because on this VM an echo that finds every thread idle (one
every 100 ms) takes 1-2 ms longer than one every 10 ms: ``overhead_above_floor_p50_ms`` is what
the inference path adds to a bare aiokafka round trip at the same rate. The request/reply path
runs on librdkafka, so the same echo with librdkafka at all four ends (the echo in a thread of
its own, nothing in Python between its two hops) is timed at each rate's spacing too:
``overhead_above_rdkafka_floor_p50_ms`` is what the inference path adds to the fastest bare
round trip this broker and machine give.

Prints JSON and writes bench/out/inference_latency.{json,png}.
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
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pipeline_throughput import cpu_seconds  # noqa: E402

from streams.cli.demo_inference import promote_demo_classifier  # noqa: E402
from streams.index.embed import OnnxEmbedder, graph_for  # noqa: E402
from streams.index.vectorstore import MilvusStore  # noqa: E402
from streams.inference.client import InferenceClient, make_request  # noqa: E402
from streams.inference.service import InferenceService, ModelSet, load_classifiers  # noqa: E402
from streams.ingest.chunk import default_tokenizer_path  # noqa: E402
from streams.ingest.corpus import stdlib_documents  # noqa: E402
from streams.ingest.publish import encode_document, publish_records  # noqa: E402
from streams.kafka.admin import ensure_topics, offsets  # noqa: E402
from streams.kafka.broker import EmbeddedKafka  # noqa: E402
from streams.kafka.progress import wait_for_stages  # noqa: E402
from streams.kafka.topics import Topics  # noqa: E402
from streams.models.lifecycle import load_registry  # noqa: E402
from streams.records import now_ms  # noqa: E402
from streams.runtime import use_event_loop  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.worker_process import start_worker, stop_worker  # noqa: E402

OUT = ROOT / "bench" / "out"
AGENTS = ("embed", "index", "infer", "ingest")
WORK_STAGES = ("embed_ms", "search_ms", "classify_ms", "generate_ms")


def summary(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    if not len(array):
        return {}
    return {p: round(float(np.percentile(array, int(p[1:]))), 2) for p in ("p50", "p95", "p99")} | {
        "max": round(float(array.max()), 2)
    }


def queries(count: int, skip: int) -> list[str]:
    """Real questions-sized texts: first sentences of stdlib docstrings not in the index."""
    texts = []
    for document in stdlib_documents():
        if skip > 0:
            skip -= 1
            continue
        texts.append(document["text"].split(". ")[0][:200])
        if len(texts) == count:
            break
    return texts


async def open_loop(settings: Settings, task: str, rate: float, seconds: float, texts: list[str]) -> dict[str, Any]:
    """Send at ``rate`` per second on a fixed schedule; measure each answer when it arrives."""
    rows: list[dict[str, float]] = []
    async with InferenceClient(settings) as client:
        started = time.perf_counter()
        futures = []
        total = int(rate * seconds)
        for index in range(total):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            future = await client.send(client.request(texts[index % len(texts)], task))

            def done(f: asyncio.Future[dict[str, Any]], sent: float = sent) -> None:
                if not f.cancelled() and f.exception() is None:
                    response = f.result()
                    latency = response["latency"]
                    work = sum(latency[stage] for stage in WORK_STAGES)
                    round_trip = (time.perf_counter() - sent) * 1000
                    rows.append(
                        {
                            "round_trip": round_trip,
                            "work": work,
                            "overhead": round_trip - work,
                            # Where the overhead goes (wall-clock ms, one host): the request's Kafka
                            # timestamp -> the agent starts answering; the agent's own time besides the
                            # work; the response stamped -> the client has it.
                            "to_agent": latency["queue_ms"],
                            "in_agent": latency["total_ms"] - latency["queue_ms"] - work,
                            "to_client": response["received_at_ms"] - response["created_at_ms"],
                        }
                    )

            future.add_done_callback(done)
            futures.append(future)
        await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 120)
    return {
        "task": task,
        "rate_per_s": rate,
        "requests": total,
        "answered": len(rows),
        "round_trip_ms": summary([r["round_trip"] for r in rows]),
        "work_ms": summary([r["work"] for r in rows]),
        "kafka_overhead_ms": summary([r["overhead"] for r in rows]),
        "overhead_parts_p50_ms": {
            part: round(float(np.median([r[part] for r in rows])), 2) if rows else None
            for part in ("to_agent", "in_agent", "to_client")
        },
        # The slowest requests whole (ms): a tail shows here whether it is queueing or one hop.
        "slowest": [
            {key: round(value, 1) for key, value in row.items()}
            for row in sorted(rows, key=lambda r: r["overhead"], reverse=True)[:3]
        ],
    }


async def floor_at_rate(echo: Any, settings: Settings, rate: float, seconds: float) -> dict[str, float]:
    """A plain echo (``kafka_floor`` or ``rdkafka_floor``) with the open loop's spacing: one round
    trip every 1/rate seconds."""
    return dict(await echo(settings, count=max(50, int(rate * seconds)), gap_s=1 / rate))


async def saturation(settings: Settings, task: str, in_flight: int, seconds: float, texts: list[str]) -> dict[str, Any]:
    """Keep ``in_flight`` requests outstanding; answered requests per second."""
    answered = 0
    latencies: list[float] = []
    async with InferenceClient(settings) as client:
        deadline = time.perf_counter() + seconds

        async def lane(offset: int) -> None:
            nonlocal answered
            index = offset
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                future = await client.send(client.request(texts[index % len(texts)], task))
                await asyncio.wait_for(future, 60)
                latencies.append((time.perf_counter() - sent) * 1000)
                answered += 1
                index += in_flight

        started = time.perf_counter()
        await asyncio.gather(*(lane(i) for i in range(in_flight)))
        elapsed = time.perf_counter() - started
    return {
        "task": task,
        "in_flight": in_flight,
        "answered_per_s": round(answered / elapsed, 1),
        "round_trip_ms": summary(latencies),
    }


async def in_process(settings: Settings, task: str, texts: list[str], count: int) -> dict[str, Any]:
    """The same answers from the same service code in this process: the work without Kafka."""
    embedder = OnnxEmbedder(graph_for(settings), default_tokenizer_path(), workers=1)
    store = MilvusStore.from_settings(settings, embedder.version, embedder.dimension)
    registry = await load_registry(settings)
    models = ModelSet(embedder, store, registry, load_classifiers(registry, {}))
    service = InferenceService(models)
    try:
        for text in texts[:20]:
            await service.answer(make_request("bench", text, task), now_ms())
        timings = []
        for index in range(count):
            request = make_request("bench", texts[index % len(texts)], task)
            started = time.perf_counter()
            response, _ = await service.answer(request, now_ms())
            timings.append((time.perf_counter() - started) * 1000)
            assert response["status"] == "OK", response["error"]
        return {"task": task, "requests": count, "latency_ms": summary(timings)}
    finally:
        store.close()


def prepare(settings: Settings, docs: int) -> None:
    """Index ``docs`` documents and promote a stdlib-topic classifier, with the worker running."""
    asyncio.run(ensure_topics(settings))
    asyncio.run(publish_records(settings, [encode_document(d) for d in stdlib_documents(limit=docs)]))
    _, raw_end = asyncio.run(offsets(settings, [Topics(settings.namespace).docs_raw]))
    ok, _ = wait_for_stages(settings, [AGENTS], raw_end, 900)
    if not ok:
        raise RuntimeError("the worker did not index the documents")
    promote_demo_classifier(settings, log=lambda line: print(line, file=sys.stderr))


async def settle(settings: Settings, texts: list[str], least_s: float = 60.0, limit_s: float = 300.0) -> float:
    """Search until Milvus Lite has finished its background work after the bulk writes.

    For a minute or more after indexing, Milvus Lite seals segments and builds their indexes
    in the worker process, and searches take 10-30x longer (90-170 ms instead of 5-12 ms
    here). Wait at least ``least_s``, then until three batches of ten searches in a row have
    a median within 1.3x of the best batch; returns the seconds waited.
    """
    started = time.perf_counter()
    best, calm = float("inf"), 0
    async with InferenceClient(settings) as client:
        while time.perf_counter() - started < limit_s:
            batch = [(await client.ask(text, "search"))["latency"]["search_ms"] for text in texts[:10]]
            median = float(np.median(batch))
            best = min(best, median)
            calm = calm + 1 if median <= 1.3 * best else 0
            if calm >= 3 and time.perf_counter() - started >= least_s:
                break
            await asyncio.sleep(0.5)
    return time.perf_counter() - started


async def kafka_floor(settings: Settings, count: int = 300, gap_s: float = 0.01) -> dict[str, float]:
    """The same request/reply shape with nothing in between: a plain aiokafka echo, same broker.

    One producer sends to a fresh topic, an echo loop (consumer + producer, same process)
    sends each record on to a second topic, and the sender waits for it there: two Kafka
    hops, the floor under any request/reply service on this broker and machine.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from streams.kafka.admin import client_kwargs, producer
    from streams.kafka.topics import TopicSpec

    suffix = uuid.uuid4().hex[:6]
    ask_topic, answer_topic = f"bench-floor-ask-{suffix}", f"bench-floor-answer-{suffix}"
    await ensure_topics(settings, [TopicSpec(ask_topic, 1, 1), TopicSpec(answer_topic, 1, 1)])
    sender, echo_out = producer(settings, linger_ms=0), producer(settings, linger_ms=0)
    echo_in = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    answers = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    for client in (sender, echo_out, echo_in, answers):
        await client.start()
    ask_tp, answer_tp = TopicPartition(ask_topic, 0), TopicPartition(answer_topic, 0)
    echo_in.assign([ask_tp])
    answers.assign([answer_tp])
    # Fresh topics: read from their beginning (the default "latest" can be resolved after the
    # first record was sent, and the echo would wait for it forever).
    await echo_in.seek_to_beginning(ask_tp)
    await answers.seek_to_beginning(answer_tp)

    async def echo() -> None:
        while True:
            for message in (await echo_in.getmany(ask_tp, timeout_ms=1000)).get(ask_tp, []):
                await echo_out.send(answer_topic, message.value)

    task = asyncio.create_task(echo())
    latencies = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            await sender.send(ask_topic, b"x" * 300)
            for _ in range(30):
                if (await answers.getmany(answer_tp, timeout_ms=1000)).get(answer_tp):
                    break
            else:
                raise RuntimeError("the echo did not answer within 30 s")
            latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(gap_s)
    finally:
        task.cancel()
        for client in (sender, echo_out, echo_in, answers):
            await client.stop()
    return summary(latencies)


async def rdkafka_floor(settings: Settings, count: int = 300, gap_s: float = 0.01) -> dict[str, float]:
    """The same echo with librdkafka at all four ends, as in the request/reply path.

    The sender is the path's ``AsyncProducer``; the echo (consumer + producer) runs in a thread
    of its own; the answers are read in another thread and handed to the event loop, as
    ``InferenceClient`` does. The echo does nothing in Python between its two hops.
    """
    import threading

    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

    from streams.kafka.rdkafka import AsyncProducer, close_quietly, fetch, rdkafka_config
    from streams.kafka.topics import TopicSpec

    suffix = uuid.uuid4().hex[:6]
    ask_topic, answer_topic = f"bench-rdfloor-ask-{suffix}", f"bench-rdfloor-answer-{suffix}"
    await ensure_topics(settings, [TopicSpec(ask_topic, 1, 1), TopicSpec(answer_topic, 1, 1)])

    def reader_of(topic: str) -> Consumer:
        consumer = Consumer(rdkafka_config(settings, **{"group.id": f"bench-{suffix}", "enable.auto.commit": False}))
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        return consumer

    echo_in, answers = reader_of(ask_topic), reader_of(answer_topic)
    echo_out = Producer(rdkafka_config(settings, **{"acks": "all", "enable.idempotence": False, "linger.ms": 0}))
    sender = AsyncProducer(settings)
    await sender.start([ask_topic])
    stop = threading.Event()
    loop = asyncio.get_running_loop()
    arrived: asyncio.Queue[None] = asyncio.Queue()

    def echo() -> None:
        while not stop.is_set():
            for message in fetch(echo_in, 64, 0.1):
                if message.error() is None:
                    echo_out.produce(answer_topic, message.value())
            echo_out.poll(0)

    def read() -> None:
        while not stop.is_set():
            for message in fetch(answers, 64, 0.1):
                if message.error() is None:
                    loop.call_soon_threadsafe(arrived.put_nowait, None)

    threads = [threading.Thread(target=echo, daemon=True), threading.Thread(target=read, daemon=True)]
    for thread in threads:
        thread.start()
    latencies = []
    try:
        # Untimed first echo: both consumers start fetching their fresh topics (about 0.5 s).
        for timed in [False] + [True] * count:
            started = time.perf_counter()
            sender.send(ask_topic, b"x" * 300)
            await asyncio.wait_for(arrived.get(), 30)
            if timed:
                latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(gap_s)
    finally:
        stop.set()
        for thread in threads:
            await asyncio.to_thread(thread.join)
        for consumer in (echo_in, answers):
            close_quietly(consumer)
        echo_out.flush(10)
        await sender.stop()
    return summary(latencies)


def broker_gc(pid: int | None) -> str:
    """The garbage collector the running broker was started with (LLMOPS_KAFKA_GC applies at start)."""
    from streams.kafka.broker import GC_OPTIONS

    if pid is None:
        return "unknown (not started by llmops)"
    command = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    return next((name for name, flags in GC_OPTIONS.items() if flags[0] in command), "other")


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [r["task"] for r in report["in_process"]]  # the tasks of this run (--tasks)
    figure, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        runs = [r for r in report["open_loop"] if r["task"] == task]
        rates = [r["rate_per_s"] for r in runs]
        for key, style in (("round_trip_ms", "-o"), ("kafka_overhead_ms", "--s")):
            for pct in ("p50", "p99"):
                axis.plot(rates, [r[key].get(pct, np.nan) for r in runs], style, label=f"{key[:-3]} {pct}")
        baseline = next(r for r in report["in_process"] if r["task"] == task)["latency_ms"]["p50"]
        axis.axhline(baseline, color="grey", linestyle=":", label="in-process p50")
        axis.set_title(f"{task}: latency vs offered rate")
        axis.set_xlabel("requests/s (open loop)")
        axis.set_ylabel("ms")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000, help="documents to index first")
    parser.add_argument("--rates", default="10,50,100", help="open-loop rates, requests/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per open-loop rate and saturation run")
    parser.add_argument("--tasks", default="search,classify")
    parser.add_argument("--in-flight", type=int, default=32, help="outstanding requests in the saturation run")
    parser.add_argument(
        "--client-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop of the bench's client process (the worker runs the standard one)",
    )
    args = parser.parse_args()
    use_event_loop(args.client_loop)
    base = Settings()
    EmbeddedKafka.from_settings(base).start(progress=lambda line: print(line, file=sys.stderr))
    settings = base.model_copy(update={"namespace": f"bench-inf-{uuid.uuid4().hex[:6]}"})
    tasks = args.tasks.split(",")
    texts = queries(500, skip=args.docs)
    log = settings.data_dir / "logs" / f"{settings.namespace}.log"
    worker = start_worker(settings, log, AGENTS)
    report: dict[str, Any] = {"benchmark": "inference_latency", "open_loop": [], "saturation": [], "in_process": []}
    report["client_event_loop"] = args.client_loop
    report["infer_inline_when_idle"] = settings.infer_inline_when_idle
    broker_pid = EmbeddedKafka.from_settings(settings).status().pid
    broker_cpu_at_start = cpu_seconds(broker_pid) if broker_pid else 0.0
    report["kafka_round_trip_floor_ms"] = asyncio.run(kafka_floor(settings))
    print(f"plain aiokafka echo, two hops: {report['kafka_round_trip_floor_ms']}", file=sys.stderr)
    try:
        prepare(settings, args.docs)
        report["settled_after_s"] = round(asyncio.run(settle(settings, texts)), 1)
        for task in tasks:  # warm-up: the first answers load sessions and the collection
            asyncio.run(open_loop(settings, task, 20, 2, texts))
        rates = [float(r) for r in args.rates.split(",")]
        floors = {rate: asyncio.run(floor_at_rate(kafka_floor, settings, rate, args.seconds)) for rate in rates}
        report["kafka_round_trip_floor_at_rate_ms"] = {str(rate): floor for rate, floor in floors.items()}
        print(f"plain aiokafka echo at each rate: {floors}", file=sys.stderr)
        rd_floors = {rate: asyncio.run(floor_at_rate(rdkafka_floor, settings, rate, args.seconds)) for rate in rates}
        report["rdkafka_round_trip_floor_at_rate_ms"] = {str(rate): floor for rate, floor in rd_floors.items()}
        print(f"plain librdkafka echo at each rate: {rd_floors}", file=sys.stderr)
        for task in tasks:
            for rate in rates:
                result = asyncio.run(open_loop(settings, task, rate, args.seconds, texts))
                overhead = result["kafka_overhead_ms"]["p50"]
                floor = result["floor_at_rate_p50_ms"] = floors[rate]["p50"]
                result["overhead_above_floor_p50_ms"] = round(overhead - floor, 2)
                rd_floor = result["rdkafka_floor_at_rate_p50_ms"] = rd_floors[rate]["p50"]
                result["overhead_above_rdkafka_floor_p50_ms"] = round(overhead - rd_floor, 2)
                print(json.dumps(result), file=sys.stderr)
                report["open_loop"].append(result)
            result = asyncio.run(saturation(settings, task, args.in_flight, args.seconds, texts))
            print(json.dumps(result), file=sys.stderr)
            report["saturation"].append(result)
        # Again with a warm broker (the first runs just after it started, before its JIT warmed up).
        warm_floor = report["kafka_round_trip_floor_after_ms"] = asyncio.run(kafka_floor(settings))
        print(f"plain aiokafka echo, two hops, at the end: {warm_floor}", file=sys.stderr)
        report["broker"] = {
            "gc": broker_gc(broker_pid),
            "cpu_s_during_run": round(cpu_seconds(broker_pid) - broker_cpu_at_start, 1) if broker_pid else None,
        }
        print(f"broker: {report['broker']}", file=sys.stderr)
    finally:
        stop_worker(worker)
    for task in tasks:
        result = asyncio.run(in_process(settings, task, texts, 300))
        print(json.dumps(result), file=sys.stderr)
        report["in_process"].append(result)
    below = [r for r in report["open_loop"] if r["round_trip_ms"]]
    report["targets"] = {"kafka_overhead_p50_ms": "<= 5", "kafka_overhead_p99_ms": "<= 25 (below saturation)"}
    capacity = {r["task"]: r["answered_per_s"] for r in report["saturation"]}
    below = [r for r in below if r["rate_per_s"] < 0.8 * capacity.get(r["task"], float("inf"))]
    report["worst_below_saturation"] = {  # rates under 80% of the measured saturation throughput
        "kafka_overhead_p50_ms": max((r["kafka_overhead_ms"]["p50"] for r in below), default=None),
        "kafka_overhead_p99_ms": max((r["kafka_overhead_ms"]["p99"] for r in below), default=None),
    }
    report["cpu_count"] = os.cpu_count()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "inference_latency.json").write_text(json.dumps(report, indent=2))
    plot(report, OUT / "inference_latency.png")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
