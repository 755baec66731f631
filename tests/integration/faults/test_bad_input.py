"""Thousands of generated bad records interleaved with good ones on docs.raw, through a full worker:
every record is accounted for, every good one reaches the index, and the worker never dies."""

from __future__ import annotations

from collections import Counter, defaultdict

from streams.kafka.topics import Topics
from streams.settings import Settings

from ...fuzz import generate, good_raw_documents, interleave, raw_target, volume
from ..conftest import final_chunks
from .helpers import (
    CODEC,
    account_raw,
    pipeline_worker,
    publish,
    read_topic_messages,
    report,
    snapshot,
    wait_pipeline,
)

BAD, GOOD = 3000, 500


def test_fuzzed_docs_raw_every_record_accounted_for_and_every_good_one_indexed(settings: Settings) -> None:
    settings = settings.model_copy(update={"max_text_bytes": 100_000})
    topics = Topics(settings.namespace)
    records = interleave(good_raw_documents(GOOD, seed=3), generate(raw_target(topics.docs_raw), BAD, seed=3), seed=3)
    expected_by_bytes: dict[tuple[bytes | None, bytes | None], set[str]] = defaultdict(set)
    for record in records:
        expected_by_bytes[(record.key, record.value)].add(record.expect)

    worker = pipeline_worker(settings).start()
    try:
        publish(settings, [(r.key, r.value) for r in records])
        wait_pipeline(settings, worker, timeout=600)
        assert worker.alive(), worker.log_tail()
    finally:
        assert worker.stop() == 0, worker.log_tail()

    summary = account_raw(settings)
    assert summary["accounted"], summary
    assert summary["published"] == len(records)

    # What became of each published record, by its source offset.
    outcome: dict[str, set[str]] = defaultdict(set)
    reasons: Counter[str] = Counter()
    outputs = [topics.docs_clean, topics.docs_duplicates, topics.deadletter]
    for message in [m for name in outputs for m in read_topic_messages(settings, name)]:
        source = dict(message.headers or ()).get("llmops.source", b"").decode()
        if message.topic == topics.deadletter:
            letter = CODEC.decode(message.value, "DeadLetter")
            assert letter["reason"] and letter["detail"], letter
            reasons[f"{letter['stage']}:{letter['reason']}"] += 1
            outcome[source].add("dead_letter" if letter["stage"] == "ingest" else "index_dead_letter")
        else:  # chunks, or a duplicate notice (a processed document that was skipped as a copy)
            outcome[source].add("output")
    wrong = []
    for message in read_topic_messages(settings, topics.docs_raw):
        source = f"{message.topic}:{message.partition}:{message.offset}"
        expect = expected_by_bytes[(message.key, message.value)]
        got = outcome[source]
        if "either" not in expect and not (expect & got):
            wrong.append((source, sorted(expect), sorted(got), (message.value or b"")[:80]))
    assert not wrong, wrong[:10]

    clean = [CODEC.decode(m.value, "CleanChunk") for m in read_topic_messages(settings, topics.docs_clean)]
    expected = final_chunks(clean)
    index = snapshot(settings)
    assert set(index.rows) == expected, sorted(expected ^ set(index.rows))[:10]
    good_ids = {c["doc_id"] for c in clean if c["op"] == "UPSERT"}
    skipped = {
        CODEC.decode(m.value, "DuplicateNotice")["doc_id"]
        for m in read_topic_messages(settings, topics.docs_duplicates)
    }
    assert len(good_ids | skipped) >= GOOD
    report(
        "bad input at volume on docs.raw",
        bad=BAD,
        good=GOOD,
        **volume(records),
        dead_letters=dict(reasons),
        documents_indexed=len(good_ids),
        documents_skipped_as_duplicates=len(skipped),
        chunks_indexed=len(index.rows),
        worker_exit_code=0,
    )
