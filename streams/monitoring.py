"""Online monitoring: tumbling windows, drift, quality, fairness, latency, cost, and alerts.

Why this exists:
    The monitor agent only wires four topics to :class:`Monitor`; every decision lives here as
    plain code that tests drive with a list of records and a fake clock. Each stream has its own
    tumbling window, closed by count or by time (whichever comes first); a closed window becomes
    one snapshot of statistics, and :class:`AlertManager` turns breaching statistics into alerts.

Streams and what their snapshots hold:
    * ``documents`` (``docs.embeddings`` UPSERTs): embedding drift (MMD, centroid distance), input
      drift on text features (KS and PSI), chunks/s, tokens, worker CPU seconds per 1,000 chunks.
    * ``requests`` (``inference.requests``): input drift of the request texts, requests/s, tokens.
    * ``responses`` (``inference.responses``): latency p50/p95/p99 per stage and end to end, share
      not OK, compute milliseconds per request, output drift (predicted labels, top-1 retrieval
      score), and the label-free quality estimate (mean max-probability of classify answers).
    * ``feedback`` (``feedback`` joined with responses by request id in a table with a TTL):
      accuracy overall and per tenant, source and language; the best-worst slice gap (fairness).

Alerts (one incident = one FIRING and one RESOLVED event):
    raised after ``alert_after`` breaching windows in a row, resolved after ``clear_after``
    healthy windows in a row, then not raised again for ``cooldown_windows`` windows.

Usage:
    >>> monitor = Monitor(MonitorConfig.from_settings(settings), tokenizer)
    >>> outputs = monitor.on_embedding(record, timestamp_ms) + monitor.tick()
    >>> for kind, record in outputs: ...   # kind is "snapshot" or "alert"
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Generic, Literal, TypeVar

import numpy as np

from streams.drift import ReferenceSample, Thresholds, WindowSample
from streams.records import now_ms as epoch_ms
from streams.settings import Settings
from streams.text_features import DRIFT_FEATURES, UnknownTokenCounter, text_features

T = TypeVar("T")
V = TypeVar("V")
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

    @classmethod
    def from_settings(cls, settings: Settings) -> MonitorConfig:
        """Each field from the setting of the same name with a ``monitor_`` prefix."""
        return cls(**{f.name: getattr(settings, f"monitor_{f.name}") for f in fields(cls)})


# --- values, windows, tables -------------------------------------------------------------------


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
        }


@dataclass(frozen=True)
class Window(Generic[T]):
    """A closed tumbling window: its events and when they happened (Kafka timestamps, ms)."""

    stream: str
    seq: int
    start_ms: int
    end_ms: int
    items: list[T]
    closed_by: Literal["count", "time", "stop"]

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

    def close_now(self) -> Window[T] | None:
        """Close the window early (at shutdown), if it has events."""
        return self._close("stop") if self._items else None

    def _close(self, how: Literal["count", "time", "stop"]) -> Window[T]:
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


# --- alerts ------------------------------------------------------------------------------------


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
                if state.firing is None and state.breaches >= self.alert_after and state.cooldown == 0:
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


# --- reference ---------------------------------------------------------------------------------


@dataclass
class Reference:
    """Reference samples per stream (``documents``, ``requests``, ``responses.labels``, ``responses.scores``)."""

    reference_id: str
    description: str
    samples: dict[str, ReferenceSample]
    created_at_ms: int = 0
    _thresholds: dict[tuple[str, int], Thresholds] = field(default_factory=dict, repr=False)

    def thresholds(self, stream: str, n: int, config: MonitorConfig) -> Thresholds | None:
        """Thresholds for a window of ``n`` rows, calibrated once per size on :func:`calibration_sizes`.

        ``n`` is rounded down to the nearest size of that grid: a smaller calibration window has
        higher thresholds, so rounding down is conservative.
        """
        sample = self.samples.get(stream)
        if sample is None or n < config.min_drift_events:
            return None
        fitting = [size for size in calibration_sizes(config) if size <= n and size <= sample.size - 10]
        if not fitting:
            return None
        key = (stream, fitting[-1])
        if key not in self._thresholds:
            self._thresholds[key] = sample.calibrate(key[1], config.calibration_draws, config.drift_quantile)
        return self._thresholds[key]

    def calibrate_all(self, config: MonitorConfig) -> None:
        """Calibrate every stream at every grid size now (a worker does this off its event loop)."""
        for stream in self.samples:
            for size in calibration_sizes(config):
                self.thresholds(stream, size, config)


def calibration_sizes(config: MonitorConfig) -> list[int]:
    """Window sizes thresholds are calibrated for: the full window, then halves down to the minimum.

    Windows closed by count all have the full size; windows closed by time (quiet streams) use
    the largest grid size they reach, so a reference is calibrated a handful of times, not once
    per possible size.
    """
    sizes = [config.window_events]
    while sizes[-1] // 2 >= config.min_drift_events:
        sizes.append(sizes[-1] // 2)
    if sizes[-1] > config.min_drift_events:
        sizes.append(config.min_drift_events)
    return sorted(sizes)


def drift_metrics(
    reference: Reference | None, stream: str, window: WindowSample, config: MonitorConfig
) -> list[Metric]:
    """Drift statistics of a window against the stream's reference sample (none without one)."""
    sample = reference.samples.get(stream) if reference else None
    if reference is None or sample is None or window.size < config.min_drift_events:
        return []
    thresholds = reference.thresholds(stream, window.size, config)
    return [
        Metric(
            f"drift.{stat.name}",
            stat.value,
            stat.method,
            stat.threshold,
            count=window.size,
            severity="warning",
            hint=HINTS.get(stat.name.split(".")[0], HINTS["embedding"]),
        )
        for stat in sample.compare(window, thresholds)
    ]


