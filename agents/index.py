"""Index agent: ``docs.embeddings`` -> Milvus (batched upserts and deletes, retried).

Writes are idempotent (keyed by chunk id), so redeliveries and replays never duplicate. A record
Milvus refuses while it is up (a value it cannot hold) is dead-lettered (STORE_REJECTED) and the
rest of its batch is written; when Milvus is down, the batch is retried with exponential backoff
and its events stay unacknowledged, so no offset past an unwritten record is committed; a worker
asked to stop meanwhile exits without acknowledging the batch (it is read again on restart).
Vectors of another model version are dead-lettered (FOREIGN_MODEL_VERSION): they belong in
another collection. Each record's span
ends its document's trace; the batch span holds the Milvus write.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import faust

from agents.common import dead_letter_for, delivery_of, raw_topic, send_dead_letter, stop_without_acking
from agents.sre import sre_of
from streams.heap import freeze_startup_objects
from streams.index.embed import version_for
from streams.index.indexing import SealPolicy, ShuttingDown, write_with_retry
from streams.index.vectorstore import VectorStore, shared_store
from streams.kafka.avro import CodecError, codec_from_settings
from streams.kafka.topics import Topics
from streams.logs import get_logger
from streams.settings import Settings
from streams.telemetry.metrics import stage_metrics
from streams.telemetry.tracing import AgentTracer, BatchTrace

log = get_logger(__name__)
MAX_BACKOFF_SECONDS = 30.0
SEAL_POLICY = SealPolicy()


def register_index(app: faust.App, settings: Settings, tracer: AgentTracer) -> Any:
    """Declare the index agent on ``app``."""
    topics = Topics(settings.namespace)
    codec = codec_from_settings(settings)
    # The collection follows the embedder this deployment runs; another version is refused.
    model_version = version_for(settings)
    stores: list[VectorStore] = []

    def open_store() -> VectorStore:
        return shared_store(settings, model_version)

    metrics = stage_metrics("index")
    sre_of(app).probes.add("store", lambda: None if stores else "index: the Milvus collection is not open yet")

    @app.agent(raw_topic(app, topics.docs_embeddings, settings), name="index")
    async def index(stream: Any) -> None:
        try:  # open (and create or load) the collection before the first batch arrives
            stores.append(await asyncio.get_running_loop().run_in_executor(None, open_store))
            freeze_startup_objects()  # Milvus Lite's server and client live as long as the worker
        except Exception as error:  # noqa: BLE001 - retried with backoff on the first batch
            log.warning("vector_store_unavailable", error=repr(error), retry_in_s=0)
        async for events in stream.take_events(settings.index_batch_size, within=settings.index_batch_seconds):
            started = time.perf_counter()
            try:
                with tracer.batch([delivery_of(event) for event in events]) as batch:
                    await index_batch(events, batch)
            except ShuttingDown as stopping:  # the store is down and the worker stops: hand the batch back
                await stop_without_acking(app, "index", events, stopping, requested=True)
            except Exception as error:  # noqa: BLE001 - commit nothing of this batch, exit, be restarted
                await stop_without_acking(app, "index", events, error)
            metrics.processed.inc(len(events))
            metrics.batch_seconds.observe(time.perf_counter() - started)

    unsealed = {"rows": 0, "last_write": 0.0}

    @app.timer(interval=1.0)  # type: ignore[untyped-decorator]  # faust's decorators are untyped
    async def seal_segments() -> None:
        """Flush written rows once writes pause (or many piled up), so that searches use an index."""
        idle = time.monotonic() - unsealed["last_write"]
        if not stores or not SEAL_POLICY.should_seal(int(unsealed["rows"]), idle):
            return
        rows, unsealed["rows"] = unsealed["rows"], 0
        flush = getattr(stores[0], "flush", None)
        if flush is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(None, flush)
        except Exception as error:  # noqa: BLE001 - searches stay correct, only slower; retried next tick
            unsealed["rows"] += rows
            log.warning("vector_store_flush_failed", error=repr(error))

    async def sleep_unless_stopping(seconds: float) -> None:
        """The backoff wait, cut short when the worker is asked to stop (it can be 30 s long)."""
        steps = max(1, math.ceil(seconds / 0.25))
        for _ in range(steps):
            if app.should_stop:
                return
            await asyncio.sleep(seconds / steps)

    async def dead_letter(event: Any, i: int, reason: str, detail: str, batch: BatchTrace) -> Any:
        """Dead-letter record ``i`` of the batch (with its trace); returns the send future."""
        letter = dead_letter_for(event, "index", reason, detail)
        batch.fail(i, letter.reason, letter.detail)
        with batch.current(i):
            return await send_dead_letter(app, codec, topics, letter, batch.inject(i, []))

    async def index_batch(events: list[Any], batch: BatchTrace) -> None:
        records, positions, pending = [], [], []
        await codec.prefetch((event.message.value for event in events), writes=[("DeadLetter", topics.deadletter)])
        for i, event in enumerate(events):
            try:
                record = codec.decode(event.message.value or b"", "ChunkEmbedding")
            except CodecError as error:
                pending.append(await dead_letter(event, i, error.reason, error.detail, batch))
            else:
                batch.annotate(i, doc_id=record["doc_id"], chunk_id=record["chunk_id"], op=record["op"])
                if record["op"] != "UPSERT" or record["model_version"] == model_version:
                    records.append(record)
                    positions.append(i)
                    continue
                detail = (
                    f"vector from model version {record['model_version'][:16]}; this index holds "
                    f"{model_version[:16]}: replay it with the matching model, or run that model's worker"
                )
                pending.append(await dead_letter(event, i, "FOREIGN_MODEL_VERSION", detail, batch))
        with batch.step("milvus.write", records=len(records)) as span:
            report = await write_with_retry(
                records,
                open_store,
                model_version,
                stores=stores,
                should_stop=lambda: bool(app.should_stop),
                sleep=sleep_unless_stopping,
                on_retry=lambda error, delay: log.warning(
                    "vector_store_unavailable", error=repr(error), retry_in_s=delay
                ),
                max_backoff=MAX_BACKOFF_SECONDS,
            )
            span.set_attributes({"llmops.upserted": report.upserted, "llmops.deleted_chunks": report.deleted_chunks})
        for rejected in report.rejected:  # refused by a store that is up: bad records, not an outage
            i = positions[rejected.position]
            pending.append(await dead_letter(events[i], i, rejected.reason, rejected.detail, batch))
        unsealed["rows"] += report.upserted + report.deleted_chunks
        unsealed["last_write"] = time.monotonic()
        if report.freshness_ms:
            ordered = sorted(report.freshness_ms)
            log.debug("indexed", upserted=report.upserted, freshness_p50_ms=ordered[len(ordered) // 2])
        await asyncio.gather(*pending)

    return index
