"""Milvus (a Milvus Lite server process) killed mid-stream: the index agent backs off, commits no
offset past what Milvus holds, hands its batch back on SIGTERM, and catches up once Milvus is back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.index.milvus_server import MilvusLiteServer
from streams.kafka.topics import Topics
from streams.settings import Settings

from ..conftest import wait_for
from .helpers import (
    CODEC,
    account_raw,
    committed_but_unprocessed,
    committed_total,
    end_total,
    fault_port,
    pipeline_worker,
    publish,
    read_topic_messages,
    records_of,
    report,
    snapshot,
    unique_documents,
    wait_pipeline,
)

DOCUMENTS = 200


@pytest.fixture
def milvus(tmp_path: Path) -> Iterator[MilvusLiteServer]:
    server = MilvusLiteServer(tmp_path / "milvus-data", fault_port(8))
    server.start()
    yield server
    server.kill()


def retries(log: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if '"vector_store_unavailable"' in line]
    return [line for line in lines if line.get("retry_in_s")]


def test_milvus_down_backs_off_commits_nothing_unwritten_and_catches_up(
    settings: Settings, milvus: MilvusLiteServer
) -> None:
    settings = settings.model_copy(update={"milvus_uri": milvus.uri, "near_dup_enabled": False})
    topics = Topics(settings.namespace)
    group = topics.app_id("ingest", "embed", "index")
    documents = records_of(unique_documents(DOCUMENTS, offset=1500))
    worker = pipeline_worker(settings).start()
    publish(settings, documents[: DOCUMENTS // 2])
    assert wait_for(lambda: committed_total(settings, group, topics.docs_embeddings) > 0, timeout=240), (
        worker.log_tail()
    )
    milvus.kill()
    down_at = time.monotonic()
    publish(settings, documents[DOCUMENTS // 2 :])

    # Ingest and embed go on; the index agent retries with growing delays and commits nothing more.
    assert wait_for(lambda: len(retries(worker.log)) >= 4, timeout=240), worker.log_tail()
    held = committed_total(settings, group, topics.docs_embeddings)
    time.sleep(5)
    assert committed_total(settings, group, topics.docs_embeddings) == held
    assert held < end_total(settings, topics.docs_embeddings)
    delays = [line["retry_in_s"] for line in retries(worker.log)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0], delays

    # SIGTERM while Milvus is down: the worker exits and hands the unwritten batch back.
    started = time.monotonic()
    exit_code = worker.stop()
    stop_seconds = round(time.monotonic() - started, 1)
    assert exit_code == 0, worker.log_tail()
    assert '"batch_handed_back"' in worker.log.read_text()

    milvus.start()
    down_s = round(time.monotonic() - down_at, 1)
    at_restart = snapshot(settings)
    unprocessed = committed_but_unprocessed(settings, group, at_restart)
    assert unprocessed == {"ingest": [], "embed": [], "index": []}, unprocessed

    restarted = pipeline_worker(settings).start()
    try:
        wait_pipeline(settings, restarted)
    finally:
        assert restarted.stop() == 0, restarted.log_tail()
    final = snapshot(settings)
    clean = [CODEC.decode(m.value, "CleanChunk") for m in read_topic_messages(settings, topics.docs_clean)]
    assert set(final.rows) == {c["chunk_id"] for c in clean if c["op"] == "UPSERT"}
    assert account_raw(settings)["accounted"]
    report(
        "Milvus server killed mid-stream",
        documents=DOCUMENTS,
        retry_delays_s=delays,
        index_committed_while_down=held,
        embeddings_waiting_while_down=end_total(settings, topics.docs_embeddings) - held,
        sigterm_with_milvus_down_exit_code=exit_code,
        sigterm_stop_s=stop_seconds,
        milvus_down_s=down_s,
        rows_before_catch_up=len(at_restart.rows),
        rows_after_catch_up=len(final.rows),
        committed_but_unwritten=0,
    )
