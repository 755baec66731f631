"""kill -9 the broker mid-stream and start it again: the idempotent acks=all producer and the worker's
agents carry on, nothing is lost and nothing is written twice on docs.raw."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from streams.kafka.admin import ensure_topics, producer
from streams.kafka.broker import EmbeddedKafka
from streams.kafka.topics import Topics
from streams.settings import Settings

from ..conftest import wait_for
from .helpers import (
    account_raw,
    end_total,
    pipeline_worker,
    records_of,
    report,
    snapshot,
    unique_documents,
    wait_pipeline,
)

DOCUMENTS, BATCH = 240, 10


async def publish_through_a_restart(
    settings: Settings, broker: EmbeddedKafka, records: list[tuple[bytes, bytes]], worker_busy: Callable[[], bool]
) -> dict[str, Any]:
    """One producer sends batches every 0.2 s; after a third of them (once the worker has output for
    them) the broker is killed, and started again 2 s later while sends go on."""
    topic = Topics(settings.namespace).docs_raw
    client = producer(settings, request_timeout_ms=120_000, retry_backoff_ms=250)
    await client.start()
    loop = asyncio.get_running_loop()
    figures: dict[str, Any] = {"acked": 0, "send_errors": 0}
    try:
        batches = [records[i : i + BATCH] for i in range(0, len(records), BATCH)]
        for number, batch in enumerate(batches):
            if number == len(batches) // 3:
                assert await loop.run_in_executor(None, wait_for, worker_busy, 180.0), "the worker never got going"
                killed = time.monotonic()
                await loop.run_in_executor(None, broker.kill)
                await asyncio.sleep(2.0)  # down for a while: sends queue up meanwhile
                restart = loop.run_in_executor(None, broker.start, 180.0)
            futures = [await client.send(topic, value=value, key=key) for key, value in batch]
            for result in await asyncio.gather(*futures, return_exceptions=True):
                if isinstance(result, BaseException):
                    figures["send_errors"] += 1
                else:
                    figures["acked"] += 1
            if number == len(batches) // 3:
                await restart
                figures["kill_to_broker_up_and_batch_acked_s"] = round(time.monotonic() - killed, 1)
            await asyncio.sleep(0.2)
    finally:
        await client.stop()
    return figures


def test_broker_kill_9_and_restart_mid_stream_loses_nothing(settings: Settings, own_broker: EmbeddedKafka) -> None:
    settings = settings.model_copy(update={"bootstrap_servers": own_broker.bootstrap, "near_dup_enabled": False})
    topics = Topics(settings.namespace)
    asyncio.run(ensure_topics(settings))
    records = records_of(unique_documents(DOCUMENTS, offset=600))
    worker = pipeline_worker(settings).start()
    try:
        figures = asyncio.run(
            publish_through_a_restart(
                settings, own_broker, records, lambda: end_total(settings, topics.docs_embeddings) > 0
            )
        )
        wait_pipeline(settings, worker, timeout=400)
        assert worker.alive(), worker.log_tail()
    finally:
        assert worker.stop() == 0, worker.log_tail()

    assert figures["send_errors"] == 0 and figures["acked"] == DOCUMENTS, figures
    assert end_total(settings, topics.docs_raw) == DOCUMENTS, "no duplicates on docs.raw (idempotent producer)"
    summary = account_raw(settings)
    assert summary["accounted"], summary
    index = snapshot(settings)
    assert {doc_id for doc_id, _, _ in index.rows.values()} == {key.decode() for key, _ in records}
    report(
        "broker kill -9 and restart mid-stream",
        documents=DOCUMENTS,
        raw_records=end_total(settings, topics.docs_raw),
        chunks_indexed=len(index.rows),
        clean_records=end_total(settings, topics.docs_clean),
        embeddings_records=end_total(settings, topics.docs_embeddings),
        **figures,
    )
