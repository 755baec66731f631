"""What the monitor watches and how it judges it: streams, thresholds (``MonitorConfig``), metrics, hints.

Why this exists:
    The windows, the detectors, the alerts and the agent all speak of the same streams, metrics
    and knobs; they are defined once here, with the hint an alert carries for the person paged.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from streams.settings import Settings

Output = tuple[Literal["snapshot", "alert"], dict[str, Any]]
STREAMS = ("documents", "requests", "responses", "feedback")
STAGES = ("queue", "embed", "search", "classify", "generate", "total")
SLICE_DIMENSIONS = ("tenant", "source", "language")
PERCENTILES = (50, 95, 99)
FAILED_STATUSES = ("ERROR", "TIMEOUT", "UNAVAILABLE")

HINTS = {
    "embedding": "documents differ in meaning from the reference: look at the sources and tenants of recent "
    "docs.embeddings; if the change is expected, set a new reference (llmops monitor set-reference)",
    "length_chars": "text lengths moved: a new upstream, truncation, or documents in another format",
    "unknown_token_rate": "the embedder's vocabulary cannot spell more words: another language or script, "
    "or binary/garbled text; embeddings of such text are unreliable",
    "non_ascii_share": "more non-ASCII text: another language or encoding arrived; check the sources",
    "pii_hits": "more personal data or secrets: find the upstream sending them (redaction still applies)",
    "top1_score": "top-1 retrieval scores moved: questions about things the index does not hold, or a stale "
    "index; read recent queries and check index freshness",
    "predicted_label": "the mix of predicted labels changed: check input drift first, then which classifier "
    "version answers (llmops models list)",
    "quality.accuracy": "accuracy from feedback fell: read the feedback of this slice and the model versions "
    "that answered it; roll back if a promotion preceded it (llmops models rollback)",
    "fairness": "one slice is served much worse than the best one: compare its inputs (language, source) "
    "with the reference and its feedback with the others",
    "latency": "end-to-end p95 above the SLO: compare queue_ms (consumer lag, too few workers) with "
    "embed/search ms (CPU) in the snapshot",
    "errors": "more responses fail (ERROR, TIMEOUT, UNAVAILABLE): group them by status and error in "
    "inference.responses; TIMEOUT with a high queue_ms means too few infer workers",
}


@dataclass(frozen=True)
class MonitorConfig:
    """The monitoring knobs (``LLMOPS_MONITOR_*``)."""

    window_events: int = 200
    window_seconds: float = 60.0
    min_drift_events: int = 20
    drift_quantile: float = 0.995
    calibration_draws: int = 1000
    alert_after: int = 2
    clear_after: int = 2
    cooldown_windows: int = 5
    feedback_ttl_seconds: float = 3600.0
    min_accuracy: float = 0.7
    max_fairness_gap: float = 0.2
    min_slice_events: int = 10
    latency_p95_ms: float = 1000.0
    max_error_share: float = 0.05
    max_abstention_rate: float = 0.5
    min_grounded_rate: float = 0.8

    @classmethod
    def from_settings(cls, settings: Settings) -> MonitorConfig:
        """Each field from the setting of the same name with a ``monitor_`` prefix."""
        return cls(**{f.name: getattr(settings, f"monitor_{f.name}") for f in fields(cls)})


@dataclass(frozen=True)
class Metric:
    """One statistic of a window (a ``MetricValue`` record), with how to alert on it."""

    name: str
    value: float
    method: str
    threshold: float | None = None
    direction: Literal["above", "below"] = "above"
    slice: str | None = None
    count: int = 0
    severity: Literal["info", "warning", "critical"] = "warning"
    hint: str = ""
    alert_key: str | None = None  # default: name|slice; a fairness gap keys by name (its worst slice moves)
    p_value: float | None = None  # drift statistics: share of the reference's null draws at least as large
    alert_after: int | None = None  # breaching windows in a row that raise its alert (None: the monitor's)

    @property
    def breached(self) -> bool:
        if self.threshold is None:
            return False
        return self.value > self.threshold if self.direction == "above" else self.value < self.threshold

    @property
    def key(self) -> str:
        return self.alert_key or f"{self.name}|{self.slice or ''}"

    def to_avro(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": float(self.value),
            "slice": self.slice,
            "threshold": self.threshold,
            "direction": self.direction,
            "breached": self.breached,
            "method": self.method,
            "count": self.count,
            "p_value": self.p_value,
        }
