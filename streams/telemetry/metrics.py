"""Prometheus metrics of a worker: what ``/metrics`` serves (``streams.telemetry.endpoints``).

Why this exists:
    SREs scrape workers with Prometheus and alert on consumer lag, dead letters, latency and
    drift. The metric names are defined once here; ``infra/prometheus/rules.yml`` and
    ``infra/grafana/llmops.json`` use exactly these names, and a unit test checks that they do.

Usage:
    >>> stage = stage_metrics("ingest")            # once, when the agent is declared
    >>> stage.processed.inc(len(events))           # once per batch: one lock, no allocation
    >>> stage.batch_seconds.observe(elapsed)
    >>> count_dead_letter("ingest", "EMPTY_TEXT")  # rare: labels looked up per call
    >>> text = exposition()                        # the Prometheus text format

Notes:
    Everything on the hot path is a pre-bound child (``Counter.labels(...)`` once, at wiring
    time): an increment per batch or per request costs one small lock, which is what the
    ingest CPU budget allows. Consumer lag is measured off the hot path, every few seconds, and
    swapped in whole (:class:`ConsumerLag`), so a scrape never sees half an update.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, ...

# Batches take milliseconds (ingest) to seconds (embed on a busy core); requests 1 ms to tens of s (rag).
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

RECORDS_PROCESSED = Counter(
    "llmops_records_processed",
    "Records a stage read and handled (answered, written or dead-lettered).",
    ["stage"],
    registry=REGISTRY,
)
RECORDS_DEAD_LETTERED = Counter(
    "llmops_records_dead_lettered",
    "Records a stage sent to the dead-letter topic, by reason code.",
    ["stage", "reason"],
    registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "llmops_batch_seconds",
    "Time a stage took for one micro-batch (decode, work, outputs acknowledged by Kafka).",
    ["stage"],
    buckets=BATCH_BUCKETS,
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "llmops_request_seconds",
    "Time the infer agent took to answer one request, by task (search, classify, rag).",
    ["task"],
    buckets=REQUEST_BUCKETS,
    registry=REGISTRY,
)
MODEL_ACTIVE = Gauge(
    "llmops_model_active",
    "1 for each model version this worker answers or embeds with.",
    ["agent", "model", "version"],
    registry=REGISTRY,
)
DRIFT_SCORE = Gauge(
    "llmops_drift_score",
    "Drift statistic of the last closed monitoring window, per stream and detector.",
    ["stream", "detector"],
    registry=REGISTRY,
)
DRIFT_THRESHOLD = Gauge(
    "llmops_drift_threshold",
    "Calibrated alerting threshold of that drift statistic (score above it = drifted window).",
    ["stream", "detector"],
    registry=REGISTRY,
)
INDEX_BUILD_RECORDS = Gauge(
    "llmops_index_build_records",
    "Records of docs.raw a candidate index's build has read (of=done) and the topic holds (of=total).",
    ["version", "of"],
    registry=REGISTRY,
)
INDEX_BUILD_ETA = Gauge(
    "llmops_index_build_eta_seconds",
    "Estimated seconds until a candidate index's build reaches the end of docs.raw (0 when caught up).",
    ["version"],
    registry=REGISTRY,
)
LAG_FAMILY = "llmops_consumer_lag"
READY_FAMILY = "llmops_ready"
WORKER_READY_FAMILY = "llmops_worker_ready"

# Every family the exporter serves, and its type: what rules and dashboards may name.
METRIC_FAMILIES: dict[str, str] = {
    "llmops_records_processed": "counter",
    "llmops_records_dead_lettered": "counter",
    "llmops_batch_seconds": "histogram",
    "llmops_request_seconds": "histogram",
    "llmops_model_active": "gauge",
    "llmops_drift_score": "gauge",
    "llmops_drift_threshold": "gauge",
    "llmops_index_build_records": "gauge",
    "llmops_index_build_eta_seconds": "gauge",
    LAG_FAMILY: "gauge",
    READY_FAMILY: "gauge",
    WORKER_READY_FAMILY: "gauge",
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_virtual_memory_bytes": "gauge",
    "process_start_time_seconds": "gauge",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
}
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",)}


def sample_names() -> set[str]:
    """Every sample name a scrape can show (``_total``, ``_bucket``... included)."""
    return {family + suffix for family, kind in METRIC_FAMILIES.items() for suffix in _SUFFIXES[kind]}


@dataclass(frozen=True)
class StageMetrics:
    """A stage's pre-bound instruments (bound once; the hot path only increments)."""

    processed: Any
    batch_seconds: Any