# --- per-stream statistics ---------------------------------------------------------------------


def _rate(window: Window[Any]) -> Metric:
    return Metric(
        f"{window.stream}.per_second",
        len(window.items) / max(window.seconds, 1.0),
        "events / (last - first Kafka timestamp in the window, at least 1 s)",
        count=len(window.items),
    )


def _percentiles(name: str, values: list[float], method: str, **extra: Any) -> list[Metric]:
    if not values:
        return []
    points = np.percentile(np.asarray(values, dtype=np.float64), PERCENTILES)
    return [
        Metric(f"{name}.p{p}", float(v), method, count=len(values), **(extra if p == 95 else {}))
        for p, v in zip(PERCENTILES, points, strict=True)
    ]


def _feature_means(features: Mapping[str, Any], prefix: str, count: int) -> list[Metric]:
    return [
        Metric(f"{prefix}.{name}.mean", float(np.mean(features[name])), "mean over the window", count=count)
        for name in DRIFT_FEATURES
        if len(features[name])
    ]


def accuracy_metrics(items: list[dict[str, Any]], config: MonitorConfig) -> list[Metric]:
    """Accuracy overall and per slice, and the best-worst gap per slice dimension."""
    method = "share of feedback judged right (label equals the prediction, or rating >= 0.5)"
    correct = [bool(item["correct"]) for item in items]
    metrics = [
        Metric(
            "quality.accuracy",
            float(np.mean(correct)),
            method,
            config.min_accuracy,
            "below",
            count=len(items),
            severity="critical",
            hint=HINTS["quality.accuracy"],
        )
    ]
    for dimension in SLICE_DIMENSIONS:
        groups: dict[str, list[bool]] = {}
        for item in items:
            groups.setdefault(str(item.get(dimension) or "none"), []).append(bool(item["correct"]))
        judged = {name: float(np.mean(v)) for name, v in groups.items() if len(v) >= config.min_slice_events}
        for name, values in sorted(groups.items()):
            enough = name in judged
            metrics.append(
                Metric(
                    "quality.accuracy",
                    float(np.mean(values)),
                    method + ("" if enough else f"; fewer than {config.min_slice_events} events: not judged"),
                    config.min_accuracy if enough else None,
                    "below",
                    slice=f"{dimension}={name}",
                    count=len(values),
                    severity="critical",
                    hint=HINTS["quality.accuracy"],
                )
            )
        if len(judged) >= 2:
            worst = min(judged, key=lambda k: judged[k])
            metrics.append(
                Metric(
                    f"fairness.accuracy_gap.{dimension}",
                    max(judged.values()) - judged[worst],
                    f"best minus worst {dimension} accuracy over slices with >= {config.min_slice_events} events; "
                    "slice = the worst",
                    config.max_fairness_gap,
                    slice=f"{dimension}={worst}",
                    count=sum(len(groups[k]) for k in judged),
                    severity="critical",
                    hint=HINTS["fairness"],
                    alert_key=f"fairness.accuracy_gap.{dimension}",
                )
            )
    return metrics


