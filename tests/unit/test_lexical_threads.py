"""The lexical normaliser is called from several threads at once (search sides run in parallel)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import snowballstemmer

from streams.index import lexical


@pytest.fixture
def fast_thread_switches() -> Iterator[None]:
    """Switch threads every microsecond so that shared state between them shows up in a short test."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def test_stemming_from_many_threads_gives_the_single_thread_result(fast_thread_switches: None) -> None:
    words = [
        f"{stem}{suffix}"
        for stem in ("connect", "generat", "national", "organiz", "relat")
        for suffix in ("ing", "ion", "ions", "ional", "ed", "er", "ers", "ization", "izations", "ively")
    ] * 40
    reference = snowballstemmer.stemmer("english")
    expected = [reference.stemWord(word) for word in words]
    uncached = lexical._stem.__wrapped__  # the cache would hide the race after the first call

    def stem_all(offset: int) -> list[str]:
        return [uncached(word) for word in words[offset:] + words[:offset]]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(stem_all, range(0, 200, 50)))
    for offset, result in zip(range(0, 200, 50), results, strict=True):
        assert result == expected[offset:] + expected[:offset]
