"""Exact and near-duplicate detection, and the banding that makes near lookups complete."""

import random

from hypothesis import given
from hypothesis import strategies as st

from streams.ingest.dedup import (
    DedupIndex,
    DocState,
    LookupIndex,
    band_keys,
    content_hash,
    hamming,
    shingles,
    simhash64,
)
from streams.records import DuplicateKind

LONG = " ".join(f"word{i} means something different in sentence {i % 7}" for i in range(60))


@given(st.integers(min_value=0, max_value=2**64 - 1), st.integers(min_value=0, max_value=7), st.data())
def test_hashes_within_the_threshold_always_share_a_band(value: int, k: int, data: st.DataObject) -> None:
    bits = data.draw(st.lists(st.integers(min_value=0, max_value=63), max_size=k, unique=True))
    other = value
    for bit in bits:
        other ^= 1 << bit
    assert hamming(value, other) <= k
    assert set(band_keys(value, k)) & set(band_keys(other, k))


def test_simhash_is_close_for_a_small_edit_and_far_for_other_text() -> None:
    base = simhash64(shingles(LONG))
    edited = simhash64(shingles(LONG + " and one more clause"))
    other = simhash64(shingles(" ".join(random.Random(1).sample(LONG.split(), 200))))
    assert hamming(base, edited) <= 3
    assert hamming(base, other) > 10


def _index(store: dict, doc_id: str, text: str) -> None:
    DedupIndex(store).replace(doc_id, DocState(content_hash(text), simhash64(shingles(text)), 1))


def test_exact_then_near_duplicates_are_found_and_self_is_not() -> None:
    store: dict = {}
    _index(store, "a", LONG)
    index = DedupIndex(store)
    exact = index.find_duplicate("b", content_hash(LONG), simhash64(shingles(LONG)))
    assert exact is not None and (exact.of, exact.kind, exact.distance) == ("a", DuplicateKind.EXACT, 0)
    near_text = LONG + " and one more clause"
    near = index.find_duplicate("c", content_hash(near_text), simhash64(shingles(near_text)))
    assert near is not None and near.of == "a" and near.kind is DuplicateKind.NEAR
    assert index.find_duplicate("a", content_hash(LONG), simhash64(shingles(LONG))) is None


def test_forget_releases_every_key() -> None:
    store: dict = {}
    _index(store, "a", LONG)
    assert DedupIndex(store).forget("a") == DocState(content_hash(LONG), simhash64(shingles(LONG)), 1)
    assert store == {}


def test_near_detection_can_be_disabled() -> None:
    store: dict = {}
    index = DedupIndex(store, near_enabled=False)
    index.replace("a", DocState(content_hash(LONG), simhash64(shingles(LONG)), 1))
    near_text = LONG + " and one more clause"
    assert index.find_duplicate("c", content_hash(near_text), simhash64(shingles(near_text))) is None


def test_lookups_rebuilt_from_the_store_equal_the_ones_kept_in_step() -> None:
    store: dict = {}
    live = DedupIndex(store)
    for i in range(20):
        text = LONG + f" variant {i}" * (i % 3)
        live.replace(f"d{i}", DocState(content_hash(text), simhash64(shingles(text)), 1, offset=i))
    live.forget("d3")
    rebuilt = LookupIndex.build(store.items(), 3, True)
    assert (rebuilt.states, rebuilt.owners, rebuilt.bands) == (
        live.lookups.states,
        live.lookups.owners,
        live.lookups.bands,
    )


def test_a_stale_changelog_echo_does_not_roll_a_document_back() -> None:
    lookups = LookupIndex(3, True)
    new = DocState("h2", 2, 1, offset=9)
    lookups.add("d", new)
    lookups.apply_remote("d", {"doc_hash": "h1", "simhash": 1, "chunk_count": 1, "offset": 4})
    assert lookups.states["d"] == new and lookups.owners == {"h2": "d"}