def response_metrics(items: list[dict[str, Any]], config: MonitorConfig) -> list[Metric]:
    """Latency, errors, compute time and the label-free quality estimate of a responses window."""
    metrics: list[Metric] = []
    latency_method = "percentile of the response's latency breakdown (ms; total = request's Kafka time to produced)"
    for stage in STAGES:
        values = [float(r["latency"][f"{stage}_ms"]) for r in items]
        if stage != "total" and not any(values):
            continue
        extra: dict[str, Any] = (
            {"threshold": config.latency_p95_ms, "severity": "critical", "hint": HINTS["latency"]}
            if stage == "total"
            else {}
        )
        metrics += _percentiles(f"latency.{stage}", values, latency_method, **extra)
    failed = sum(r["status"] in FAILED_STATUSES for r in items)
    rejected = sum(r["status"] in ("INVALID", "BLOCKED") for r in items)
    metrics += [
        Metric(
            "responses.error_share",
            failed / len(items),
            f"share of responses with status {', '.join(FAILED_STATUSES)} (the service failed the caller)",
            config.max_error_share,
            count=len(items),
            severity="critical",
            hint=HINTS["errors"],
        ),
        Metric(
            "responses.rejected_share",
            rejected / len(items),
            "share of responses INVALID or BLOCKED (the request was at fault or hostile)",
            count=len(items),
        ),
    ]
    compute = [sum(float(r["latency"][f"{s}_ms"]) for s in ("embed", "search", "classify", "generate")) for r in items]
    metrics.append(
        Metric(
            "cost.compute_ms_per_request",
            float(np.mean(compute)),
            "mean embed+search+classify+generate ms per response (time on the infer agent's worker threads)",
            count=len(items),
        )
    )
    confidences = [max(r["probabilities"].values()) for r in items if r["status"] == "OK" and r["probabilities"]]
    if confidences:
        metrics.append(
            Metric(
                "quality.confidence_mean",
                float(np.mean(confidences)),
                "label-free estimate: mean max-probability of classify answers (expected accuracy if calibrated)",
                count=len(confidences),
            )
        )
    return metrics


# --- the monitor -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    label: str | None
    tenant: str | None


