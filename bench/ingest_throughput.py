"""Ingest throughput: the Faust worker vs a plain aiokafka consume-transform-produce loop.

Both run the same work (``IngestPipeline.process_batch``: validate, clean, redact, dedup, chunk,
then Avro-encode and produce every output) on the same documents, in the same run, against the
real embedded broker, each in its own namespace. Throughput is documents per second between
the first and last output record (broker timestamps), so start-up time is not counted.

On shared cores throughput depends on the neighbours' load, so the same window is also measured
in CPU-seconds: a thread samples ``/proc`` every 0.1 s for the process that ingests (this one for
the plain loop, the worker for Faust) and the broker, and the CPU each used between the first and
the last output record (interpolated between samples) is divided by the documents. The report
gives both ratios, ``faust_vs_plain`` (docs/s, Faust / plain) and ``cpu_plain_vs_faust`` (CPU-seconds
per document of ingesting process + broker, plain / Faust): 1.0 means Faust costs no more than the
plain loop. The target of issue 20 is >= 0.8; on shared cores the CPU ratio is the one to trust.

Usage:
    python bench/ingest_throughput.py [--docs N] [--rounds R]   (medians over R alternating rounds)

Prints one JSON object and writes bench/out/ingest_throughput.{json,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from background import Background  # noqa: E402
from pipeline_cpu import cpu_seconds  # noqa: E402

from streams.ingest.chunk import default_tokenizer  # noqa: E402
from streams.ingest.corpus import stdlib_documents  # noqa: E402
from streams.ingest.dedup import LookupIndex  # noqa: E402
from streams.ingest.pipeline import IngestConfig, IngestPipeline, IngestRecord, encode_outputs  # noqa: E402
from streams.ingest.publish import encode_document, publish_records  # noqa: E402
from streams.kafka.admin import client_kwargs, ensure_topics, offsets, producer, read_range  # noqa: E402
from streams.kafka.avro import AvroCodec, EmbeddedRegistry  # noqa: E402
from streams.kafka.broker import EmbeddedKafka  # noqa: E402
from streams.kafka.progress import wait_until_consumed  # noqa: E402
from streams.kafka.topics import Topics  # noqa: E402
from streams.records import SourceCoordinates  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.worker_process import start_worker, stop_worker  # noqa: E402

OUT = ROOT / "bench" / "out"
SAMPLE_S = 0.1


class CpuSampler(Background):
    """CPU-seconds of named processes, sampled from ``/proc`` every ``SAMPLE_S`` by a thread."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        super().__init__("cpu-sampler")
        self.pids = pids
        self.samples: list[tuple[float, dict[str, float]]] = []

    def _run(self) -> None:
        while True:
            self.samples.append((time.time(), {name: cpu_seconds(pids) for name, pids in self.pids.items()}))
            if self._stop.wait(SAMPLE_S):
                self.samples.append((time.time(), {name: cpu_seconds(pids) for name, pids in self.pids.items()}))
                return

    def at(self, when: float) -> dict[str, float]:
        """CPU-seconds of each process at wall time ``when``, interpolated between samples."""
        before = max((s for s in self.samples if s[0] <= when), key=lambda s: s[0], default=self.samples[0])
        after = min((s for s in self.samples if s[0] >= when), key=lambda s: s[0], default=self.samples[-1])
        share = (when - before[0]) / (after[0] - before[0]) if after[0] > before[0] else 0.0
        return {name: before[1][name] + share * (after[1][name] - before[1][name]) for name in self.pids}


def documents(count: int) -> list[tuple[bytes | None, bytes | None]]:
    corpus = list(stdlib_documents())
    records = []
    for i in range(count):
        doc = corpus[i % len(corpus)]
        # Later rounds over the corpus get new ids and a suffix, so they are new documents, not duplicates.
        suffix = f" (copy {i // len(corpus)})" if i >= len(corpus) else ""
        records.append(encode_document({**doc, "id": f"{doc['id']}#{i}", "text": doc["text"] + suffix}))
    return records


