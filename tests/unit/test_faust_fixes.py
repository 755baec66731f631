"""The consumer fix: partitions with nothing committed go back to their beginning, not nowhere."""

from __future__ import annotations

from agents.faust_fixes import seek_to_committed_or_beginning


class RecordingConsumer:
    """Stands in for aiokafka's consumer: committed offsets in, seeks recorded."""

    def __init__(self, committed: dict[str, int | None]) -> None:
        self.committed = committed
        self.to_beginning: list[str] = []

    async def seek_to_committed(self) -> dict[str, int | None]:
        return dict(self.committed)

    async def seek_to_beginning(self, *partitions: str) -> None:
        self.to_beginning.extend(partitions)


async def test_uncommitted_and_zero_partitions_seek_to_their_beginning() -> None:
    consumer = RecordingConsumer({"requests-0": None, "requests-1": 0, "requests-2": 6})
    assert await seek_to_committed_or_beginning(consumer) == {"requests-0": None, "requests-1": 0, "requests-2": 6}
    assert consumer.to_beginning == ["requests-0", "requests-1"]


async def test_nothing_extra_happens_when_every_partition_has_a_commit() -> None:
    consumer = RecordingConsumer({"docs-0": 3})
    await seek_to_committed_or_beginning(consumer)
    assert consumer.to_beginning == []
