"""A fix to Faust's consumer, applied once when the app is created.

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
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

_PATCHED = "_llmops_seeks_uncommitted_partitions"


async def seek_to_committed_or_beginning(consumer: Any) -> dict[Any, int | None]:
    """aiokafka's ``seek_to_committed``, plus a seek to the beginning where nothing is committed."""
    committed: dict[Any, int | None] = await consumer.seek_to_committed()
    uncommitted = [tp for tp, offset in committed.items() if not offset]
    if uncommitted:
        await consumer.seek_to_beginning(*uncommitted)
    return committed


def apply() -> None:
    """Route Faust's seek-back through :func:`seek_to_committed_or_beginning` (idempotent)."""
    if getattr(AIOKafkaConsumerThread, _PATCHED, False):
        return

    async def seek_to_committed(self: Any) -> Any:
        return await self.call_thread(seek_to_committed_or_beginning, self._ensure_consumer())

    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    setattr(AIOKafkaConsumerThread, _PATCHED, True)
