"""The ingest stage end to end on plain values: one outcome per record, updates, deletes, dedup."""

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.ingest.chunk import RegexTokenizer
from streams.ingest.dedup import Conflict, DedupIndex, DocState, LookupIndex
from streams.ingest.pipeline import IngestConfig, IngestPipeline, IngestRecord, Outcome
from streams.kafka.avro import AvroCodec, EmbeddedRegistry
from streams.records import ChunkOp, DuplicateKind, SourceCoordinates

CODEC = AvroCodec(EmbeddedRegistry.from_directory())
TEXT = " ".join(f"sentence {i} talks about topic {i % 5} in plain words" for i in range(40))


def pipeline(chunk_tokens: int = 32) -> IngestPipeline:
    return IngestPipeline(
        IngestConfig(chunk_tokens=chunk_tokens, chunk_overlap=4), CODEC, RegexTokenizer(), clock_ms=lambda: 1234
    )


def record(value: dict | bytes | None, key: str | None = None, offset: int = 0) -> IngestRecord:
    if isinstance(value, dict):
        key = key or value["id"]
        value = json.dumps(value).encode()
    return IngestRecord(
        key.encode() if key else None,
        value,
        SourceCoordinates("docs.raw", 2, offset, 99_000),
        traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
    )


def test_a_document_becomes_ordered_upsert_chunks_with_ids_hashes_and_trace() -> None:
    result = pipeline().process(record({"id": "d", "text": TEXT, "tenant": "acme", "metadata": {"k": "v"}}), {})
    assert result.outcome is Outcome.INDEXED
    assert [c.chunk_id for c in result.chunks] == [f"d#{i}" for i in range(len(result.chunks))]
    assert len(result.chunks) > 3
    assert all(c.op is ChunkOp.UPSERT and c.chunk_count == len(result.chunks) for c in result.chunks)
    assert all(c.tenant == "acme" and c.metadata == {"k": "v"} and c.raw_timestamp_ms == 99_000 for c in result.chunks)
    assert all(c.traceparent and c.traceparent.startswith("00-111") for c in result.chunks)
    assert len({c.doc_hash for c in result.chunks}) == 1


def test_pii_is_redacted_before_chunking_and_counted() -> None:
    result = pipeline().process(record({"id": "d", "text": "mail bob@example.com or 10.0.0.1 now"}), {})
    assert result.chunks[0].text == "mail [EMAIL] or [IP] now"
    assert result.pii_counts == {"email": 1, "ip": 1}
    assert result.chunks[0].pii_redacted == {"email": 1, "ip": 1}


def test_an_update_replaces_chunks_and_deletes_the_ones_it_no_longer_has() -> None:
    store: dict = {}
    first = pipeline().process(record({"id": "d", "text": TEXT}), store)
    second = pipeline().process(record({"id": "d", "text": "now a short text"}, offset=1), store)
    upserts = [c for c in second.chunks if c.op is ChunkOp.UPSERT]
    deletes = [c for c in second.chunks if c.op is ChunkOp.DELETE]
    assert [c.chunk_id for c in upserts] == ["d#0"] and upserts[0].text == "now a short text"
    assert [c.chunk_id for c in deletes] == [f"d#{i}" for i in range(1, len(first.chunks))]


def test_tombstone_and_deleted_flag_delete_every_chunk() -> None:
    store: dict = {}
    indexed = pipeline().process(record({"id": "d", "text": TEXT}), store)
    deleted = pipeline().process(record(None, key="d", offset=1), store)
    assert deleted.outcome is Outcome.DELETED
    assert [c.chunk_id for c in deleted.chunks] == [c.chunk_id for c in indexed.chunks]
    assert store == {}
    unknown = pipeline().process(record({"id": "never-seen", "deleted": True}), store)
    assert [(c.op, c.chunk_index) for c in unknown.chunks] == [(ChunkOp.DELETE, -1)]


def test_a_copy_under_another_id_is_a_duplicate_and_a_redelivery_is_not() -> None:
    store: dict = {}
    pipeline().process(record({"id": "a", "text": TEXT}), store)
    copy = pipeline().process(record({"id": "b", "text": "<p>" + TEXT + "</p>"}), store)
    assert copy.outcome is Outcome.DUPLICATE and copy.chunks == ()
    assert copy.duplicate is not None and copy.duplicate.duplicate_of == "a"
    again = pipeline().process(record({"id": "a", "text": TEXT}), store)
    assert again.outcome is Outcome.INDEXED, "the same document redelivered is re-emitted (idempotent downstream)"


def test_bad_records_become_dead_letters_with_the_original_bytes() -> None:
    raw = b'{"id": "x", "text": '
    result = pipeline().process(record(raw, key="x", offset=7), {})
    assert result.outcome is Outcome.REJECTED and result.dead_letter is not None
    letter = result.dead_letter
    assert (letter.reason, letter.stage, letter.value, letter.key) == ("BAD_JSON", "ingest", raw, b"x")
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == ("docs.raw", 2, 7)
    assert letter.rejected_at_ms == 1234


