"""The consumer fix: partitions with nothing committed go back to their beginning, not nowhere."""

from __future__ import annotations

import asyncio
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP

from agents import faust_fixes
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


class PartitionState:
    """The part of Faust's Consumer that pausing and resuming touches, with changelogs named."""

    def __init__(self, assigned: set[TP], changelogs: set[TP]) -> None:
        self.assigned = assigned
        self.changelogs = changelogs
        self._active_partitions: set[TP] | None = None
        self._paused_partitions: set[TP] = set(assigned)
        self.flow_active = False
        self.can_resume_flow = asyncio.Event()
        self.suspend_flow = asyncio.Event()

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    def _is_changelog_tp(self, tp: TP) -> bool:
        return tp in self.changelogs

    def _get_active_partitions(self) -> set[TP]:
        return Consumer._get_active_partitions(self)  # type: ignore[arg-type]

    def _set_active_tps(self, tps: set[TP]) -> set[TP]:
        self._active_partitions = set(tps) - self._paused_partitions
        return self._active_partitions

    @property
    def active(self) -> set[TP]:
        return set(self._get_active_partitions())


def tps(*names: str) -> set[TP]:
    """``"docs-1"`` -> ``TP("docs", 1)``."""
    return {TP(name.rsplit("-", 1)[0], int(name.rsplit("-", 1)[1])) for name in names}


def consumer_with(assigned: set[TP], changelogs: set[TP]) -> Any:
    faust_fixes.apply()
    return PartitionState(assigned, changelogs)


async def test_recovery_resumes_stream_partitions_only_once_flow_resumes() -> None:
    # Faust's recovery: resume partitions, await the seek, clear the queues, resume flow. A
    # stream partition fetched while the seek is awaited would have its records cleared.
    consumer = consumer_with(tps("docs-0", "docs-1", "dedup-changelog-0"), tps("dedup-changelog-0"))
    Consumer.resume_partitions(consumer, tps("docs-0", "docs-1", "dedup-changelog-0"))
    assert consumer.active == tps("dedup-changelog-0"), "changelog partitions resume at once"
    Consumer.resume_flow(consumer)
    assert consumer.active == tps("docs-0", "docs-1", "dedup-changelog-0")
    assert consumer.flow_active
    assert faust_fixes.pending_stream_partitions(consumer) == set()


async def test_a_partition_paused_or_revoked_before_flow_resumes_stays_out() -> None:
    consumer = consumer_with(tps("docs-0", "docs-1", "docs-2"), tps())
    Consumer.resume_partitions(consumer, tps("docs-0", "docs-1", "docs-2"))
    Consumer.pause_partitions(consumer, tps("docs-1"))  # a new rebalance pauses it again
    consumer.assigned -= tps("docs-2")  # and takes this one away
    Consumer.resume_flow(consumer)
    assert consumer.active == tps("docs-0")


async def test_held_events_are_released_while_faust_waits_for_them() -> None:
    held = {"events": 3}
    empty = asyncio.Event()  # Faust's wait: until nothing is held
    calls: list[int] = []

    async def release() -> None:
        calls.append(held["events"])
        await asyncio.sleep(0)  # a publish in between: the wait is not cancelled under it
        held["events"] = 0
        empty.set()

    await asyncio.wait_for(faust_fixes.wait_releasing(empty.wait(), [release]), 5.0)
    assert held["events"] == 0 and calls[0] == 3


async def test_a_failing_release_is_tried_again_and_the_wait_still_ends() -> None:
    attempts: list[int] = []
    done = asyncio.Event()

    async def release() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("broker hiccup")
        done.set()

    await asyncio.wait_for(faust_fixes.wait_releasing(done.wait(), [release]), 5.0)
    assert len(attempts) == 2