@cache
def stage_metrics(stage: str) -> StageMetrics:
    """The instruments of ``stage`` (ingest, embed, index, infer, monitor)."""
    return StageMetrics(RECORDS_PROCESSED.labels(stage=stage), BATCH_SECONDS.labels(stage=stage))


@cache
def request_seconds(task: str) -> Any:
    """The latency histogram of requests of ``task`` (a handful of tasks: bound once each)."""
    return REQUEST_SECONDS.labels(task=task)


def count_dead_letter(stage: str, reason: str) -> None:
    """One more dead letter of ``stage`` for ``reason``."""
    RECORDS_DEAD_LETTERED.labels(stage=stage, reason=reason).inc()


_models_lock = threading.Lock()
_models: dict[str, set[tuple[str, str]]] = {}


def set_active_models(agent: str, models: Iterable[tuple[str, str]]) -> None:
    """The (name, version) pairs ``agent`` runs now; versions it dropped disappear from the scrape."""
    current = set(models)
    with _models_lock:
        for name, version in _models.get(agent, set()) - current:
            MODEL_ACTIVE.remove(agent, name, version)
        for name, version in current:
            MODEL_ACTIVE.labels(agent=agent, model=name, version=version).set(1)
        _models[agent] = current


_builds: set[str] = set()


def set_index_builds(progress: Iterable[Mapping[str, Any]]) -> None:
    """Progress of the index builds this worker runs (``BuildProgress.as_dict()``); finished ones leave the scrape."""
    current = {str(p["version"])[:16]: p for p in progress}
    with _models_lock:
        for version in _builds - set(current):
            for of in ("done", "total"):
                INDEX_BUILD_RECORDS.remove(version, of)
            INDEX_BUILD_ETA.remove(version)
        for version, p in current.items():
            INDEX_BUILD_RECORDS.labels(version=version, of="done").set(p["done"])
            INDEX_BUILD_RECORDS.labels(version=version, of="total").set(p["total"])
            INDEX_BUILD_ETA.labels(version=version).set(-1 if p["eta_s"] is None else p["eta_s"])
        _builds.clear()
        _builds.update(current)


def observe_monitor_outputs(outputs: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Drift scores (and thresholds) of the monitor's closed windows, as gauges.

    ``outputs`` are :class:`streams.monitor.monitor.Monitor` outputs: ``("snapshot", record)``
    with ``record["metrics"]`` holding ``drift.<detector>`` statistics, or alerts (ignored here).
    """
    for kind, record in outputs:
        if kind != "snapshot":
            continue
        for metric in record["metrics"]:
            name = metric["name"]
            if not name.startswith("drift."):
                continue
            labels = {"stream": record["stream"], "detector": name.removeprefix("drift.")}
            DRIFT_SCORE.labels(**labels).set(metric["value"])
            if metric["threshold"] is not None:
                DRIFT_THRESHOLD.labels(**labels).set(metric["threshold"])


class ConsumerLag(Collector):
    """``llmops_consumer_lag{group, topic, partition}``: records not yet committed by a group."""

    def __init__(self) -> None:
        self._lag: dict[str, dict[tuple[str, int], int]] = {}

    def update(self, group: str, lag: Mapping[tuple[str, int], int]) -> None:
        """Replace ``group``'s figures (one dict swap: a scrape sees the old or the new ones)."""
        self._lag = {**self._lag, group: dict(lag)}

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            LAG_FAMILY,
            "Records on a partition past the consumer group's committed offset (end offset - committed).",
            labels=["group", "topic", "partition"],
        )
        for group, partitions in sorted(self._lag.items()):
            for (topic, partition), lag in sorted(partitions.items()):
                family.add_metric([group, topic, str(partition)], lag)
        yield family


class Readiness(Collector):
    """``llmops_ready{check}`` (1 ready, 0 not) and ``llmops_worker_ready``, read at scrape time."""

    def __init__(self, checks: Callable[[], Mapping[str, str | None]]) -> None:
        self._checks = checks

    def collect(self) -> Iterator[Metric]:
        results = self._checks()
        per_check = GaugeMetricFamily(READY_FAMILY, "1 when this readiness check passes.", labels=["check"])
        for name, problem in sorted(results.items()):
            per_check.add_metric([name], 0 if problem else 1)
        yield per_check
        ready = all(problem is None for problem in results.values())
        yield GaugeMetricFamily(
            WORKER_READY_FAMILY, "1 when every readiness check passes (/readyz 200).", 1 if ready else 0
        )


LAG = ConsumerLag()
REGISTRY.register(LAG)


def exposition() -> bytes:
    """The current scrape, in the Prometheus text exposition format."""
    return generate_latest(REGISTRY)