def test_text_that_cleans_to_nothing_is_rejected() -> None:
    result = pipeline().process(record({"id": "x", "text": "<p> </p><script>x()</script>"}), {})
    assert result.dead_letter is not None and result.dead_letter.reason == "EMPTY_TEXT"


def test_an_internal_error_on_one_record_does_not_stop_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    stage = pipeline()
    original = stage.prepare

    def flaky(rec: IngestRecord):  # type: ignore[no-untyped-def]
        if rec.source.offset == 1:
            raise RuntimeError("boom")
        return original(rec)

    monkeypatch.setattr(stage, "prepare", flaky)
    results = stage.process_batch([record({"id": f"d{i}", "text": f"text {i}"}, offset=i) for i in range(3)], {})
    assert [r.outcome for r in results] == [Outcome.INDEXED, Outcome.REJECTED, Outcome.INDEXED]
    assert results[1].dead_letter is not None and results[1].dead_letter.reason == "INTERNAL_ERROR"


RECORDS = st.one_of(
    st.fixed_dictionaries({"id": st.sampled_from("abcde"), "text": st.text(max_size=300)}).map(record),
    st.fixed_dictionaries({"id": st.sampled_from("abcde"), "text": st.sampled_from([TEXT, TEXT + " more"])}).map(
        record
    ),
    st.sampled_from("abcde").map(lambda k: record(None, key=k)),
    st.binary(max_size=50).map(lambda b: record(b, key="z")),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(RECORDS, max_size=25))
def test_every_record_has_exactly_one_outcome_and_batches_equal_single_steps(records: list[IngestRecord]) -> None:
    batch_store: dict = {}
    single_store: dict = {}
    batched = pipeline().process_batch(records, batch_store)
    singles = [pipeline().process(r, single_store) for r in records]
    assert batched == singles
    assert batch_store == single_store
    for result in batched:
        produced = [bool(result.chunks) or result.outcome is Outcome.DUPLICATE, result.dead_letter is not None]
        assert sum(produced) == 1
        if result.outcome is Outcome.INDEXED:
            assert any(c.op is ChunkOp.UPSERT for c in result.chunks)


def final_index(results: list) -> dict[str, str]:
    """chunk_id -> content hash after applying every emitted chunk op in order (what the index holds)."""
    index: dict[str, str] = {}
    for result in results:
        for chunk in result.chunks:
            if chunk.op is ChunkOp.UPSERT:
                index[chunk.chunk_id] = chunk.content_hash
            elif chunk.chunk_index < 0:
                index = {k: v for k, v in index.items() if not k.startswith(f"{chunk.doc_id}#")}
            else:
                index.pop(chunk.chunk_id, None)
    return index


def test_the_smallest_id_is_the_canonical_copy_in_either_arrival_order() -> None:
    late_small = [record({"id": "b", "text": TEXT}), record({"id": "a", "text": "<p>" + TEXT + "</p>"}, offset=1)]
    store: dict = {}
    results = pipeline().process_batch(late_small, store)
    assert [r.outcome for r in results] == [Outcome.INDEXED, Outcome.INDEXED]
    (notice,) = results[1].demoted
    assert (notice.doc_id, notice.duplicate_of) == ("b", "a")
    assert {c.doc_id for c in results[1].chunks if c.op is ChunkOp.DELETE} == {"b"}
    assert store["b"]["duplicate_of"] == "a" and store["b"]["chunk_count"] == 0
    early_small = pipeline().process_batch(list(reversed(late_small)), {})
    assert final_index(results) == final_index(early_small)
    assert {k.split("#")[0] for k in final_index(results)} == {"a"}


@settings(max_examples=30, deadline=None)
@given(st.permutations(range(6)))
def test_the_final_index_does_not_depend_on_arrival_order(order: list[int]) -> None:
    near = TEXT.replace("sentence 3 ", "sentence three ")
    other = " ".join(f"an unrelated line {i} about gardening and soil" for i in range(40))
    documents = [
        {"id": "d1", "text": TEXT},
        {"id": "d0", "text": near},  # near duplicate, smaller id
        {"id": "d5", "text": TEXT},  # exact duplicate, larger id
        {"id": "e2", "text": other},
        {"id": "e1", "text": other + " and compost"},
        {"id": "f", "text": "a short text of its own"},
    ]
    baseline = final_index(pipeline().process_batch([record(d, offset=i) for i, d in enumerate(documents)], {}))
    assert {chunk_id.split("#")[0] for chunk_id in baseline} == {"d0", "e1", "f"}  # one copy per group
    shuffled = [record(documents[i], offset=n) for n, i in enumerate(order)]
    assert final_index(pipeline().process_batch(shuffled, {})) == baseline


def on_partition(value: dict, partition: int, offset: int = 0) -> IngestRecord:
    base = record(value, offset=offset)
    return dataclasses.replace(base, source=dataclasses.replace(base.source, partition=partition))


