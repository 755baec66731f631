"""Embed and index stages over an in-memory vector store: order, deletes, model versions."""

from collections.abc import Sequence

import numpy as np
import pytest

from streams.index.indexing import SealPolicy, apply_embeddings, embed_chunks
from streams.index.vectorstore import ChunkRow, Hit, collection_name, quote


class MemoryStore:
    """A dict standing in for Milvus in tests of the pure stage."""

    def __init__(self) -> None:
        self.rows: dict[str, ChunkRow] = {}

    def upsert(self, rows: Sequence[ChunkRow]) -> None:
        self.rows.update({row.chunk_id: row for row in rows})

    def delete_chunks(self, chunk_ids: Sequence[str]) -> None:
        for chunk_id in chunk_ids:
            self.rows.pop(chunk_id, None)

    def delete_document(self, doc_id: str, from_index: int = 0) -> None:
        for key in [k for k, r in self.rows.items() if r.doc_id == doc_id and r.chunk_index >= from_index]:
            del self.rows[key]

    def search(self, vector: Sequence[float], top_k: int, tenant: str | None) -> list[Hit]:
        raise NotImplementedError

    def count(self) -> int:
        return len(self.rows)


class FixedEmbedder:
    name, version, dimension = "fixed", "v1", 2

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)


def chunk(doc: str, index: int, count: int, op: str = "UPSERT", text: str = "t") -> dict:
    return {
        "op": op,
        "chunk_id": f"{doc}#{index}" if index >= 0 else f"{doc}#*",
        "doc_id": doc,
        "chunk_index": index,
        "chunk_count": count,
        "content_hash": "h",
        "text": text,
        "title": None,
        "source": None,
        "tenant": "acme",
        "raw_timestamp_ms": 1000,
        "traceparent": None,
    }


def test_embedding_keeps_order_and_passes_deletions_through() -> None:
    records = embed_chunks(
        [chunk("a", 0, 2, text="xx"), chunk("a", 1, 0, "DELETE"), chunk("b", 0, 1, text="y")], FixedEmbedder()
    )
    assert [(r["chunk_id"], r["op"], r["vector"], r["dimension"]) for r in records] == [
        ("a#0", "UPSERT", [2.0, 1.0], 2),
        ("a#1", "DELETE", [], 0),
        ("b#0", "UPSERT", [1.0, 1.0], 2),
    ]
    assert all(r["model_version"] == "v1" for r in records)


def test_index_follows_upserts_updates_and_deletes_in_topic_order() -> None:
    store = MemoryStore()
    embed = FixedEmbedder()
    apply_embeddings(embed_chunks([chunk("a", i, 3) for i in range(3)], embed), store, "v1", clock_ms=lambda: 1500)
    assert sorted(store.rows) == ["a#0", "a#1", "a#2"]
    assert store.rows["a#0"].indexed_at_ms - store.rows["a#0"].raw_timestamp_ms == 500
    # A shorter new version: ingest sends DELETEs for the chunks it no longer has.
    apply_embeddings(embed_chunks([chunk("a", 0, 2), chunk("a", 1, 2), chunk("a", 2, 0, "DELETE")], embed), store, "v1")
    assert sorted(store.rows) == ["a#0", "a#1"]
    report = apply_embeddings(embed_chunks([chunk("a", 0, 2), chunk("a", 0, 0, "DELETE")], embed), store, "v1")
    assert sorted(store.rows) == ["a#1"] and report.upserted == 1 and report.deleted_chunks == 1
    apply_embeddings(embed_chunks([chunk("a", -1, 0, "DELETE")], embed), store, "v1")
    assert store.rows == {}


def test_replaying_the_same_embeddings_changes_nothing() -> None:
    store = MemoryStore()
    records = embed_chunks([chunk("a", 0, 1), chunk("b", 0, 1)], FixedEmbedder())
    apply_embeddings(records, store, "v1", clock_ms=lambda: 5)
    before = dict(store.rows)
    apply_embeddings(records, store, "v1", clock_ms=lambda: 5)
    assert store.rows == before


def test_vectors_of_another_model_version_are_refused() -> None:
    with pytest.raises(ValueError, match="model"):
        apply_embeddings(embed_chunks([chunk("a", 0, 1)], FixedEmbedder()), MemoryStore(), "v2")


def test_filters_quote_user_values_and_names_are_safe() -> None:
    assert quote('x" or tenant != "') == '"x\\" or tenant != \\""'
    assert collection_name("replay-1", "ab" * 32) == "chunks_v2_replay_1_abababababababab"


def test_the_last_version_of_a_chunk_in_one_batch_wins() -> None:
    store = MemoryStore()
    records = embed_chunks([chunk("a", 0, 1, text="old"), chunk("a", 0, 1, text="new text")], FixedEmbedder())
    report = apply_embeddings(records, store, "v1")
    assert store.rows["a#0"].text == "new text" and report.upserted == 1


