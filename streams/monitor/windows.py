"""Tumbling windows closed by count or time, and the TTL table of the feedback join.

Why this exists:
    Each monitored stream is cut into windows that close after ``window_events`` events or
    ``window_seconds`` (whichever comes first); the clock is injected so tests control time.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
V = TypeVar("V")
# Why a window closed: its count or time was reached, its worker stopped, or its worker gave up
# partitions at a rebalance (what it held is reported before the new owner starts counting).
ClosedBy = Literal["count", "time", "stop", "rebalance"]


@dataclass(frozen=True)
class Window(Generic[T]):
    """A closed tumbling window: its events and when they happened (Kafka timestamps, ms)."""

    stream: str
    seq: int
    start_ms: int
    end_ms: int
    items: list[T]
    closed_by: ClosedBy

    @property
    def window_id(self) -> str:
        return f"{self.stream}:{self.seq}"

    @property
    def seconds(self) -> float:
        return max(self.end_ms - self.start_ms, 1) / 1000


class TumblingWindow(Generic[T]):
    """Collects events until ``max_events`` arrived or ``max_seconds`` passed since the first one."""

    def __init__(self, stream: str, max_events: int, max_seconds: float) -> None:
        self.stream, self.max_events, self.max_seconds = stream, max_events, max_seconds
        self.seq = 0
        self._items: list[T] = []
        self._opened_at = 0.0
        self._first_ms = self._last_ms = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, event_ms: int, now: float) -> Window[T] | None:
        """Add one event seen at ``now`` (monotonic seconds); the window it closed, if any."""
        if not self._items:
            self._opened_at, self._first_ms = now, event_ms
        self._items.append(item)
        self._first_ms, self._last_ms = min(self._first_ms, event_ms), max(self._last_ms, event_ms)
        return self._close("count") if len(self._items) >= self.max_events else None

    def due(self, now: float) -> Window[T] | None:
        """Close the window by time if it has events and ``max_seconds`` passed since it opened."""
        if self._items and now - self._opened_at >= self.max_seconds:
            return self._close("time")
        return None

    def close_now(self, how: Literal["stop", "rebalance"] = "stop") -> Window[T] | None:
        """Close the window early (at shutdown or partition revocation), if it has events."""
        return self._close(how) if self._items else None

    def _close(self, how: ClosedBy) -> Window[T]:
        self.seq += 1
        window = Window(self.stream, self.seq, self._first_ms, self._last_ms, self._items, how)
        self._items = []
        return window


class TtlTable(Generic[V]):
    """A keyed table whose entries expire ``ttl`` seconds after they were put (oldest first)."""

    def __init__(self, ttl: float, max_entries: int = 1_000_000) -> None:
        self.ttl, self.max_entries = ttl, max_entries
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: str, value: V, now: float) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (now, value)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        return entry[1] if entry else None

    def pop(self, key: str) -> V | None:
        entry = self._entries.pop(key, None)
        return entry[1] if entry else None

    def expire(self, now: float) -> int:
        """Drop entries older than the TTL; how many were dropped."""
        dropped = 0
        while self._entries:
            key, (put_at, _) = next(iter(self._entries.items()))
            if now - put_at < self.ttl:
                break
            del self._entries[key]
            dropped += 1
        return dropped
