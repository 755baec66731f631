"""Concurrent answers finish out of order; the committed offset never passes one still in flight."""

import random

from hypothesis import given
from hypothesis import strategies as st

from streams.kafka.commit_offsets import CommitOffsets


def test_nothing_is_committable_before_the_first_record_finishes() -> None:
    offsets = CommitOffsets()
    offsets.started("p", 40)
    offsets.started("p", 41)
    offsets.finished("p", 41)
    assert offsets.committable() == {}
    offsets.finished("p", 40)
    assert offsets.committable() == {"p": 42}


def test_a_slow_record_holds_its_partition_back_but_not_the_others() -> None:
    offsets = CommitOffsets()
    for partition, offset in [("a", 0), ("a", 1), ("a", 2), ("b", 7)]:
        offsets.started(partition, offset)
    offsets.finished("a", 0)
    offsets.finished("a", 2)
    offsets.finished("b", 7)
    assert offsets.committable() == {"a": 1, "b": 8}
    assert offsets.in_flight() == 1 and offsets.in_flight(["b"]) == 0


def test_committed_offsets_are_not_offered_again_and_revoked_partitions_are_forgotten() -> None:
    offsets = CommitOffsets()
    offsets.started("a", 5)
    offsets.finished("a", 5)
    offsets.committed(offsets.committable())
    assert offsets.committable() == {}
    offsets.started("a", 6)
    offsets.forget(["a"])
    offsets.finished("a", 6)  # a late answer of a revoked partition changes nothing
    assert offsets.committable() == {} and offsets.in_flight() == 0


@given(st.integers(min_value=1, max_value=60), st.randoms(use_true_random=False))
def test_the_committable_offset_is_always_the_first_unfinished_one(count: int, rng: random.Random) -> None:
    offsets = CommitOffsets()
    for offset in range(100, 100 + count):
        offsets.started("p", offset)
    order = list(range(100, 100 + count))
    rng.shuffle(order)
    done: set[int] = set()
    for offset in order:
        offsets.finished("p", offset)
        done.add(offset)
        first_unfinished = next((o for o in range(100, 100 + count) if o not in done), 100 + count)
        assert offsets.committable().get("p", 100) == first_unfinished
