"""The demo behind ``make run``: the whole ingest path on real parts, every record accounted for.

Why this exists:
    A new user should see the platform work in one command: a real broker starts, a worker
    process runs the ingest agent, the stdlib corpus (plus a few broken and duplicated records,
    as real upstreams send) flows from ``docs.raw`` into ``docs.clean``, and the summary proves
    that each input record has exactly one outcome. Later stages extend this demo.

How records are accounted for:
    Every record the ingest agent writes carries a ``llmops.source`` header naming the
    ``topic:partition:offset`` it came from. The set of source offsets seen on ``docs.clean``,
    ``docs.duplicates`` and ``deadletter`` must equal the set of offsets published.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import click
from aiokafka import TopicPartition

from streams.cli.demo_inference import run_inference_demo
from streams.cli.demo_monitor import monitor_summary, prepare_monitor, print_monitor, publish_shifted_batch
from streams.cli.demo_switch import print_switch, run_switch_demo
from streams.cli.support import echo_json, kafka_options, load_settings
from streams.ingest.corpus import stdlib_documents
from streams.ingest.publish import encode_document, publish_records
from streams.kafka.admin import ensure_topics, read_range
from streams.kafka.avro import AvroCodec, codec_from_settings
from streams.kafka.broker import EmbeddedKafka
from streams.kafka.progress import end_offsets, wait_for_stages
from streams.kafka.topics import Topics
from streams.records import SOURCE_HEADER
from streams.settings import Settings
from streams.worker_process import ALL_AGENTS, start_worker, stop_worker

# What real upstreams send besides good documents: one of each common failure.
BROKEN_RECORDS: list[tuple[bytes | None, bytes | None]] = [
    (b"bad-json", b'{"id": "bad-json", "text": "unterminated'),
    (b"no-text", b'{"id": "no-text", "title": "a title but no text"}'),
    (b"wrong-type", b'{"id": "wrong-type", "text": 42}'),
    (b"latin1", '{"id": "latin1", "text": "caf\xe9"}'.encode("latin-1")),
    (b"empty-html", b'{"id": "empty-html", "text": "<p>  </p><script>alert(1)</script>"}'),
    (b"nested", b'{"id": "nested", "text": "ok", "metadata": {"a": {"b": "c"}}}'),
    (None, b'{"text": "a document without an id"}'),
    (b"bad-avro", b"\x00\x00\x00\x00\x07garbage"),
]


TRACE_KEYS = ("document_trace", "request_trace")


def demo_records(limit: int | None) -> list[tuple[bytes | None, bytes | None]]:
    """The stdlib corpus, a copy and a near copy of one document, a deletion, and broken records."""
    documents = list(stdlib_documents(limit=limit))
    records: list[tuple[bytes | None, bytes | None]] = [encode_document(doc) for doc in documents]
    if documents:
        first = documents[0]
        records.append(encode_document({**first, "id": "copy-of-" + first["id"]}))
        longest = max(documents, key=lambda d: len(d["text"]))
        records.append(
            encode_document({**longest, "id": "near-copy-of-" + longest["id"], "text": longest["text"] + " (mirror)"})
        )
        records.append((documents[-1]["id"].encode(), None))  # tombstone: delete the last document
    return records + BROKEN_RECORDS


async def _collect(records: AsyncIterator[Any]) -> list[Any]:
    return [record async for record in records]


def account(
    published: dict[TopicPartition, tuple[int, int]], outputs: list[Any], codec: AvroCodec, topics: Topics
) -> dict[str, Any]:
    """Match every published offset with the outputs that name it as their source."""
    seen: set[str] = set()
    chunks = Counter[str]()
    indexed_docs: set[str] = set()
    duplicates = Counter[str]()
    dead_letters = Counter[str]()
    demoted: set[str] = set()
    expected = {
        f"{tp.topic}:{tp.partition}:{offset}"
        for tp, (first, stop) in published.items()
        for offset in range(first, stop)
    }
    for message in outputs:
        source = dict(message.headers or ()).get(SOURCE_HEADER, b"").decode()
        if source not in expected:
            continue  # output of an earlier run's input that was still waiting on the topic
        seen.add(source)
        if message.topic == topics.docs_clean:
            record = codec.decode(message.value, "CleanChunk")
            chunks[record["op"]] += 1
            if record["op"] == "UPSERT":
                indexed_docs.add(record["doc_id"])
        elif message.topic == topics.docs_duplicates:
            notice = codec.decode(message.value, "DuplicateNotice")
            duplicates[notice["kind"]] += 1
            demoted.add(notice["doc_id"])  # a copy that stepped down for a smaller id is no longer indexed
        elif message.topic == topics.deadletter:
            dead_letters[codec.decode(message.value, "DeadLetter")["reason"]] += 1
    missing = sorted(expected - seen)
    return {
        "published": len(expected),
        "indexed_documents": len(indexed_docs - demoted),
        "chunks_upserted": chunks["UPSERT"],
        "chunk_deletes": chunks["DELETE"],
        "duplicates": dict(duplicates),
        "dead_letters": dict(dead_letters),
        "accounted_sources": len(expected & seen),
        "missing_sources": missing[:20],
        "accounted": not missing,
    }


def run_demo(
    settings: Settings,
    limit: int | None = None,
    log: Callable[[str], None] = print,
    timeout: float = 600.0,
    switch_timeout: float | None = 900.0,
) -> dict[str, Any]:
    """Broker, worker, publish, wait, account, then an index switch (None: skipped); returns the summary."""
    started = time.monotonic()
    broker = EmbeddedKafka.from_settings(settings)
    log(f"Kafka: {broker.start(progress=log)}")
    asyncio.run(ensure_topics(settings))
    topics = Topics(settings.namespace)
    outputs = [topics.docs_clean, topics.docs_duplicates, topics.deadletter]
    before = asyncio.run(end_offsets(settings, [topics.docs_raw, *outputs]))
    before_embeddings = asyncio.run(end_offsets(settings, [topics.docs_embeddings]))
    monitor_since = prepare_monitor(settings, log)
    worker_log = settings.data_dir / "logs" / "worker.log"
    worker = start_worker(settings, worker_log)
    log(f"worker started (pid {worker.pid}, log {worker_log})")
    try:
        records = demo_records(limit)
        log(f"publishing {len(records)} records to {topics.docs_raw}...")
        report = asyncio.run(publish_records(settings, records))
        after_raw = asyncio.run(end_offsets(settings, [topics.docs_raw]))
        published = {tp: (before.get(tp, 0), end) for tp, end in after_raw.items()}
        ok, stage_seconds = wait_for_stages(
            settings, [ALL_AGENTS], after_raw, timeout, alive=lambda: worker.poll() is None, log=log
        )
        processed_at = time.monotonic()
        if worker.poll() is not None:
            log(f"the worker exited with code {worker.returncode}; see {worker_log}")
        elif not ok:
            log(f"the worker did not catch up within {timeout:.0f}s; see {worker_log}")
        after = asyncio.run(end_offsets(settings, outputs))
        messages = asyncio.run(_collect(read_range(settings, before, after)))
        inference = run_inference_demo(settings, log) if ok and worker.poll() is None else None
        shifted = (
            publish_shifted_batch(settings, log, timeout, lambda: worker.poll() is None)
            if ok and worker.poll() is None
            else None
        )
        switch = (
            run_switch_demo(settings, log, switch_timeout, lambda: worker.poll() is None)
            if switch_timeout is not None and ok and worker.poll() is None
            else None
        )
    finally:
        code = stop_worker(worker)
    codec = codec_from_settings(settings)
    summary = account(published, messages, codec, topics)
    counts = {name: sum(end - before.get(tp, 0) for tp, end in after.items() if tp.topic == name) for name in outputs}
    counts[topics.docs_raw] = report.records
    embeddings = asyncio.run(end_offsets(settings, [topics.docs_embeddings]))
    counts[topics.docs_embeddings] = sum(end - before_embeddings.get(tp, 0) for tp, end in embeddings.items())
    summary.update(index_report(settings), monitor=monitor_summary(settings, shifted, monitor_since))
    summary.update(traces(settings, inference))
    summary.update(
        stage_done_after_seconds=stage_seconds,
        topic_records=counts,
        publish_seconds=round(report.seconds, 2),
        pipeline_seconds=round(processed_at - started, 2),
        inference=inference,
        switch=switch,
        worker_exit_code=code,
        worker_log=str(worker_log),
        caught_up=ok,
    )
    summary["accounted"] = summary["accounted"] and ok
    summary["answered"] = inference is not None and inference["as_expected"]
    # A build that did not finish in time is reported, not failed; a switch that answered wrong is.
    summary["switched"] = switch is None or "promoted" not in switch or switch["as_expected"]
    return summary


def index_report(settings: Settings) -> dict[str, Any]:
    """After the worker stopped (Milvus Lite has one owner): index size and freshness."""
    from streams.index.embed import OnnxEmbedder
    from streams.index.vectorstore import MilvusStore, production_alias

    embedder = OnnxEmbedder.from_settings(settings)
    store = MilvusStore.from_settings(settings, embedder.version, embedder.dimension)
    alias = production_alias(settings.namespace)
    try:
        freshness = sorted(store.freshness_ms())
        return {
            "production_alias": {"alias": alias, "collection": store.alias_target(alias)},
            "index_collection": store.collection,
            "index_chunks": store.count(),
            "model_version": embedder.version,
            "freshness_ms": {
                "p50": freshness[len(freshness) // 2] if freshness else None,
                "p99": freshness[int(len(freshness) * 0.99)] if freshness else None,
            },
        }
    finally:
        store.close()


def traces(settings: Settings, inference: dict[str, Any] | None) -> dict[str, Any]:
    """The trace of the top document of the first search answer, and the trace of that request."""
    from streams.telemetry.traceview import load_trace

    if inference is None:
        return {}
    answer = next((a for a in inference["answers"] if a["task"] == "search" and a["hits"]), None)
    if answer is None:
        return {}
    return {
        "document_trace": load_trace(settings, doc_id=answer["hits"][0]["doc_id"]),
        "request_trace": load_trace(settings, request_id=answer["request_id"]),
    }


def print_summary(summary: dict[str, Any]) -> None:
    """Human summary of :func:`run_demo`."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="Records written by this run, per topic")
    table.add_column("topic")
    table.add_column("records", justify="right")
    for name, count in summary["topic_records"].items():
        table.add_row(name, str(count))
    console.print(table)
    console.print(
        f"published {summary['published']} records: {summary['indexed_documents']} documents indexed "
        f"as {summary['chunks_upserted']} chunks, duplicates {json.dumps(summary['duplicates'])}, "
        f"{summary['chunk_deletes']} chunk deletions, dead letters {json.dumps(summary['dead_letters'])}"
    )
    verdict = (
        "[green]every record accounted for[/]"
        if summary["accounted"]
        else (f"[red]NOT accounted: {summary['missing_sources']}[/]")
    )
    console.print(
        f"{verdict} ({summary['accounted_sources']}/{summary['published']}); "
        f"publish {summary['publish_seconds']}s, all stages done after {summary['pipeline_seconds']}s; "
        f"worker log {summary['worker_log']}"
    )
    console.print(
        f"index {summary['index_collection']}: {summary['index_chunks']} chunks searchable "
        f"(model {summary['model_version'][:16]}); freshness from raw timestamp to searchable: "
        f"p50 {summary['freshness_ms']['p50']} ms, p99 {summary['freshness_ms']['p99']} ms "
        f"(stage done after {summary['stage_done_after_seconds']} s)"
    )
    if summary.get("inference"):
        print_inference(summary["inference"])
    print_monitor(summary["monitor"])
    if summary.get("switch") is not None:
        print_switch(summary["switch"], summary.get("production_alias"))
    from streams.telemetry.traceview import print_trace

    for key in TRACE_KEYS:
        if summary.get(key):
            console.print(f"[bold]{key.replace('_', ' ')}[/] (llmops trace {summary[key]['trace_id']}):")
            print_trace(console, summary[key])
        elif key in summary:
            console.print(f"[yellow]{key.replace('_', ' ')}: no spans found on telemetry.spans[/]")