def measure(settings: Settings, before: dict, docs: int, cpu: CpuSampler) -> dict:
    """Throughput and CPU per document of one implementation, between its first and last output."""
    first, last, outputs = asyncio.run(output_span(settings, before))
    seconds = last - first
    at_first, at_last = cpu.at(first), cpu.at(last)
    used = {name: at_last[name] - at_first[name] for name in cpu.pids}
    return {
        "docs": docs,
        "seconds": round(seconds, 3),
        "docs_per_s": round(docs / seconds, 1),
        "output_records": outputs,
        "cpu_s": {name: round(value, 2) for name, value in used.items()},
        "cpu_ms_per_doc": {name: round(1000 * value / docs, 3) for name, value in used.items()}
        | {"total": round(1000 * sum(used.values()) / docs, 3)},
    }


async def output_span(settings: Settings, before: dict) -> tuple[float, float, int]:
    """Wall times (s) of the first and last output record (broker timestamps), and how many there are."""
    topics = Topics(settings.namespace)
    _, end = await offsets(settings, [topics.docs_clean, topics.docs_duplicates, topics.deadletter])
    stamps = [m.timestamp async for m in read_range(settings, before, end)]
    return min(stamps) / 1000.0, max(stamps) / 1000.0, len(stamps)


async def plain_loop(settings: Settings, total: int, batch: int) -> None:
    """The baseline: aiokafka consumer group, same pipeline, produce, commit after acks."""
    topics = Topics(settings.namespace)
    codec = AvroCodec(EmbeddedRegistry.from_directory())
    pipeline = IngestPipeline(IngestConfig.from_settings(settings), codec, default_tokenizer())
    store: dict = {}
    lookups = LookupIndex(settings.near_dup_max_hamming, settings.near_dup_enabled)
    consumer = AIOKafkaConsumer(
        topics.docs_raw,
        **client_kwargs(settings),
        group_id=topics.app_id("plain"),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=batch,
    )
    out = producer(settings)
    await consumer.start()
    await out.start()
    done = 0
    try:
        while done < total:
            polled = await consumer.getmany(timeout_ms=1000, max_records=batch)
            for messages in polled.values():
                records = [
                    IngestRecord(m.key, m.value, SourceCoordinates(m.topic, m.partition, m.offset, m.timestamp), None)
                    for m in messages
                ]
                pending = []
                for record, result in zip(records, pipeline.process_batch(records, store, lookups), strict=True):
                    for item in encode_outputs(result, record, codec, topics):
                        sent = await out.send(item.topic, item.value, key=item.key, headers=item.headers)
                        pending.append(sent)
                await asyncio.gather(*pending)
                done += len(messages)
            await consumer.commit()
    finally:
        await out.stop()
        await consumer.stop()


def prepare(base: Settings, name: str, records: list) -> tuple[Settings, dict]:
    settings = base.model_copy(update={"namespace": f"bench-{name}-{uuid.uuid4().hex[:6]}"})
    asyncio.run(ensure_topics(settings))
    topics = Topics(settings.namespace)
    _, before = asyncio.run(offsets(settings, [topics.docs_clean, topics.docs_duplicates, topics.deadletter]))
    asyncio.run(publish_records(settings, records))
    return settings, before


def run_faust(base: Settings, records: list, broker_pid: int) -> dict:
    settings, before = prepare(base, "faust", records)
    topics = Topics(settings.namespace)
    _, raw_end = asyncio.run(offsets(settings, [topics.docs_raw]))
    # Only the ingest agent, as the plain loop does (all agents: another group, never "consumed").
    worker = start_worker(settings, settings.data_dir / "logs" / f"bench-{settings.namespace}.log", ("ingest",))
    try:
        with CpuSampler({"ingest": [worker.pid], "broker": [broker_pid]}) as cpu:
            ok = asyncio.run(
                wait_until_consumed(
                    settings, topics.app_id("ingest"), raw_end, 900, alive=lambda: worker.poll() is None
                )
            )
    finally:
        stop_worker(worker)
    if not ok:
        raise RuntimeError("the Faust worker did not finish; see its log under .llmops/logs")
    return measure(settings, before, len(records), cpu)


