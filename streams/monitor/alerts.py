"""Alerts: breaching metrics become one FIRING and one RESOLVED event per incident.

Why this exists:
    A metric that breaches once is noise; an alert is raised after ``alert_after`` breaching
    windows in a row (a metric may ask for fewer: ``Metric.alert_after``), resolved after
    ``clear_after`` healthy ones, then held back for ``cooldown_windows`` windows, so a flapping
    metric does not page people over and over.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from streams.monitor.config import Metric
from streams.monitor.windows import Window
from streams.records import now_ms as epoch_ms


@dataclass
class _AlertState:
    breaches: int = 0
    healthy: int = 0
    firing: str | None = None  # alert id while firing
    cooldown: int = 0


class AlertManager:
    """Breaching windows in, incidents out: hysteresis (raise after N, clear after M) and a cooldown."""

    def __init__(
        self, alert_after: int, clear_after: int, cooldown_windows: int, now_ms: Callable[[], int] | None = None
    ) -> None:
        self.alert_after, self.clear_after, self.cooldown_windows = alert_after, clear_after, cooldown_windows
        self.now_ms = now_ms or epoch_ms
        self._states: dict[str, _AlertState] = {}

    def firing(self) -> list[str]:
        return sorted(key for key, state in self._states.items() if state.firing)

    def observe(self, metrics: Iterable[Metric], window: Window[Any]) -> list[dict[str, Any]]:
        """Alert events (``Alert`` records) caused by one window's statistics."""
        events = []
        for metric in metrics:
            if metric.threshold is None:
                continue
            state = self._states.setdefault(metric.key, _AlertState())
            if metric.breached:
                state.breaches, state.healthy = state.breaches + 1, 0
                needed = metric.alert_after or self.alert_after
                if state.firing is None and state.breaches >= needed and state.cooldown == 0:
                    state.firing = hashlib.sha256(f"{metric.key}|{window.window_id}".encode()).hexdigest()[:16]
                    events.append(self._event(metric, window, state, "FIRING"))
            else:
                state.breaches = 0
                if state.firing is not None:
                    state.healthy += 1
                    if state.healthy >= self.clear_after:
                        events.append(self._event(metric, window, state, "RESOLVED"))
                        state.firing, state.healthy, state.cooldown = None, 0, self.cooldown_windows + 1
            if state.cooldown and state.firing is None:
                state.cooldown -= 1
        return events

    def _event(self, metric: Metric, window: Window[Any], state: _AlertState, status: str) -> dict[str, Any]:
        assert state.firing is not None and metric.threshold is not None
        return {
            "alert_id": state.firing,
            "state": status,
            "severity": metric.severity,
            "metric": metric.name,
            "slice": metric.slice,
            "value": float(metric.value),
            "threshold": float(metric.threshold),
            "direction": metric.direction,
            "window_id": window.window_id,
            "window_start_ms": window.start_ms,
            "window_end_ms": window.end_ms,
            "breaches": state.breaches,
            "method": metric.method,
            "hint": metric.hint,
            "created_at_ms": self.now_ms(),
        }
