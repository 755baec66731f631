"""Index agent: ``docs.embeddings`` -> Milvus (batched upserts and deletes, retried).

Writes are idempotent (keyed by chunk id), so redeliveries and replays never duplicate. When
Milvus fails, the batch is retried with exponential backoff and its events stay unacknowledged,
so no offset past an unwritten record is committed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust

from agents.common import codec_from_settings, dead_letter_for, raw_topic, send_dead_letter
from streams.avro import CodecError
from streams.embed import version_for
from streams.indexing import apply_embeddings
from streams.logs import get_logger
from streams.settings import Settings
from streams.topics import Topics
from streams.vectorstore import MilvusStore

log = get_logger(__name__)
MAX_BACKOFF_SECONDS = 30.0


def register_index(app: faust.App, settings: Settings) -> Any:
    """Declare the index agent on ``app``."""
    topics = Topics(settings.namespace)
    codec = codec_from_settings(settings)
    # The collection follows the embedder this deployment runs; another version is refused.
    model_version = version_for(settings)
    stores: list[MilvusStore] = []

    def open_store() -> MilvusStore:
        return MilvusStore.from_settings(settings, model_version)

    @app.agent(raw_topic(app, topics.docs_embeddings, settings), name="index")
    async def index(stream: Any) -> None:
        try:  # open (and create or load) the collection before the first batch arrives
            stores.append(await asyncio.get_running_loop().run_in_executor(None, open_store))
        except Exception as error:  # noqa: BLE001 - retried with backoff on the first batch
            log.warning("vector_store_unavailable", error=repr(error), retry_in_s=0)
        async for events in stream.take_events(settings.index_batch_size, within=settings.index_batch_seconds):
            records, pending = [], []
            for event in events:
                try:
                    records.append(codec.decode(event.message.value or b"", "ChunkEmbedding"))
                except CodecError as error:
                    letter = dead_letter_for(event, "index", error.reason, error.detail)
                    pending.append(await send_dead_letter(app, codec, topics, letter))
            foreign = [r for r in records if r["op"] == "UPSERT" and r["model_version"] != model_version]
            for record in foreign:
                log.warning("foreign_model_version", chunk_id=record["chunk_id"], version=record["model_version"])
            records = [r for r in records if r not in foreign]
            delay = 0.5
            while True:
                if app.should_stop:
                    # Shutting down: hand the batch back unacknowledged; it is redelivered later.
                    raise asyncio.CancelledError
                try:
                    if not stores:
                        stores.append(await asyncio.get_running_loop().run_in_executor(None, open_store))
                    # Milvus calls block; a thread keeps the event loop serving the other agents.
                    report = await asyncio.get_running_loop().run_in_executor(
                        None, apply_embeddings, records, stores[0], model_version
                    )
                    break
                except Exception as error:  # noqa: BLE001 - any store failure: back off, keep the offsets
                    log.warning("vector_store_unavailable", error=repr(error), retry_in_s=delay)
                    for store in stores:
                        store.close()
                    stores.clear()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_BACKOFF_SECONDS)
            if report.freshness_ms:
                ordered = sorted(report.freshness_ms)
                log.debug("indexed", upserted=report.upserted, freshness_p50_ms=ordered[len(ordered) // 2])
            await asyncio.gather(*pending)

    return index
