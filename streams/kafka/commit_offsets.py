"""Which offsets a consumer may commit when it works on several records of a partition at once.

Why this exists:
    A request/reply consumer answers records concurrently, and they finish out of order. Kafka
    commits one offset per partition, meaning "everything before this is done": committing the
    offset after the last *finished* record would skip a slower one still in flight if the
    worker stopped then. :class:`CommitOffsets` keeps, per partition, the offsets started and
    not yet finished, and says how far each partition is done without a gap (at least once:
    a record is committed only after its outputs were acknowledged).

Usage:
    >>> offsets = CommitOffsets()
    >>> offsets.started("p0", 10); offsets.started("p0", 11)
    >>> offsets.finished("p0", 11)
    >>> offsets.committable()       # 10 is still in flight
    {}
    >>> offsets.finished("p0", 10)
    >>> offsets.committable()
    {'p0': 12}
    >>> offsets.committed({"p0": 12}); offsets.committable()
    {}

Notes:
    Pure bookkeeping with no Kafka import: partitions are any hashable keys.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping


class CommitOffsets:
    """Per partition: offsets in flight, the next offset to commit, and what was committed."""

    def __init__(self) -> None:
        self._in_flight: dict[Hashable, set[int]] = {}
        self._done_to: dict[Hashable, int] = {}  # next offset after the highest finished one
        self._committed: dict[Hashable, int] = {}

    def started(self, partition: Hashable, offset: int) -> None:
        """Record ``offset`` of ``partition`` as being worked on."""
        # The first offset started is where the consumer's position was: nothing before it is ours.
        self._committed.setdefault(partition, offset)
        self._in_flight.setdefault(partition, set()).add(offset)

    def finished(self, partition: Hashable, offset: int) -> None:
        """Record ``offset`` as done (its outputs acknowledged); a forgotten partition is ignored."""
        in_flight = self._in_flight.get(partition)
        if in_flight is None or offset not in in_flight:
            return
        in_flight.discard(offset)
        self._done_to[partition] = max(self._done_to.get(partition, 0), offset + 1)

    def in_flight(self, partitions: Iterable[Hashable] | None = None) -> int:
        """Records started and not finished, of ``partitions`` (all when None)."""
        keys = self._in_flight if partitions is None else partitions
        return sum(len(self._in_flight.get(key, ())) for key in keys)

    def committable(self) -> dict[Hashable, int]:
        """Offsets to commit now: per partition, the first offset not done, where it moved."""
        result = {}
        for partition, done_to in self._done_to.items():
            in_flight = self._in_flight.get(partition)
            offset = min(min(in_flight), done_to) if in_flight else done_to
            if offset > self._committed.get(partition, -1):
                result[partition] = offset
        return result

    def committed(self, offsets: Mapping[Hashable, int]) -> None:
        """Note that ``offsets`` were committed."""
        for partition, offset in offsets.items():
            self._committed[partition] = max(self._committed.get(partition, -1), offset)

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """Drop every trace of ``partitions`` (revoked: their next owner starts from the commits)."""
        for partition in partitions:
            self._in_flight.pop(partition, None)
            self._done_to.pop(partition, None)
            self._committed.pop(partition, None)
