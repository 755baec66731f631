"""Three fixes to Faust's consumer, applied once when the app is created.

1. Seeking back to committed offsets

Why this exists:
    When Faust's fetcher gets records while the worker's flow is stopped (during start-up
    recovery or a rebalance), it drops them and seeks back to the committed offsets
    (``Consumer.perform_seek``). aiokafka's ``seek_to_committed`` only moves a partition whose
    committed offset is greater than 0, so a partition with no commit yet (a new consumer
    group: a first deployment, a replay namespace) stays *after* the dropped records, and they
    are never processed. Replays hit this every few runs: requests copied while their worker
    was starting were never answered.

The fix:
    Seek partitions without a committed offset (or committed at 0) to their beginning, which is
    what ``auto_offset_reset=earliest`` (the app's setting) means for them.

2. Resuming stream partitions after table recovery

Why this exists:
    After a rebalance that restores a table from its changelog (the ingest agent's dedup table,
    on every restart), Faust's recovery resumes the stream partitions, then awaits a seek to the
    committed offsets, then resumes flow control, which *clears the stream queues*
    (``Recovery.on_recovery_completed`` and ``_resume_streams``). The fetcher is already running
    (it read the changelog), so records fetched while the seek is awaited are delivered into
    queues that are then cleared: they are never processed, yet the next record's offset looks
    like a gap to Faust, which counts the gap as acknowledged and commits past the lost records.
    Seen once in four SIGTERM-and-restart runs: 23 docs.clean records of one partition skipped
    (``tests/integration/faults/test_graceful_shutdown.py``).

The fix:
    A stream partition that recovery resumes stays paused until flow resumes
    (``Consumer.resume_flow``, called right after the queues are cleared, with no await in
    between), so its first records are fetched from the committed offset after the seek and
    after the clear. Changelog partitions resume at once, as before. Gaps are logged
    (``consumer_offset_gap``): transaction markers explain gaps of single offsets; anything else
    is records the consumer skipped.

3. Releasing held events before Faust waits for them

Why this exists:
    At a revocation and at shutdown Faust stops the flow, then waits until every event its
    streams took is acknowledged (``Consumer.wait_empty``), and only after that sends
    ``on_partitions_revoked`` (and, at shutdown, ``on_before_shutdown``). An agent that holds
    acknowledgements on purpose (the monitor acks a record once the window that counted it is
    published) would make that wait last forever.

The fix:
    ``release_before_waiting(app, release)`` registers a coroutine function that Faust's wait
    runs beside itself: at once, then every ``RELEASE_INTERVAL_S`` while the wait lasts (an
    event the agent was still working on when the flow stopped is held, then released too).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from faust.transport.consumer import Consumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from streams.logs import get_logger

log = get_logger(__name__)
_PATCHED = "_llmops_seeks_uncommitted_partitions"
_PENDING = "_llmops_streams_to_resume"
_RELEASERS = "_llmops_release_before_waiting"
RELEASE_INTERVAL_S = 0.2


async def seek_to_committed_or_beginning(consumer: Any) -> dict[Any, int | None]:
    """aiokafka's ``seek_to_committed``, plus a seek to the beginning where nothing is committed."""
    committed: dict[Any, int | None] = await consumer.seek_to_committed()
    uncommitted = [tp for tp, offset in committed.items() if not offset]
    if uncommitted:
        await consumer.seek_to_beginning(*uncommitted)
    return committed


def pending_stream_partitions(consumer: Any) -> set[Any]:
    """Stream partitions resumed by recovery but held paused until flow resumes."""
    pending: set[Any] | None = getattr(consumer, _PENDING, None)
    if pending is None:
        pending = set()
        setattr(consumer, _PENDING, pending)
    return pending


def apply() -> None:
    """Install both fixes on Faust's consumer classes (idempotent)."""
    if getattr(AIOKafkaConsumerThread, _PATCHED, False):
        return

    async def seek_to_committed(self: Any) -> Any:
        return await self.call_thread(seek_to_committed_or_beginning, self._ensure_consumer())

    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    _hold_stream_partitions_until_flow_resumes()
    _release_held_events_while_waiting()
    setattr(AIOKafkaConsumerThread, _PATCHED, True)


def release_before_waiting(app: Any, release: Callable[[], Awaitable[None]]) -> None:
    """Run ``release`` while ``app``'s consumer waits for its streams' events (revocation, shutdown)."""
    releasers: list[Callable[[], Awaitable[None]]] | None = getattr(app, _RELEASERS, None)
    if releasers is None:
        releasers = []
        setattr(app, _RELEASERS, releasers)
    releasers.append(release)


async def wait_releasing(wait: Awaitable[None], releasers: list[Callable[[], Awaitable[None]]]) -> None:
    """Await ``wait`` while calling each of ``releasers`` now and every ``RELEASE_INTERVAL_S``."""
    done = asyncio.Event()

    async def keep_releasing() -> None:
        while True:
            for release in releasers:
                try:
                    await release()
                except Exception as error:  # noqa: BLE001 - logged; tried again at the next interval
                    log.warning("release_before_waiting_failed", error=repr(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), RELEASE_INTERVAL_S)
            if done.is_set():
                return

    releasing = asyncio.ensure_future(keep_releasing())
    try:
        await wait
    finally:
        done.set()  # not cancelled: a release half done would leave acknowledgements taken and not given
        await releasing


def _release_held_events_while_waiting() -> None:
    wait_empty = Consumer.wait_empty

    async def releasing_wait_empty(self: Any) -> None:
        releasers = getattr(self.app, _RELEASERS, None)
        if not releasers:
            await wait_empty(self)
            return
        await wait_releasing(wait_empty(self), releasers)

    Consumer.wait_empty = releasing_wait_empty  # type: ignore[method-assign]


def _hold_stream_partitions_until_flow_resumes() -> None:
    resume_partitions = Consumer.resume_partitions
    pause_partitions = Consumer.pause_partitions
    resume_flow = Consumer.resume_flow
    add_gap = Consumer._add_gap

    def held_resume_partitions(self: Any, tps: Any) -> None:
        tps = set(tps)
        streams = {tp for tp in tps if not self._is_changelog_tp(tp)}
        pending_stream_partitions(self).update(streams)
        resume_partitions(self, tps - streams)

    def forgetful_pause_partitions(self: Any, tps: Any) -> None:
        tps = set(tps)
        pending_stream_partitions(self).difference_update(tps)
        pause_partitions(self, tps)

    def releasing_resume_flow(self: Any) -> None:
        resume_flow(self)
        pending = pending_stream_partitions(self)
        if pending:
            assigned = set(self.assignment())
            resume_partitions(self, pending & assigned)
            pending.clear()

    async def logged_add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        log.warning(
            "consumer_offset_gap",
            topic=tp.topic,
            partition=tp.partition,
            first=offset_from,
            last=offset_to,
            records=offset_to - offset_from + 1,
        )
        await add_gap(self, tp, offset_from, offset_to)

    Consumer.resume_partitions = held_resume_partitions  # type: ignore[method-assign]
    Consumer.pause_partitions = forgetful_pause_partitions  # type: ignore[method-assign]
    Consumer.resume_flow = releasing_resume_flow  # type: ignore[method-assign]
    Consumer._add_gap = logged_add_gap  # type: ignore[method-assign]
