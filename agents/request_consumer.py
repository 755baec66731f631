"""A consumer group that answers records concurrently in the worker's own event loop.

Why this exists:
    A request/reply round trip pays every hand-off twice. Faust reads records on a consumer
    thread with its own event loop and passes them to the agent through its Conductor and
    stream queues; for the infer agent that hop cost more than the answer's two Kafka hops
    themselves. :class:`RequestConsumer` reads ``inference.requests`` with a plain aiokafka
    consumer in the worker's loop and starts each record's handler as soon as it is fetched.

Guarantees (the same as the Faust agent's):
    - At least once: an offset is committed only after the handler returned (its outputs
      acknowledged by Kafka), and never past a record still in flight
      (:class:`streams.commit_offsets.CommitOffsets`).
    - Rebalances: from the revoke until the new assignment no record is started; the records
      in flight finish and their offsets are committed before the group moves on.
    - Stopping: :meth:`RequestConsumer.stop` finishes the records in flight, commits them, and
      leaves the group; records fetched but not started are read again by the next owner.

Usage:
    >>> consumer = RequestConsumer(settings, topic, group, handle, concurrency=4)
    >>> await consumer.run()      # until stop(); in a Faust worker, from an @app.task
    >>> await consumer.stop()     # from on_before_shutdown
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from streams.admin import client_kwargs
from streams.commit_offsets import CommitOffsets
from streams.logs import get_logger
from streams.settings import Settings

log = get_logger(__name__)
COMMIT_INTERVAL_S = 0.5
FETCH_TIMEOUT_MS = 500


class RequestConsumer(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    """Read ``topic`` in consumer group ``group``; run ``handle`` on up to ``concurrency`` records at once."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        group: str,
        handle: Callable[[Any], Awaitable[None]],
        *,
        concurrency: int,
        start_offsets: Callable[[], Awaitable[dict[TopicPartition, int]]] | None = None,
    ) -> None:
        """``start_offsets``: where partitions with no commit in ``group`` start (else the earliest)."""
        self.topic, self.group = topic, group
        self.handle = handle
        self.concurrency = concurrency
        self.offsets = CommitOffsets()
        self._start_offsets = start_offsets
        self._fallback: dict[TopicPartition, int] = {}
        self._tasks: dict[asyncio.Task[None], TopicPartition] = {}
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._running = False
        self._rebalancing = False  # from revoke to assignment: start nothing, the owner may change
        self._settings = settings
        self._consumer: Any = None  # created in run(): aiokafka clients need the running loop

    @property
    def in_flight(self) -> int:
        """Records started and not yet answered (all of a fetched batch count from its start)."""
        return len(self._tasks)

    # --- running -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Consume until :meth:`stop`; then finish what is in flight, commit it and leave the group."""
        if self._stopping.is_set():
            return
        self._running = True
        committer: asyncio.Task[None] | None = None
        try:
            if self._start_offsets is not None:
                self._fallback = await self._start_offsets()
            self._consumer = AIOKafkaConsumer(
                **client_kwargs(self._settings),
                group_id=self.group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=self.concurrency,
            )
            await self._consumer.start()
            self._consumer.subscribe([self.topic], listener=self)
            committer = asyncio.create_task(self._commit_periodically(), name=f"commit-{self.group}")
            while not self._stopping.is_set():
                await self._fetch_and_start()
        finally:
            if committer is not None:
                committer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await committer
            await self._finish_in_flight()
            if self._consumer is not None:
                await self._commit()
                await self._consumer.stop()
            self._stopped.set()

    async def stop(self) -> None:
        """Stop fetching; return once the records in flight are answered and committed."""
        self._stopping.set()
        if self._running:
            await self._stopped.wait()

    async def _fetch_and_start(self) -> None:
        free = self.concurrency - len(self._tasks)
        if free <= 0:
            await asyncio.wait(list(self._tasks), return_when=asyncio.FIRST_COMPLETED)
            return
        # A bounded wait rather than a race with stop(): stopping takes at most this long to notice.
        batch = await self._consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS, max_records=free)
        if self._stopping.is_set() or self._rebalancing:
            return  # fetched but not started: read again from the committed offsets
        assigned = self._consumer.assignment()
        for tp, records in batch.items():
            if tp not in assigned:  # revoked while the fetch returned: its next owner reads them
                continue
            for record in records:
                self._start(tp, record)

    def _start(self, tp: TopicPartition, record: Any) -> None:
        self.offsets.started(tp, record.offset)
        task = asyncio.create_task(self._answer(tp, record))
        self._tasks[task] = tp

    async def _answer(self, tp: TopicPartition, record: Any) -> None:
        task = asyncio.current_task()
        try:
            await self.handle(record)
        except Exception:  # handlers route their errors themselves; this is the last resort
            # Not answered, so never committed: the partition's commits stop here until a restart
            # reads it again (at least once), and this line says why.
            log.exception("record_not_answered", topic=tp.topic, partition=tp.partition, offset=record.offset)
            return
        finally:
            if task is not None:
                self._tasks.pop(task, None)
        self.offsets.finished(tp, record.offset)

    async def _finish_in_flight(self, partitions: set[TopicPartition] | None = None) -> None:
        tasks = [task for task, tp in self._tasks.items() if partitions is None or tp in partitions]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- committing --------------------------------------------------------------------------
    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_S)
            await self._commit()

    async def _commit(self) -> None:
        offsets = self.offsets.committable()
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as error:  # a rebalance in progress: committed by the revoke, or read again
            log.warning("commit_failed", group=self.group, error=repr(error))
            return
        self.offsets.committed(offsets)

    # --- rebalancing (aiokafka awaits these before the group moves on) -------------------------
    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Answer and commit what is in flight on ``revoked`` before another member reads them."""
        self._rebalancing = True
        await self._finish_in_flight(set(revoked))
        await self._commit()
        self.offsets.forget(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Partitions this group never committed start at their fallback offset, if there is one."""
        for tp in assigned:
            if tp in self._fallback and await self._consumer.committed(tp) is None:
                self._consumer.seek(tp, self._fallback[tp])
        self._rebalancing = False