def test_copies_indexed_by_two_workers_at_once_end_as_one_worker_leaves_them() -> None:
    """Two workers take in two copies before either sees the other's write; the larger id's owner retracts it."""
    workers = {0: (pipeline(), {}, LookupIndex(3, True)), 1: (pipeline(), {}, LookupIndex(3, True))}
    first = workers[0][0].process_batch([on_partition({"id": "a", "text": TEXT}, 0)], workers[0][1], workers[0][2])
    second = workers[1][0].process_batch([on_partition({"id": "b", "text": TEXT}, 1)], workers[1][1], workers[1][2])
    assert [r.outcome for r in first + second] == [Outcome.INDEXED, Outcome.INDEXED]  # neither saw the other
    # Each worker's changelog reader receives the other's write (and its own echo).
    for partition, (_, _, lookups) in workers.items():
        for doc_id, state in workers[1 - partition][1].items():
            lookups.apply_remote(doc_id, dict(state))
        assert lookups.contested() == [Conflict("a", "b", DuplicateKind.EXACT, 0)]
    assert workers[0][0].retractions(workers[0][2], lambda p: p == 0, "docs.raw") == []  # not a's owner's job
    (retraction,) = workers[1][0].retractions(workers[1][2], lambda p: p == 1, "docs.raw")
    assert retraction.doc_id == "b" and retraction.state.duplicate_of == "a"
    notice = retraction.result.duplicate
    assert notice is not None and (notice.doc_id, notice.duplicate_of, notice.kind) == ("b", "a", DuplicateKind.EXACT)
    # Published, then the state written: every worker applies it and the contest is over.
    DedupIndex(workers[1][1], lookups=workers[1][2]).replace("b", retraction.state)
    retracted = dict(workers[1][1]["b"])
    assert retracted["revision"] == 1  # same record, a later revision
    indexed_echo = {**retracted, "duplicate_of": None, "revision": 0, "chunk_count": 3}
    for _, _, lookups in workers.values():
        lookups.apply_remote("b", retracted)
        lookups.apply_remote("b", indexed_echo)  # the copy's earlier, indexed state arriving late
        assert lookups.contested() == [] and lookups.owners[retracted["doc_hash"]] == "a"
    one_worker = pipeline().process_batch(
        [on_partition({"id": "a", "text": TEXT}, 0), on_partition({"id": "b", "text": TEXT}, 1)], {}
    )
    assert final_index([*first, *second, retraction.result]) == final_index(one_worker)
    # A later copy goes to the canonical document on either worker.
    third = workers[0][0].process_batch([on_partition({"id": "c", "text": TEXT}, 0, 5)], workers[0][1], workers[0][2])
    assert third[0].outcome is Outcome.DUPLICATE and third[0].duplicate.duplicate_of == "a"


def test_near_copies_indexed_by_two_workers_at_once_end_as_one_worker_leaves_them() -> None:
    near = TEXT.replace("sentence 3 ", "sentence three ")
    documents = [on_partition({"id": "n1", "text": near}, 1), on_partition({"id": "n0", "text": TEXT}, 0)]
    workers = [(pipeline(), {}, LookupIndex(3, True)) for _ in documents]
    results = [
        p.process_batch([d], store, lookups)[0] for d, (p, store, lookups) in zip(documents, workers, strict=True)
    ]
    assert [r.outcome for r in results] == [Outcome.INDEXED, Outcome.INDEXED]
    for _, _, lookups in workers:  # every worker's changelog reader sees both writes
        for _, other_store, _ in workers:
            for doc_id, state in other_store.items():
                lookups.apply_remote(doc_id, dict(state))
        (conflict,) = lookups.contested()
        assert (conflict.winner, conflict.loser, conflict.kind) == ("n0", "n1", DuplicateKind.NEAR)
        assert 0 < conflict.distance <= 3
    (retraction,) = workers[0][0].retractions(workers[0][2], lambda p: p == 1, "docs.raw")
    assert workers[1][0].retractions(workers[1][2], lambda p: p == 0, "docs.raw") == []
    one_worker = pipeline().process_batch(documents, {})
    assert final_index([*results, retraction.result]) == final_index(one_worker)
    assert {k.split("#")[0] for k in final_index(one_worker)} == {"n0"}
    DedupIndex(workers[0][1], lookups=workers[0][2]).replace("n1", retraction.state)
    assert workers[0][2].contested() == []  # the pair no longer holds: n1 is a copy now


def test_a_state_written_by_another_version_loads() -> None:
    older = {"doc_hash": "h", "simhash": 1, "chunk_count": 2}
    newer = {**older, "offset": 4, "partition": 1, "revision": 2, "added_later": True}
    assert DocState.from_dict(older) == DocState("h", 1, 2)
    assert DocState.from_dict(newer) == DocState("h", 1, 2, offset=4, partition=1, revision=2)