def print_inference(inference: dict[str, Any]) -> None:
    """The classifier that was promoted and each answer, as `llmops query` prints them."""
    from streams.cli.inference import print_response

    classifier = inference["classifier"]
    print(
        f"classifier {classifier['name']}@{classifier['version'][:12]} in production "
        f"(QA: {classifier['qa_report']}; approved by {classifier['approved_by']})"
    )
    ranker = inference.get("ranker")
    if ranker:
        print(
            f"ranker {ranker['name']}@{ranker['version'][:12]} {ranker['stage']} (QA: {ranker['qa_report']}; "
            f"abstains below {ranker['metrics'].get('abstain_below', float('nan')):.3f})"
        )
    for answer in inference["answers"]:
        print(f"\n> {answer['task']}: {answer['question']}")
        print_response(answer)


# --- the command ----------------------------------------------------------------------------------
@click.command()
@kafka_options
@click.option("--limit", type=int, default=None, help="Publish at most this many stdlib documents.")
@click.option(
    "--skip-switch", is_flag=True, help="Leave out the index switch (fp32 build, evaluation, promote, rollback)."
)
@click.option(
    "--switch-timeout", type=float, default=900.0, show_default=True, help="Seconds the fp32 index build may take."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(limit: int | None, skip_switch: bool, switch_timeout: float, as_json: bool) -> None:
    """Start the broker and a worker, publish the stdlib corpus with some bad records, report.

    This is what `make run` does. Every published record is accounted for: indexed,
    skipped as a duplicate, deleted, or dead-lettered with a reason. Then a classifier is
    trained, evaluated in QA, approved and promoted, and questions go to the infer agent over
    Kafka; each answer shows which model versions answered. Last, an index switch: the fp32
    MiniLM index version is built in the background, evaluated against production on the
    held-out questions, promoted (approved), asked, and rolled back (--skip-switch leaves it
    out). Exits 1 if anything is unaccounted for or an answer is not what was expected.
    """
    summary = run_demo(
        load_settings(),
        limit=limit,
        log=lambda line: click.echo(line, err=True),
        switch_timeout=None if skip_switch else switch_timeout,
    )
    if as_json:
        echo_json(summary)
    else:
        print_summary(summary)
    if not (summary["accounted"] and summary["answered"] and summary["switched"]):
        sys.exit(1)
