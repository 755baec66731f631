"""Acknowledge a partition's records in offset order, whatever order their work finishes in.

Why this exists:
    The monitor holds a record's acknowledgement until the window that counted it is published,
    while records it does not window are done at once; so records finish out of order. Faust
    commits "the highest contiguous acked offset" per partition, but not safely for every order:
    faust-streaming 0.15's ``Consumer._new_offset`` commits past an unacked record that sits right
    at the committed offset (its head-gap test is ``min(acked) - committed > 1``), and past any
    unacked head when the partition has no commit yet or was just revoked. :class:`InOrderAcks`
    hands records to ``ack`` only once every earlier record of their partition is done, so the
    consumer never sees an ack with an unacked record before it.

Usage:
    >>> acks = InOrderAcks(lambda event: event.ack())
    >>> token = acks.hold(tp, offset, event)    # in the order the partition delivers them
    >>> acks.release([token])                   # done; acked with every done record before it

Notes:
    Pure bookkeeping with no Kafka import: partitions are any hashable keys, tokens are
    ``(partition, offset)``. A record's partition must be held in delivery order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")
Token = tuple[Hashable, int]  # (partition, offset)


class InOrderAcks(Generic[T]):
    """Per partition, the records held in delivery order; ``ack`` gets each once all before it are done."""

    def __init__(self, ack: Callable[[T], object]) -> None:
        self._ack = ack
        self._held: dict[Hashable, deque[tuple[int, T]]] = {}
        self._done: set[Token] = set()

    def __len__(self) -> int:
        """Records held and not yet acknowledged."""
        return sum(len(queue) for queue in self._held.values())

    def hold(self, partition: Hashable, offset: int, item: T) -> Token:
        """Hold ``item`` (the record at ``offset`` of ``partition``) until it is released; its token."""
        self._held.setdefault(partition, deque()).append((offset, item))
        return (partition, offset)

    def release(self, tokens: Iterable[Token]) -> int:
        """Mark ``tokens`` done and acknowledge every done record at a partition's head; how many were."""
        partitions = set()
        for token in tokens:
            if token[0] in self._held:
                self._done.add(token)
                partitions.add(token[0])
        acked = 0
        for partition in partitions:
            queue = self._held[partition]
            while queue and (partition, queue[0][0]) in self._done:
                offset, item = queue.popleft()
                self._done.discard((partition, offset))
                self._ack(item)
                acked += 1
            if not queue:
                del self._held[partition]
        return acked
