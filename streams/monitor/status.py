"""What ``llmops monitor status`` and ``report`` read: snapshots, alerts, lag and the reference.

Why this exists:
    People and scripts ask "is the monitor keeping up, and is anything drifting or breaching an
    SLO?". The answer is on Kafka: the latest snapshot per stream on ``monitor.metrics``, open
    incidents on ``monitor.alerts``, and the monitor's consumer lag on its four input topics.
"""

from __future__ import annotations

from typing import Any

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka.admin import client_kwargs, offsets, read_range
from streams.kafka.avro import codec_from_settings
from streams.kafka.topics import Topics
from streams.monitor.reference import load_reference, summary
from streams.settings import Settings


async def read_records(settings: Settings, topic: str, name: str, last: int | None = None) -> list[dict[str, Any]]:
    """Decoded records of ``topic`` (the ``last`` per partition, or all), in timestamp order."""
    codec = codec_from_settings(settings)
    begin, end = await offsets(settings, [topic])
    start = {tp: max(begin[tp], end[tp] - last) if last else begin[tp] for tp in end}
    messages = [m async for m in read_range(settings, start, end)]
    messages.sort(key=lambda m: (m.timestamp, m.partition, m.offset))
    return [codec.decode(m.value, name) for m in messages if m.value]


def open_alerts(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """FIRING alerts without a RESOLVED event after them."""
    firing: dict[str, dict[str, Any]] = {}
    for alert in alerts:
        if alert["state"] == "FIRING":
            firing[alert["alert_id"]] = alert
        else:
            firing.pop(alert["alert_id"], None)
    return list(firing.values())


async def monitor_lag(settings: Settings) -> dict[str, int]:
    """Records the monitor has not committed yet, per input topic (its group runs the ``monitor`` agents)."""
    topics = Topics(settings.namespace)
    inputs = [topics.docs_embeddings, topics.inference_requests, topics.inference_responses, topics.feedback]
    _, end = await offsets(settings, inputs)
    prefix = topics.app_id("x")[: -len("x")]
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    committed: dict[TopicPartition, int] = {}
    try:
        groups = [g[0] for g in await admin.list_consumer_groups() if g[0].startswith(prefix) and "monitor" in g[0]]
        for group in groups:
            for tp, meta in (await admin.list_consumer_group_offsets(group)).items():
                committed[tp] = max(committed.get(tp, 0), meta.offset)
    finally:
        await admin.close()
    if not committed:
        return {}
    return {name: sum(max(0, e - committed.get(tp, 0)) for tp, e in end.items() if tp.topic == name) for name in inputs}


async def monitor_status(settings: Settings, last: int = 50) -> dict[str, Any]:
    """Latest snapshot per stream, open alerts, lag and the reference, as one JSON-able dict."""
    topics = Topics(settings.namespace)
    snapshots = await read_records(settings, topics.monitor_metrics, "MetricSnapshot", last)
    alerts = await read_records(settings, topics.monitor_alerts, "Alert")
    latest: dict[str, dict[str, Any]] = {}
    for snapshot in snapshots:
        latest[snapshot["stream"]] = snapshot
    reference = await load_reference(settings)
    return {
        "namespace": settings.namespace,
        "reference": summary(reference) if reference else None,
        "lag": await monitor_lag(settings),
        "streams": latest,
        "open_alerts": open_alerts(alerts),
        "alert_events": len(alerts),
    }
