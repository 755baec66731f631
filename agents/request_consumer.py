"""A consumer group that answers records concurrently in the worker's own event loop.

Why this exists:
    A request/reply round trip pays every hand-off twice. Faust reads records on a consumer
    thread with its own event loop and passes them to the agent through its Conductor and
    stream queues; for the infer agent that hop cost more than the answer's two Kafka hops
    themselves. :class:`RequestConsumer` reads ``inference.requests`` with a librdkafka consumer
    (``streams.kafka.rdkafka``): a reader thread fetches, and each record's handler starts in the
    worker's loop as soon as it is in. librdkafka fetches on its own C threads; at low request
    rates its hop took half the time of aiokafka's (README, "Inference latency").

Guarantees (the same as the Faust agent's):
    - At least once: an offset is committed only after the handler returned (its outputs
      acknowledged by Kafka), and never past a record still in flight
      (:class:`streams.kafka.commit_offsets.CommitOffsets`).
    - Rebalances: the revoke waits until the records in flight on the revoked partitions are
      answered and committed; only then does the group move on.
    - Stopping: :meth:`RequestConsumer.stop` finishes the records in flight, commits them, and
      leaves the group; records fetched but not started are read again by the next owner.
    - Held records (``manual_acks=True``): a record is done when its owner calls :meth:`ack`,
      not when the handler returns (the monitor acks once the window that counted the record is
      published). Before a revoke or a stop commits, ``before_hand_over`` runs in the loop so the
      owner can finish what it holds; a record still held is not committed, and is read again.

Usage:
    >>> consumer = RequestConsumer(settings, topic, group, handle, concurrency=4)
    >>> await consumer.run()      # until stop(); in a Faust worker, from an @app.task
    >>> await consumer.stop()     # from on_before_shutdown

Notes:
    Threads: the reader thread is the only one that fetches, commits and serves librdkafka's
    callbacks (a commit from another thread during a rebalance callback never returned here).
    Records are answered in the event loop. A revoke, called from ``poll``, waits for the loop
    to finish the records in flight on the revoked partitions, then commits in the reader
    thread. Records reach the loop in the order they were fetched, before any later revoke, so
    none is ever started on a partition already revoked. :class:`CommitOffsets` is shared by
    both threads under a lock. A semaphore of ``concurrency`` slots keeps the reader from
    fetching more than can be started.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

from aiokafka import TopicPartition as AioTopicPartition
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, TopicPartition

from streams.kafka.commit_offsets import CommitOffsets
from streams.kafka.rdkafka import FetchedRecord, FetchErrors, close_quietly, fetch, rdkafka_config
from streams.logs import get_logger
from streams.settings import Settings

log = get_logger(__name__)
COMMIT_INTERVAL_S = 0.5
FETCH_TIMEOUT_S = 0.2  # how long the reader waits for records (or a free slot) before checking for stop
COMMITTED_S = 30.0  # how long an assignment waits to learn the group's committed offsets

Partition = tuple[str, int]  # (topic, partition): the bookkeeping's key


class RequestConsumer:
    """Read ``topic`` in consumer group ``group``; run ``handle`` on up to ``concurrency`` records at once."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        group: str,
        handle: Callable[[FetchedRecord], Awaitable[None]],
        *,
        concurrency: int,
        start_offsets: Callable[[], Awaitable[dict[AioTopicPartition, int]]] | None = None,
        consumer_options: Mapping[str, Any] | None = None,
        manual_acks: bool = False,
        before_hand_over: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``start_offsets``: where partitions with no commit in ``group`` start (else the earliest).

        ``topic`` may be a librdkafka regex (``^prefix\\..*``): every matching topic, also ones
        created later (found at each metadata refresh). ``consumer_options``: more librdkafka
        settings, such as ``topic.metadata.refresh.interval.ms`` for a regex. ``manual_acks``:
        records are done when :meth:`ack` says so; ``before_hand_over`` runs before a revoke's or
        a stop's commit.
        """
        self.topic, self.group = topic, group
        self.handle = handle
        self.concurrency = concurrency
        self._settings = settings
        self._start_offsets = start_offsets
        self._consumer_options = dict(consumer_options or {})
        self._manual_acks = manual_acks
        self._before_hand_over = before_hand_over
        self._commit_soon = threading.Event()  # acks came: the reader commits at its next turn
        self._fallback: dict[Partition, int] = {}
        self._offsets = CommitOffsets()
        self._offsets_lock = threading.Lock()  # the loop starts and finishes records, the reader commits
        self._tasks: dict[asyncio.Task[None], Partition] = {}
        self._slots = threading.Semaphore(concurrency)  # taken by the reader, given back as records end
        self._stopping = asyncio.Event()
        self._stop_reading = threading.Event()
        self._stopped = asyncio.Event()
        self._running = False
        self.assigned = False  # the group gave this member its partitions (none, past the partition count)
        self._consumer: Consumer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def in_flight(self) -> int:
        """Records started and not yet answered (all of a fetched batch count from its start)."""
        return len(self._tasks)

    # --- running (event loop) ------------------------------------------------------------------
    async def run(self) -> None:
        """Consume until :meth:`stop`; then finish what is in flight, commit it and leave the group."""
        if self._stopping.is_set():
            return
        self._running = True
        self._loop = asyncio.get_running_loop()
        reading: asyncio.Future[None] | None = None
        try:
            if self._start_offsets is not None:
                self._fallback = {(tp.topic, tp.partition): o for tp, o in (await self._start_offsets()).items()}
            options = {
                "group.id": self.group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                # The Faust agents' session (LLMOPS_KAFKA_SESSION_TIMEOUT_S), not librdkafka's 45 s:
                # a crashed worker's requests move to another worker as soon as its partitions do.
                "session.timeout.ms": int(self._settings.kafka_session_timeout_s * 1000),
                "heartbeat.interval.ms": int(self._settings.kafka_heartbeat_s * 1000),
                "on_commit": self._on_commit,
                **self._consumer_options,
            }
            self._consumer = Consumer(rdkafka_config(self._settings, **options))
            self._consumer.subscribe(
                [self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
            reading = self._start_reader()
            stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait([reading, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if reading.done():
                reading.result()  # the reader failed: say why, after the clean-up below
        finally:
            self._stop_reading.set()
            if reading is not None:
                with contextlib.suppress(Exception):
                    await reading
            await self._finish_in_flight()
            if self._before_hand_over is not None and self._consumer is not None:
                await self._before_hand_over()
            if self._consumer is not None:
                # The reader is gone: this thread commits, and leaving the group calls the revoke
                # callback here (nothing is left in flight).
                await asyncio.to_thread(self._commit_and_close)
            self._stopped.set()

    async def stop(self) -> None:
        """Stop fetching; return once the records in flight are answered and committed."""
        self._stopping.set()
        if self._running:
            await self._stopped.wait()

    def _start_all(self, records: list[FetchedRecord]) -> None:
        for record in records:
            if self._stopping.is_set():  # fetched but not started: read again from the committed offsets
                self._slots.release()
                continue
            key = (record.topic, record.partition)
            with self._offsets_lock:
                self._offsets.started(key, record.offset)
            task = asyncio.create_task(self._answer(key, record))
            self._tasks[task] = key

    async def _answer(self, key: Partition, record: FetchedRecord) -> None:
        task = asyncio.current_task()
        try:
            await self.handle(record)
        except Exception:  # handlers route their errors themselves; this is the last resort
            # Not answered, so never committed: the partition's commits stop here until a restart
            # reads it again (at least once), and this line says why.
            log.exception("record_not_answered", topic=record.topic, partition=record.partition, offset=record.offset)
            return
        finally:
            if task is not None:
                self._tasks.pop(task, None)
            self._slots.release()
        if not self._manual_acks:
            with self._offsets_lock:
                self._offsets.finished(key, record.offset)

    def ack(self, records: Iterable[FetchedRecord]) -> None:
        """``manual_acks``: these records are done (committed soon, never past one still held)."""
        with self._offsets_lock:
            for record in records:
                self._offsets.finished((record.topic, record.partition), record.offset)
        self._commit_soon.set()

    async def _finish_in_flight(self, partitions: set[Partition] | None = None) -> None:
        tasks = [task for task, key in self._tasks.items() if partitions is None or key in partitions]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- reading and committing (reader thread) ------------------------------------------------
    def _start_reader(self) -> asyncio.Future[None]:
        """The reader thread, and a future that ends with it (with its exception, if it failed)."""
        assert self._loop is not None
        loop, ended = self._loop, self._loop.create_future()

        def read() -> None:
            error: BaseException | None = None
            try:
                self._read()
            except BaseException as failure:  # noqa: BLE001 - handed to run(), which raises it
                error = failure
            with contextlib.suppress(RuntimeError):  # the loop closed
                loop.call_soon_threadsafe(_end, ended, error)

        threading.Thread(target=read, name=f"requests-{self.group}", daemon=True).start()
        return ended

    def _read(self) -> None:
        """Take free slots, fetch that many records, hand them to the loop in order; commit now and then."""
        assert self._consumer is not None and self._loop is not None
        errors = FetchErrors("request_fetch_error")
        committed_at = time.monotonic()
        while not self._stop_reading.is_set():
            if self._commit_soon.is_set() or time.monotonic() - committed_at >= COMMIT_INTERVAL_S:
                self._commit_soon.clear()
                self._commit(asynchronous=True)  # the result comes to _on_commit, from a later poll
                committed_at = time.monotonic()
            if not self._slots.acquire(timeout=FETCH_TIMEOUT_S):
                continue  # all slots busy: nothing is fetched until a record is answered
            free = 1
            while free < self.concurrency and self._slots.acquire(blocking=False):
                free += 1
            records = [
                FetchedRecord.of(message)
                for message in fetch(self._consumer, free, FETCH_TIMEOUT_S)
                if not errors.reported(message)
            ]
            for _ in range(free - len(records)):
                self._slots.release()
            if records:
                self._loop.call_soon_threadsafe(self._start_all, records)

    def _commit(self, *, asynchronous: bool) -> None:
        """Commit how far each partition is answered without a gap."""
        assert self._consumer is not None
        with self._offsets_lock:
            offsets = cast(dict[Partition, int], self._offsets.committable())
        if not offsets:
            return
        partitions = [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]
        try:
            if asynchronous:
                self._consumer.commit(offsets=partitions, asynchronous=True)
            else:
                self._on_commit(None, self._consumer.commit(offsets=partitions, asynchronous=False))
        except KafkaException as error:  # a rebalance in progress: committed by the revoke, or read again
            log.warning("commit_failed", group=self.group, error=str(error))

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:
            log.warning("commit_failed", group=self.group, error=error.str())
            return
        failed = [tp for tp in partitions if tp.error is not None]
        if failed:
            log.warning("commit_failed", group=self.group, partitions=[tp.partition for tp in failed])
        with self._offsets_lock:
            self._offsets.committed({(tp.topic, tp.partition): tp.offset for tp in partitions if tp.error is None})

    def _commit_and_close(self) -> None:
        assert self._consumer is not None
        self._commit(asynchronous=False)
        close_quietly(self._consumer)

    # --- rebalancing (librdkafka calls these in the reader thread, or in close()'s) -------------
    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Answer and commit what is in flight on ``partitions`` before another member reads them."""
        self._hand_over(partitions, commit=True)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Lost (the session expired): another member may own them already, so nothing is committed."""
        log.warning("partitions_lost", group=self.group, partitions=[tp.partition for tp in partitions])
        self._hand_over(partitions, commit=False)

    def _hand_over(self, partitions: list[TopicPartition], *, commit: bool) -> None:
        assert self._loop is not None
        keys = {(tp.topic, tp.partition) for tp in partitions}
        # The group moves on only after this returns: wait for the loop to answer them.
        asyncio.run_coroutine_threadsafe(self._finish_and_hand_over(keys), self._loop).result()
        if commit:
            self._commit(asynchronous=False)
        with self._offsets_lock:
            self._offsets.forget(keys)

    async def _finish_and_hand_over(self, keys: set[Partition]) -> None:
        await self._finish_in_flight(keys)
        if self._before_hand_over is not None:
            await self._before_hand_over()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions this group never committed start at their fallback offset, if there is one."""
        self.assigned = True
        if self._fallback and partitions:
            try:
                committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, COMMITTED_S)}
            except KafkaException as error:  # the group's earliest-offset default applies instead
                log.warning("committed_offsets_unknown", group=self.group, error=str(error))
                committed = {}
            for tp in partitions:
                start = self._fallback.get((tp.topic, tp.partition))
                if start is not None and committed.get((tp.topic, tp.partition)) == OFFSET_INVALID:
                    tp.offset = start
        consumer.assign(partitions)


def _end(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
