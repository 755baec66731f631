"""Monitoring snapshots and alerts as OpenTelemetry metrics.

Why this exists:
    Teams that already watch OpenTelemetry dashboards should see the same statistics and alerts
    there, not only on Kafka. Each snapshot value becomes a gauge sample and each alert event a
    counter increment, through whatever ``MeterProvider`` the process configured (the global one
    by default: a no-op until an exporter is set up; tests pass one with an in-memory reader).

Instruments:
    * ``llmops.monitor.value`` (gauge): every statistic; attributes ``stream``, ``metric``, ``slice``.
    * ``llmops.monitor.threshold`` (gauge): its threshold, when it has one.
    * ``llmops.monitor.alerts`` (counter): alert events; attributes ``metric``, ``slice``, ``severity``, ``state``.
    * ``llmops.monitor.alerts_firing`` (up-down counter): incidents open now.
"""

from __future__ import annotations

from opentelemetry import metrics

from streams.monitor.config import Output


class OtelMonitorExporter:
    """Records :class:`~streams.monitor.monitor.Monitor` outputs on OpenTelemetry instruments."""

    def __init__(self, meter: metrics.Meter | None = None) -> None:
        meter = meter or metrics.get_meter("llmops.monitor")
        self._value = meter.create_gauge("llmops.monitor.value", description="Monitoring statistic of the last window")
        self._threshold = meter.create_gauge(
            "llmops.monitor.threshold", description="Alerting threshold of a statistic"
        )
        self._alerts = meter.create_counter("llmops.monitor.alerts", description="Alert events (FIRING, RESOLVED)")
        self._firing = meter.create_up_down_counter("llmops.monitor.alerts_firing", description="Open incidents")

    def export(self, outputs: list[Output]) -> None:
        for kind, record in outputs:
            if kind == "snapshot":
                for metric in record["metrics"]:
                    attributes = {"stream": record["stream"], "metric": metric["name"], "slice": metric["slice"] or ""}
                    self._value.set(metric["value"], attributes)
                    if metric["threshold"] is not None:
                        self._threshold.set(metric["threshold"], attributes)
            else:
                attributes = {
                    "metric": record["metric"],
                    "slice": record["slice"] or "",
                    "severity": record["severity"],
                }
                self._alerts.add(1, {**attributes, "state": record["state"]})
                self._firing.add(1 if record["state"] == "FIRING" else -1, attributes)
