"""SIGTERM mid-stream: the worker stops cleanly, commits nothing it has not finished, and a restart
completes the work with every chunk indexed once."""

from __future__ import annotations

import time

from streams.kafka.topics import Topics
from streams.settings import Settings

from ..conftest import wait_for
from .helpers import (
    CODEC,
    account_raw,
    committed_but_unprocessed,
    committed_total,
    end_total,
    pipeline_worker,
    publish,
    read_topic_messages,
    records_of,
    report,
    snapshot,
    unique_documents,
    wait_pipeline,
)

DOCUMENTS = 300


def test_sigterm_mid_stream_commits_nothing_unprocessed_and_a_restart_finishes_the_work(settings: Settings) -> None:
    settings = settings.model_copy(update={"near_dup_enabled": False})
    documents = unique_documents(DOCUMENTS, offset=300)
    topics = Topics(settings.namespace)
    group = topics.app_id("ingest", "embed", "index")
    worker = pipeline_worker(settings).start()
    publish(settings, records_of(documents))

    def embedding_in_full_swing() -> bool:
        embedded = end_total(settings, topics.docs_embeddings)
        return 30 <= embedded <= end_total(settings, topics.docs_clean) - 100

    # SIGTERM while the embedder is busy: batches are in flight in every stage.
    assert wait_for(embedding_in_full_swing, timeout=180, interval=0.2), worker.log_tail()
    backlog_at_sigterm = end_total(settings, topics.docs_clean) - end_total(settings, topics.docs_embeddings)
    started = time.monotonic()
    exit_code = worker.stop()
    stop_seconds = round(time.monotonic() - started, 2)
    assert exit_code == 0, worker.log_tail()

    at_stop = snapshot(settings)
    unprocessed = committed_but_unprocessed(settings, group, at_stop)
    assert unprocessed == {"ingest": [], "embed": [], "index": []}, unprocessed
    committed_at_stop = {
        name: committed_total(settings, group, name)
        for name in (topics.docs_raw, topics.docs_clean, topics.docs_embeddings)
    }

    restarted = pipeline_worker(settings).start()
    try:
        wait_pipeline(settings, restarted)
    finally:
        assert restarted.stop() == 0, restarted.log_tail()
    final = snapshot(settings)
    summary = account_raw(settings)
    upserts = [CODEC.decode(m.value, "CleanChunk") for m in read_topic_messages(settings, topics.docs_clean)]
    expected = {c["chunk_id"] for c in upserts if c["op"] == "UPSERT"}
    assert summary["accounted"], summary
    assert set(final.rows) <= expected, "no chunk that should not be there"
    # Once in four runs before agents.faust_fixes held stream partitions until flow resumes:
    # table recovery at the restart cleared records fetched during its seek, and Faust counted
    # the hole as acknowledged (23 docs.clean records of one partition never embedded).
    missing = sorted(expected - set(final.rows))
    assert not missing, f"{len(missing)} chunk(s) lost after the restart: {missing[:5]}"
    report(
        "SIGTERM mid-stream, then restart",
        documents=DOCUMENTS,
        stop_seconds=stop_seconds,
        chunks_not_yet_embedded_at_sigterm=backlog_at_sigterm,
        exit_code=exit_code,
        committed_at_stop=committed_at_stop,
        indexed_at_stop=len(at_stop.rows),
        committed_but_unprocessed=0,
        chunks_indexed=len(final.rows),
        clean_records=len(upserts),
        embeddings_total=end_total(settings, topics.docs_embeddings),
    )
