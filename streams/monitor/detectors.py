"""Detectors: the statistics of a closed window, against a reference where there is one.

Why this exists:
    Drift (against a :class:`Reference` with thresholds calibrated per window size), accuracy
    and fairness from feedback, and latency, error share and cost of responses are plain
    functions of a window's rows, so tests call them with a list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from streams.monitor.config import FAILED_STATUSES, HINTS, PERCENTILES, SLICE_DIMENSIONS, STAGES, Metric, MonitorConfig
from streams.monitor.drift import ReferenceSample, Thresholds, WindowSample
from streams.monitor.text_features import DRIFT_FEATURES
from streams.monitor.windows import Window

# Statistics that alert on one breaching window instead of the monitor's ``alert_after`` in a row.
# novel_share's threshold is the 0.995 quantile of in-order null windows (a 0.5% false-alarm rate
# per window by construction), and its single-window power at a 20% shift is about 0.94
# (bench/monitor_drift.py): two windows in a row would cut that to ~0.88 within 2 windows and miss
# the "within 3 windows in 95% of trials" target (18/20 measured), one window keeps it.
SINGLE_WINDOW_ALERTS = {"embedding.novel_share": 1}


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
            p_value=stat.p_value,
            alert_after=SINGLE_WINDOW_ALERTS.get(stat.name),
        )
        for stat in sample.compare(window, thresholds)
    ]


def rate_metric(window: Window[Any]) -> Metric:
    """Events per second over the window's span."""
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


def feature_means(features: Mapping[str, Any], prefix: str, count: int) -> list[Metric]:
    """The mean of each text feature of a window, as informational metrics."""
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
        if sample.groups is not None:
            digest.update(b"groups" + np.asarray(sample.groups, dtype=np.int64).tobytes())
        if sample.drawn_from:
            digest.update(b"drawn_from%d" % sample.drawn_from)
    return replace(reference, reference_id=digest.hexdigest()[:16], description=description)