class Monitor:
    """Every window of every stream, the feedback join, drift against the reference, and alerts."""

    def __init__(
        self,
        config: MonitorConfig,
        tokenizer: UnknownTokenCounter,
        reference: Reference | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
        now_ms: Callable[[], int] | None = None,
        on_outputs: Callable[[list[Output]], None] | None = None,
    ) -> None:
        self.config, self.tokenizer, self.reference = config, tokenizer, reference
        self.clock, self.cpu_clock = clock, cpu_clock
        self.now_ms = now_ms or epoch_ms
        self.on_outputs = on_outputs
        self.alerts = AlertManager(config.alert_after, config.clear_after, config.cooldown_windows, self.now_ms)
        self.windows: dict[str, TumblingWindow[Any]] = {
            s: TumblingWindow(s, config.window_events, config.window_seconds) for s in STREAMS
        }
        self.answers: TtlTable[_Answer] = TtlTable(config.feedback_ttl_seconds)
        self.pending_feedback: TtlTable[dict[str, Any]] = TtlTable(config.feedback_ttl_seconds)
        self.unmatched_feedback = 0
        self._cpu_mark = cpu_clock()

    def set_reference(self, reference: Reference | None) -> None:
        self.reference = reference

    # --- inputs ------------------------------------------------------------------------------
    def on_embedding(self, record: Mapping[str, Any], timestamp_ms: int) -> list[Output]:
        """A ``ChunkEmbedding``; deletions are not monitored."""
        if record["op"] != "UPSERT" or not record["vector"]:
            return []
        return self._add("documents", (record["vector"], record["text"]), timestamp_ms)

    def on_request(self, record: Mapping[str, Any], timestamp_ms: int) -> list[Output]:
        """An ``InferenceRequest`` (as decoded from Avro or JSON)."""
        return self._add("requests", str(record.get("text") or ""), timestamp_ms)

    def on_response(self, record: Mapping[str, Any], timestamp_ms: int) -> list[Output]:
        """An ``InferenceResponse``: windowed, and kept for the feedback join."""
        outputs: list[Output] = []
        answer = _Answer(record.get("label"), record.get("tenant"))
        pending = self.pending_feedback.pop(record["request_id"])
        if pending is not None:
            outputs += self._judge(pending, answer, timestamp_ms)
        else:
            self.answers.put(record["request_id"], answer, self.clock())
        return outputs + self._add("responses", dict(record), timestamp_ms)

    def on_feedback(self, record: Mapping[str, Any], timestamp_ms: int) -> list[Output]:
        """A ``Feedback``: judged now if its response was seen, else kept until it arrives or expires."""
        answer = self.answers.get(record["request_id"])
        if answer is None:
            self.pending_feedback.put(record["request_id"], dict(record), self.clock())
            return []
        return self._judge(record, answer, timestamp_ms)

    def flush(self) -> list[Output]:
        """Close every window that has events (the worker is stopping): nothing seen goes unreported."""
        outputs: list[Output] = []
        for window in self.windows.values():
            closed = window.close_now()
            if closed is not None:
                outputs += self._snapshot(closed)
        return outputs

    def tick(self) -> list[Output]:
        """Close windows whose time is up and expire the join tables; call about once a second."""
        now = self.clock()
        self.answers.expire(now)
        self.unmatched_feedback += self.pending_feedback.expire(now)
        outputs: list[Output] = []
        for window in self.windows.values():
            closed = window.due(now)
            if closed is not None:
                outputs += self._snapshot(closed)
        return outputs

    # --- internals ---------------------------------------------------------------------------
    def _judge(self, feedback: Mapping[str, Any], answer: _Answer, timestamp_ms: int) -> list[Output]:
        if feedback.get("label") is not None and answer.label is not None:
            correct = feedback["label"] == answer.label
        elif feedback.get("rating") is not None:
            correct = float(feedback["rating"]) >= 0.5
        else:
            return []  # nothing to judge by (a label for an answer that has none, and no rating)
        item = {
            "correct": correct,
            "tenant": feedback.get("tenant") or answer.tenant,
            "source": feedback.get("source"),
            "language": feedback.get("language"),
        }
        return self._add("feedback", item, timestamp_ms)

    def _add(self, stream: str, item: Any, timestamp_ms: int) -> list[Output]:
        closed = self.windows[stream].add(item, timestamp_ms, self.clock())
        return self._snapshot(closed) if closed is not None else []

    def _snapshot(self, window: Window[Any]) -> list[Output]:
        builders: dict[str, Callable[[Window[Any]], list[Metric]]] = {
            "documents": self._documents,
            "requests": self._requests,
            "responses": self._responses,
            "feedback": lambda w: accuracy_metrics(w.items, self.config),
        }
        metrics = [_rate(window), *builders[window.stream](window)]
        snapshot = {
            "window_id": window.window_id,
            "stream": window.stream,
            "seq": window.seq,
            "start_ms": window.start_ms,
            "end_ms": window.end_ms,
            "events": len(window.items),
            "closed_by": window.closed_by,
            "reference_id": self.reference.reference_id if self.reference else None,
            "metrics": [m.to_avro() for m in metrics],
            "created_at_ms": self.now_ms(),
        }
        outputs: list[Output] = [("snapshot", snapshot)]
        outputs += [("alert", alert) for alert in self.alerts.observe(metrics, window)]
        if self.on_outputs is not None:
            self.on_outputs(outputs)
        return outputs

    def _documents(self, window: Window[Any]) -> list[Metric]:
        texts = [text for _, text in window.items]
        features = text_features(texts, self.tokenizer, redacted=True)
        vectors = np.asarray([vector for vector, _ in window.items], dtype=np.float32)
        sample = WindowSample(vectors=vectors, numeric={k: features[k] for k in DRIFT_FEATURES})
        cpu_now = self.cpu_clock()
        cpu, self._cpu_mark = cpu_now - self._cpu_mark, cpu_now
        n = len(texts)
        return [
            Metric("tokens.processed", float(features["tokens"].sum()), "WordPiece tokens of the chunks", count=n),
            Metric(
                "cost.cpu_seconds_per_1000_chunks",
                cpu / n * 1000,
                "process CPU seconds of the monitor's worker (every agent it runs) since the previous "
                "documents window, per 1,000 chunks",
                count=n,
            ),
            *_feature_means(features, "documents", n),
            *drift_metrics(self.reference, "documents", sample, self.config),
        ]

    def _requests(self, window: Window[Any]) -> list[Metric]:
        features = text_features(window.items, self.tokenizer)
        n = len(window.items)
        sample = WindowSample(numeric={k: features[k] for k in DRIFT_FEATURES})
        return [
            Metric("tokens.processed", float(features["tokens"].sum()), "WordPiece tokens of request texts", count=n),
            *_feature_means(features, "requests", n),
            *drift_metrics(self.reference, "requests", sample, self.config),
        ]

    def _responses(self, window: Window[Any]) -> list[Metric]:
        items = window.items
        metrics = response_metrics(items, self.config)
        scores = [r["hits"][0]["score"] for r in items if r["status"] == "OK" and r["hits"]]
        labels = [r["label"] for r in items if r["status"] == "OK" and r.get("label")]
        if scores:
            sample = WindowSample(numeric={"top1_score": np.asarray(scores, dtype=np.float64)})
            metrics += drift_metrics(self.reference, "responses.scores", sample, self.config)
        if labels:
            sample = WindowSample(categorical={"predicted_label": labels})
            metrics += drift_metrics(self.reference, "responses.labels", sample, self.config)
        return metrics


def with_reference_id(reference: Reference, description: str) -> Reference:
    """``reference`` with its id recomputed from its samples."""
    digest = hashlib.sha256()
    for name in sorted(reference.samples):
        sample = reference.samples[name]
        digest.update(name.encode())
        if sample.vectors is not None:
            digest.update(np.asarray(sample.vectors, dtype=np.float16).tobytes())
        for key in sorted(sample.numeric):
            digest.update(key.encode() + np.asarray(sample.numeric[key], dtype=np.float64).tobytes())
        for key in sorted(sample.categorical):
            digest.update(key.encode() + "\x00".join(sample.categorical[key]).encode())
    return replace(reference, reference_id=digest.hexdigest()[:16], description=description)