class FlakyStore(MemoryStore):
    """Fails its first ``failures`` writes, like a Milvus that is restarting."""

    def __init__(self, shared: dict, failures: list[int]) -> None:
        super().__init__()
        self.rows = shared
        self.failures = failures

    def upsert(self, rows: Sequence[ChunkRow]) -> None:
        if self.failures[0] > 0:
            self.failures[0] -= 1
            raise ConnectionError("milvus is down")
        super().upsert(rows)


async def test_a_failing_store_is_reopened_with_backoff_until_the_batch_is_written() -> None:
    from streams.index.indexing import write_with_retry

    shared: dict = {}
    failures = [3]
    opened: list[int] = []
    delays: list[float] = []

    def open_store() -> FlakyStore:
        opened.append(1)
        return FlakyStore(shared, failures)

    async def fake_sleep(seconds: float) -> None:
        delays.append(seconds)

    records = embed_chunks([chunk("a", 0, 1)], FixedEmbedder())
    report = await write_with_retry(records, open_store, "v1", stores=[], sleep=fake_sleep, max_backoff=1.5)
    assert report.upserted == 1 and sorted(shared) == ["a#0"]
    assert delays == [0.5, 1.0, 1.5] and len(opened) == 4


async def test_shutdown_while_the_store_fails_hands_the_batch_back() -> None:
    from streams.index.indexing import ShuttingDown, write_with_retry

    stopping = [False]

    async def fake_sleep(seconds: float) -> None:
        stopping[0] = True

    with pytest.raises(ShuttingDown):
        await write_with_retry(
            embed_chunks([chunk("a", 0, 1)], FixedEmbedder()),
            lambda: FlakyStore({}, [99]),
            "v1",
            stores=[],
            should_stop=lambda: stopping[0],
            sleep=fake_sleep,
        )


@pytest.mark.parametrize(
    ("rows", "idle", "sealed"),
    [
        (0, 60.0, False),  # nothing written: nothing to seal
        (64, 1.5, False),  # a small pile after a short pause waits (one segment per batch was costly)
        (64, 5.0, True),  # ...until writes pause for longer
        (1024, 1.0, True),  # a larger pile is sealed at the first short pause
        (1024, 0.2, False),  # ...but not while writes keep coming
        (8192, 0.0, True),  # and a full pile is sealed even then
    ],
)
def test_seal_policy_waits_for_a_pause_or_a_pile(rows: int, idle: float, sealed: bool) -> None:
    assert SealPolicy().should_seal(rows, idle) is sealed


class PickyStore(MemoryStore):
    """Up, but refuses rows whose tenant is over 8 characters, as a VARCHAR(8) column would."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def upsert(self, rows: Sequence[ChunkRow]) -> None:
        from streams.index.vectorstore import RecordRejected

        self.writes += 1
        if any(len(row.tenant) > 8 for row in rows):
            raise RecordRejected("VARCHAR field 'tenant' value length exceeds max_length=8")
        super().upsert(rows)


def test_a_record_the_store_refuses_is_set_aside_and_the_rest_of_its_batch_is_written() -> None:
    from streams.index.indexing import apply_isolating

    records = embed_chunks([chunk(f"d{i}", 0, 1) for i in range(9)], FixedEmbedder())
    records[5]["tenant"] = "x" * 300
    store = PickyStore()
    report = apply_isolating(records, store, "v1")
    assert [(r.position, r.reason) for r in report.rejected] == [(5, "STORE_REJECTED")]
    assert "max_length" in report.rejected[0].detail
    assert sorted(store.rows) == sorted(f"d{i}#0" for i in range(9) if i != 5)
    assert report.upserted == 8
    assert store.writes <= 1 + 2 * 4  # the batch, then halves down to the bad record: O(log n)


def test_deletes_after_a_refused_upsert_still_apply_in_order() -> None:
    from streams.index.indexing import apply_isolating

    store = PickyStore()
    apply_embeddings(embed_chunks([chunk("keep", 0, 1), chunk("gone", 0, 1)], FixedEmbedder()), store, "v1")
    batch = embed_chunks([chunk("bad", 0, 1), chunk("gone", -1, 0, op="DELETE"), chunk("new", 0, 1)], FixedEmbedder())
    batch[0]["tenant"] = "t" * 20
    report = apply_isolating(batch, store, "v1")
    assert [r.position for r in report.rejected] == [0]
    assert sorted(store.rows) == ["keep#0", "new#0"]


def test_an_outage_is_not_a_bad_record() -> None:
    from streams.index.indexing import apply_isolating

    store = FlakyStore({}, [1])
    with pytest.raises(ConnectionError):  # propagates: write_with_retry backs off and retries the batch
        apply_isolating(embed_chunks([chunk("a", 0, 1)], FixedEmbedder()), store, "v1")
    assert store.rows == {}