def run_plain(base: Settings, records: list, broker_pid: int) -> dict:
    settings, before = prepare(base, "plain", records)
    with CpuSampler({"ingest": [os.getpid()], "broker": [broker_pid]}) as cpu:
        asyncio.run(plain_loop(settings, len(records), base.ingest_batch_size))
    return measure(settings, before, len(records), cpu)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["plain aiokafka loop", "Faust worker"]
    values = [result["plain_docs_per_s_median"], result["faust_docs_per_s_median"]]
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=110)
    axis.barh(names, values, color=["#999999", "#3b75af"])
    for y, value in enumerate(values):
        axis.text(value, y, f" {value:.0f}", va="center")
    axis.set_xlabel("documents / second (validate, clean, redact, dedup, chunk, produce)")
    axis.set_title(
        f"Ingest throughput (median of {len(result['rounds'])} rounds): "
        f"Faust = {result['faust_vs_plain_median']:.0%} of plain"
    )
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=12_000, help="documents per implementation")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    args = parser.parse_args()
    base = Settings()
    broker = EmbeddedKafka.from_settings(base)
    started_here = broker.status().pid is None  # a broker this bench starts, it stops
    broker.start(progress=lambda line: print(line, file=sys.stderr))
    try:
        run(args, base, broker)
    finally:
        if started_here:
            broker.stop()


def run(args: argparse.Namespace, base: Settings, broker: EmbeddedKafka) -> None:
    """Alternating rounds of both implementations; the report, printed and written to bench/out."""
    broker_pid = broker.status().pid
    if broker_pid is None:
        raise SystemExit(
            f"the broker at {base.bootstrap_servers} was not started by llmops, so its CPU cannot be read: "
            "set LLMOPS_BOOTSTRAP_SERVERS to a free port for the bench's own broker"
        )
    records = documents(args.docs)
    started = time.time()
    rounds = []
    for number in range(args.rounds):
        # Alternate the two, so that a noisy neighbour hurts both alike.
        plain = run_plain(base, records, broker_pid)
        faust = run_faust(base, records, broker_pid)
        ratio = round(faust["docs_per_s"] / plain["docs_per_s"], 3)
        cpu_ratio = round(plain["cpu_ms_per_doc"]["total"] / faust["cpu_ms_per_doc"]["total"], 3)
        print(
            f"round {number + 1}: plain {plain['docs_per_s']} docs/s, Faust {faust['docs_per_s']} docs/s, "
            f"ratio {ratio}; CPU ms/doc (ingest + broker) plain {plain['cpu_ms_per_doc']}, "
            f"Faust {faust['cpu_ms_per_doc']}, ratio plain/Faust {cpu_ratio}",
            file=sys.stderr,
        )
        rounds.append({"plain": plain, "faust": faust, "faust_vs_plain": ratio, "cpu_plain_vs_faust": cpu_ratio})
    result = {
        "benchmark": "ingest_throughput",
        "docs": args.docs,
        "rounds": rounds,
        "plain_docs_per_s_median": statistics.median(r["plain"]["docs_per_s"] for r in rounds),
        "faust_docs_per_s_median": statistics.median(r["faust"]["docs_per_s"] for r in rounds),
        "faust_vs_plain_median": statistics.median(r["faust_vs_plain"] for r in rounds),
        "plain_cpu_ms_per_doc_median": statistics.median(r["plain"]["cpu_ms_per_doc"]["total"] for r in rounds),
        "faust_cpu_ms_per_doc_median": statistics.median(r["faust"]["cpu_ms_per_doc"]["total"] for r in rounds),
        "cpu_plain_vs_faust_median": statistics.median(r["cpu_plain_vs_faust"] for r in rounds),
        "load_average": os.getloadavg(),
        "target": ">= 0.8 (issue 20, target 4)",
        "batch_size": base.ingest_batch_size,
        "wall_seconds": round(time.time() - started, 1),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ingest_throughput.json").write_text(json.dumps(result, indent=2))
    plot(result, OUT / "ingest_throughput.png")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
