"""Exact and near-duplicate detection, and the banding that makes near lookups complete."""

import random

from hypothesis import given
from hypothesis import strategies as st

from streams.dedup import DedupIndex, DocState, band_keys, content_hash, hamming, shingles, simhash64
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
    index = DedupIndex(store)
    index.forget(doc_id)
    index.remember(doc_id, DocState(content_hash(text), simhash64(shingles(text)), 1), near_eligible=True)


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
    index.remember("a", DocState(content_hash(LONG), simhash64(shingles(LONG)), 1), near_eligible=True)
    near_text = LONG + " and one more clause"
    assert index.find_duplicate("c", content_hash(near_text), simhash64(shingles(near_text))) is None
