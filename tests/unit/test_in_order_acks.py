"""Acks in offset order per partition, whatever order the records finish in (the monitor's windows)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.kafka.in_order_acks import InOrderAcks


def test_a_record_is_acked_only_after_every_earlier_record_of_its_partition() -> None:
    acked: list[str] = []
    acks: InOrderAcks[str] = InOrderAcks(acked.append)
    t10, t11, t12 = (acks.hold("p0", offset, f"p0@{offset}") for offset in (10, 11, 12))
    other = acks.hold("p1", 3, "p1@3")
    assert acks.release([t11, t12]) == 0 and acked == []  # 10 is still held (in a window)
    assert acks.release([other]) == 1 and acked == ["p1@3"]  # partitions do not wait for each other
    assert acks.release([t10]) == 3 and acked == ["p1@3", "p0@10", "p0@11", "p0@12"]
    assert len(acks) == 0
    assert acks.release([t10]) == 0  # released twice: acked once


@given(st.permutations(list(range(30))))
def test_any_release_order_acks_each_record_once_in_offset_order(order: list[int]) -> None:
    acked: list[int] = []
    acks: InOrderAcks[int] = InOrderAcks(acked.append)
    tokens = [acks.hold("p", offset, offset) for offset in range(30)]
    for i in order:
        acks.release([tokens[i]])
        # never an ack with an unreleased record before it
        assert acked == list(range(len(acked)))
    assert acked == list(range(30)) and len(acks) == 0
