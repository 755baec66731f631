"""Ingest agent: ``docs.raw`` -> ``docs.clean`` (+ ``docs.duplicates``, ``deadletter``).

All logic lives in :class:`streams.ingest.pipeline.IngestPipeline`; this module reads batches of
events, hands them to the pipeline with the dedup table, and publishes what comes back, each
output carrying the trace context of its input record's span.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable
from typing import Any

import faust

from agents.common import delivery_of, log_dead_letter, raw_topic, source_of, stop_without_acking
from agents.table_writes import send_table_writes, take_table_writes
from streams.ingest.chunk import default_tokenizer
from streams.ingest.dedup import DedupIndex, LookupIndex
from streams.ingest.pipeline import IngestConfig, IngestPipeline, IngestRecord, encode_outputs
from streams.kafka.avro import codec_from_settings
from streams.kafka.topics import Topics
from streams.logs import get_logger
from streams.settings import Settings
from streams.telemetry.metrics import stage_metrics
from streams.telemetry.tracing import AgentTracer

log = get_logger(__name__)
DEDUP_TABLE = "ingest-dedup"
RETRACT_INTERVAL_S = 1.0  # how soon a copy indexed concurrently by two workers steps down


def record_from_event(event: Any, traceparent: str | None) -> IngestRecord:
    """Our view of a Faust event: bytes, coordinates and the trace context its outputs carry."""
    message = event.message
    return IngestRecord(key=message.key, value=message.value, source=source_of(event), traceparent=traceparent)


def register_ingest(app: faust.App, settings: Settings, tracer: AgentTracer) -> Any:
    """Declare the ingest topics, the dedup table and the agent on ``app``."""
    topics = Topics(settings.namespace)
    # Bytes in: the pipeline decodes (JSON or Avro) so that a bad record becomes a dead letter.
    # Outputs are produced as bytes by encode_outputs (docs.clean, docs.duplicates, deadletter).
    docs_raw = raw_topic(app, topics.docs_raw, settings)
    # A global table: every worker holds all dedup state (read from the changelog topic on
    # start), so duplicates are found across partitions owned by different workers.
    # Only doc_id -> DocState is stored (one changelog record per document version); the hash
    # and band lookups live in memory, built from the table once recovered and kept in step with
    # other workers' writes as their changelog records arrive.
    lookups: list[LookupIndex] = []
    # The batch and the retraction of concurrent copies both change dedup state and publish its
    # consequences; one at a time, so a retraction never interleaves with a batch's sends.
    state_lock = asyncio.Lock()

    async def on_changelog_event(event: Any) -> None:
        if lookups:
            key, value = event.message.key, event.message.value
            lookups[0].apply_remote(json.loads(key), json.loads(value) if value is not None else None)

    dedup_table = app.GlobalTable(
        DEDUP_TABLE,
        partitions=settings.partitions,
        key_type=str,
        use_partitioner=True,
        on_changelog_event=on_changelog_event,
    )
    codec = codec_from_settings(settings)
    pipeline = IngestPipeline(IngestConfig.from_settings(settings), codec, default_tokenizer())
    totals: Counter[str] = Counter()
    metrics = stage_metrics("ingest")
    ingest_writes = [
        ("CleanChunk", topics.docs_clean),
        ("DuplicateNotice", topics.docs_duplicates),
        ("DeadLetter", topics.deadletter),
    ]

    @app.agent(docs_raw, name="ingest")
    async def ingest(stream: Any) -> None:
        async for events in stream.take_events(settings.ingest_batch_size, within=settings.ingest_batch_seconds):
            started = time.perf_counter()
            try:
                async with state_lock:
                    await ingest_batch(events)
            except Exception as error:  # noqa: BLE001 - commit nothing of this batch, exit, be restarted
                await stop_without_acking(app, "ingest", events, error)
            metrics.processed.inc(len(events))
            metrics.batch_seconds.observe(time.perf_counter() - started)

    changelog = dedup_table.changelog_topic.get_topic_name()

    async def ingest_batch(events: list[Any]) -> None:
        # A table write picks its changelog partition from the producer's metadata without waiting
        # for it; on a cluster that metadata can lack the changelog topic for minutes after start,
        # and every write failed (each document dead-lettered as INTERNAL_ERROR). Waiting here costs
        # nothing once the topic is known. (Faust exposes its aiokafka producer only privately.)
        producer: Any = app.producer
        await producer._ensure_producer().partitions_for(changelog)
        await codec.prefetch((event.message.value for event in events), writes=ingest_writes)
        with tracer.batch([delivery_of(event) for event in events]) as batch:
            records = [record_from_event(event, batch.traceparent(i)) for i, event in enumerate(events)]
            if not lookups:
                lookups.append(
                    LookupIndex.build(dedup_table.items(), settings.near_dup_max_hamming, settings.near_dup_enabled)
                )
            with batch.step("ingest.pipeline", records=len(records)):
                results = pipeline.process_batch(records, dedup_table, lookups[0])
                writes = take_table_writes(app)  # the dedup states just written: no await before this
            # The batch's dedup states go out together (agents/table_writes.py), then its outputs,
            # straight to Faust's producer, one enqueue per record and one wait per batch: the
            # batch's events are acknowledged only after every output and state is acked by the broker.
            pending: list[Awaitable[Any]] = await send_table_writes(app, writes)
            for i, (record, result) in enumerate(zip(records, results, strict=True)):
                batch.annotate(i, doc_id=result.doc_id, outcome=result.outcome.value, chunks=len(result.chunks))
                for out in encode_outputs(result, record, codec, topics):
                    headers = batch.inject(i, out.headers)
                    pending.append(await app.producer.send(out.topic, out.key, out.value, None, None, headers))
                totals[result.outcome.value] += 1
                if result.dead_letter is not None:
                    batch.fail(i, result.dead_letter.reason, result.dead_letter.detail)
                    # The record's span is made current only for its log line (which then carries
                    # its ids): per record on the hot path it cost more than the line is worth.
                    with batch.current(i):
                        log_dead_letter(result.dead_letter)
            await asyncio.gather(*pending)

    def owns(partition: int) -> bool:
        """Whether this worker reads ``partition`` of docs.raw now."""
        return any(tp.topic == topics.docs_raw and tp.partition == partition for tp in app.consumer.assignment())

    @app.timer(interval=RETRACT_INTERVAL_S)  # type: ignore[untyped-decorator]  # faust's decorators are untyped
    async def retract_concurrent_copies() -> None:
        """Step down copies another worker indexed at the same moment (streams.ingest.dedup)."""
        if not lookups or not lookups[0].may_be_contested:
            return
        async with state_lock:
            dedup = DedupIndex(dedup_table, settings.near_dup_max_hamming, settings.near_dup_enabled, lookups[0])
            for retraction in pipeline.retractions(lookups[0], owns, topics.docs_raw):
                outputs = encode_outputs(retraction.result, retraction.record, codec, topics)
                await asyncio.gather(
                    *[await app.producer.send(o.topic, o.key, o.value, None, None, o.headers) for o in outputs]
                )
                now = lookups[0].states.get(retraction.doc_id)
                if now is None or now.duplicate_of is not None or now.doc_hash != retraction.state.doc_hash:
                    continue  # another worker changed the copy while its retraction was published
                dedup.replace(retraction.doc_id, retraction.state)
                totals["retracted"] += 1
                notice = retraction.result.duplicate
                log.info("ingest_copy_retracted", doc_id=retraction.doc_id, duplicate_of=notice and notice.duplicate_of)

    @app.timer(interval=10.0)  # type: ignore[untyped-decorator]  # faust's decorators are untyped
    async def report_totals() -> None:
        if totals:
            log.info("ingest_totals", **dict(totals))

    return ingest
