"""kill -9 a worker (ingest, embed, index) mid-stream and restart it: the index ends as a clean run's."""

from __future__ import annotations

from streams.kafka.topics import Topics
from streams.settings import Settings

from ..conftest import wait_for
from .helpers import (
    account_raw,
    committed_total,
    end_total,
    pipeline_worker,
    publish,
    records_of,
    report,
    sigkill,
    snapshot,
    unique_documents,
    wait_pipeline,
)

DOCUMENTS = 300


def test_kill_9_mid_stream_then_restart_leaves_the_index_of_a_clean_run(settings: Settings) -> None:
    settings = settings.model_copy(update={"near_dup_enabled": False})
    documents = unique_documents(DOCUMENTS)
    first, second = records_of(documents[: DOCUMENTS // 2]), records_of(documents[DOCUMENTS // 2 :])

    # The reference: the same documents through an undisturbed worker, in its own namespace.
    clean = settings.model_copy(update={"namespace": settings.namespace + "c"})
    worker = pipeline_worker(clean).start()
    try:
        publish(clean, first + second)
        wait_pipeline(clean, worker)
    finally:
        assert worker.stop() == 0, worker.log_tail()
    expected = snapshot(clean)

    topics = Topics(settings.namespace)
    group = topics.app_id("ingest", "embed", "index")
    worker = pipeline_worker(settings).start()
    publish(settings, first)
    # Kill once the index has committed some offsets: vectors are in Milvus, and embed and ingest
    # are mid-stream (the second half is published just before the kill).
    assert wait_for(lambda: committed_total(settings, group, topics.docs_embeddings) > 0, timeout=180, interval=0.3), (
        worker.log_tail()
    )
    publish(settings, second)
    at_kill = {
        "raw_committed": committed_total(settings, group, topics.docs_raw),
        "clean_committed": committed_total(settings, group, topics.docs_clean),
        "embeddings_committed": committed_total(settings, group, topics.docs_embeddings),
        "embeddings_written": end_total(settings, topics.docs_embeddings),
    }
    sigkill(worker)

    restarted = pipeline_worker(settings).start()
    try:
        wait_pipeline(settings, restarted)
    finally:
        assert restarted.stop() == 0, restarted.log_tail()
    after = snapshot(settings)
    summary = account_raw(settings)

    assert summary["accounted"], summary
    assert after.differences(expected) == {}
    assert len(after.rows) == len(expected.rows) > DOCUMENTS
    report(
        "worker kill -9 mid-stream",
        documents=DOCUMENTS,
        chunks_indexed=len(after.rows),
        clean_run_chunks=len(expected.rows),
        at_kill=at_kill,
        embeddings_after=end_total(settings, topics.docs_embeddings),
        embeddings_redone=end_total(settings, topics.docs_embeddings)
        - end_total(clean, Topics(clean.namespace).docs_embeddings),
        differences_from_clean_run=after.differences(expected),
    )
