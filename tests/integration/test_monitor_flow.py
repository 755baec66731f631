"""The monitor agent on the real broker with real text, the real ONNX embedder and real feedback.

One ``monitor`` worker serves the module. The drift reference is half of the stdlib docstring
corpus, set through the CLI; chunks of the other half are embedded with the production embedder
and streamed to docs.embeddings (one partition, so windows hold exactly what was sent in order):
they must raise no drift alert. Then chunks of installed packages' long descriptions must raise
one within 3 windows. Feedback that turns wrong for one tenant must raise a quality and a
fairness alert naming that tenant and no other (its answers read from the tenants' own reply
topics).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from streams.index.embed import OnnxEmbedder
from streams.inference.feedback import feedback_record, send_feedback
from streams.inference.service import base_response
from streams.ingest.chunk import default_tokenizer
from streams.kafka.admin import ensure_topics, producer
from streams.kafka.avro import codec_from_settings
from streams.kafka.topics import Topics
from streams.monitor.reference import (
    corpus_texts,
    package_description_texts,
    sample_chunks,
)
from streams.monitor.status import read_records
from streams.settings import Settings

from .conftest import ROOT, WorkerProcess, run, run_cli

WINDOW = 50
HELD_OUT_WINDOWS = 20
DRIFT_WINDOWS = 3


@pytest.fixture(scope="module")
def monitored(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = Settings(
        bootstrap_servers=kafka_bootstrap,
        namespace="mon" + uuid.uuid4().hex[:10],
        data_dir=tmp_path_factory.mktemp("monitor"),
        models_dir=ROOT / ".llmops" / "models",
        partitions=3,
        monitor_window_events=WINDOW,
        monitor_window_seconds=600.0,  # windows close by count here: the test never depends on timing
        monitor_min_slice_events=5,
    )
    run(ensure_topics(settings))
    result = run_cli(settings, "monitor", "set-reference", "--corpus", "stdlib", "--split", "reference", "--json")
    assert result.returncode == 0, result.stderr
    stored = json.loads(result.stdout)
    assert stored["samples"]["documents"]["rows"] == settings.monitor_reference_size
    assert stored["thresholds"]["documents"]["embedding.mmd"] > 0
    worker = WorkerProcess(settings, agents="monitor").start()
    try:
        yield settings
    finally:
        code = worker.stop()
        assert code == 0, f"worker exit code {code}; log:\n{worker.log_tail()}"


async def send_in_order(settings: Settings, topic: str, records: list[tuple[str, str, dict[str, Any]]]) -> None:
    """(key, schema, record) to partition 0 of ``topic``, so the monitor sees them in this order."""
    codec = codec_from_settings(settings)
    kafka = producer(settings)
    await kafka.start()
    try:
        for key, schema, record in records:
            await kafka.send(topic, codec.encode(schema, record, topic), key=key.encode(), partition=0)
        await kafka.flush()
    finally:
        await kafka.stop()


def chunk_embeddings(settings: Settings, chunks: list[str], prefix: str) -> list[tuple[str, str, dict[str, Any]]]:
    embedder = OnnxEmbedder.from_settings(settings)
    vectors = embedder.embed(chunks)
    return [
        (
            f"{prefix}-{i}",
            "ChunkEmbedding",
            {
                "op": "UPSERT",
                "chunk_id": f"{prefix}-{i}#0",
                "doc_id": f"{prefix}-{i}",
                "chunk_index": 0,
                "chunk_count": 1,
                "content_hash": "0" * 64,
                "text": text,
                "title": None,
                "source": prefix,
                "tenant": None,
                "model_name": embedder.name,
                "model_version": embedder.version,
                "dimension": embedder.dimension,
                "vector": [float(x) for x in vector],
                "raw_timestamp_ms": 0,
                "traceparent": None,
            },
        )
        for i, (text, vector) in enumerate(zip(chunks, np.asarray(vectors), strict=True))
    ]


def wait_for_snapshots(settings: Settings, stream: str, count: int, timeout: float = 180.0) -> list[dict[str, Any]]:
    topic = Topics(settings.namespace).monitor_metrics
    deadline = time.monotonic() + timeout
    snapshots: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        snapshots = [s for s in run(read_records(settings, topic, "MetricSnapshot")) if s["stream"] == stream]
        if len(snapshots) >= count:
            return sorted(snapshots, key=lambda s: s["seq"])
        time.sleep(1.0)
    raise AssertionError(f"{len(snapshots)} {stream} snapshots after {timeout:.0f}s, expected {count}")


def alerts_of(settings: Settings) -> list[dict[str, Any]]:
    return run(read_records(settings, Topics(settings.namespace).monitor_alerts, "Alert"))


@pytest.mark.timeout(900)  # a 2,000-row reference is calibrated (~25 s CPU) and embedded on 2 shared cores
def test_held_out_stdlib_raises_no_drift_alert_and_package_descriptions_do_within_3_windows(
    monitored: Settings,
) -> None:
    tokenizer = default_tokenizer()
    held_out = sample_chunks(corpus_texts("holdout"), WINDOW * HELD_OUT_WINDOWS, tokenizer, monitored, seed=1)
    foreign = sample_chunks(package_description_texts(), WINDOW * DRIFT_WINDOWS, tokenizer, monitored, seed=2)
    assert len(held_out) == WINDOW * HELD_OUT_WINDOWS and len(foreign) == WINDOW * DRIFT_WINDOWS
    topic = Topics(monitored.namespace).docs_embeddings
    run(send_in_order(monitored, topic, chunk_embeddings(monitored, held_out, "stdlib-holdout")))
    run(send_in_order(monitored, topic, chunk_embeddings(monitored, foreign, "package-metadata")))
    snapshots = wait_for_snapshots(monitored, "documents", HELD_OUT_WINDOWS + DRIFT_WINDOWS)
    assert all(s["closed_by"] == "count" and s["events"] == WINDOW for s in snapshots)
    # The worker started after the reference was set: it read it back from monitor.reference.
    stored = json.loads(run_cli(monitored, "monitor", "status", "--json").stdout)["reference"]
    assert all(s["reference_id"] == stored["reference_id"] for s in snapshots)
    drift = [a for a in alerts_of(monitored) if a["metric"].startswith("drift.") and a["state"] == "FIRING"]
    seq = {a["alert_id"]: int(a["window_id"].split(":")[1]) for a in drift}
    false_alarm_windows = {s for s in seq.values() if s <= HELD_OUT_WINDOWS}
    breaching = [
        s["seq"]
        for s in snapshots[:HELD_OUT_WINDOWS]
        if any(m["breached"] for m in s["metrics"] if m["name"].startswith("drift."))
    ]
    first_detection = min((s for s in seq.values() if s > HELD_OUT_WINDOWS), default=None)
    print(
        json.dumps(
            {
                "held_out_windows": HELD_OUT_WINDOWS,
                "windows_with_drift_alert": len(false_alarm_windows),
                "false_alarm_rate": len(false_alarm_windows) / HELD_OUT_WINDOWS,
                "windows_with_any_breaching_statistic": len(breaching),
                "breaching_windows": breaching,
                "detection_delay_windows": None if first_detection is None else first_detection - HELD_OUT_WINDOWS,
                "alerts": sorted((a["window_id"], a["metric"]) for a in drift),
            }
        )
    )
    assert len(false_alarm_windows) <= HELD_OUT_WINDOWS // 20, f"false alarms in windows {sorted(false_alarm_windows)}"
    assert first_detection is not None and first_detection - HELD_OUT_WINDOWS <= DRIFT_WINDOWS
    embedding = [m for m in snapshots[-1]["metrics"] if m["name"].startswith("drift.embedding.")]
    assert {m["name"] for m in embedding} == {
        "drift.embedding.mmd",
        "drift.embedding.centroid_cosine",
        "drift.embedding.novel_share",
    }
    assert all("block permutations of the reference" in m["method"] for m in embedding)

    # The reference holds a share of every stdlib package: held-out chunks have near neighbours
    # in it, package descriptions do not, so every foreign window breaches the novelty statistic.
    def novel(snapshot: dict[str, Any]) -> dict[str, Any]:
        return next(m for m in snapshot["metrics"] if m["name"] == "drift.embedding.novel_share")

    print(json.dumps({"novel_share": [(novel(s)["value"], novel(s)["threshold"]) for s in snapshots]}))
    assert all(novel(s)["breached"] and novel(s)["p_value"] <= 0.005 for s in snapshots[HELD_OUT_WINDOWS:])

    # Calibrated on windows of whole stdlib packages, the embedding thresholds are as wide as the
    # differences between packages (docs/benchmarks.md): the foreign windows may stay under them, but
    # they must be rarer under the null than the typical held-out window.
    def mmd_p(snapshot: dict[str, Any]) -> float:
        return float(next(m["p_value"] for m in snapshot["metrics"] if m["name"] == "drift.embedding.mmd"))

    held_out_p = sorted(mmd_p(s) for s in snapshots[:HELD_OUT_WINDOWS])
    assert all(mmd_p(s) < held_out_p[len(held_out_p) // 2] for s in snapshots[HELD_OUT_WINDOWS:]), held_out_p

    printed = run_cli(monitored, "monitor", "status", timeout=120)  # not a terminal: prints once, exits
    assert printed.returncode == 0 and "Open alerts" in printed.stdout, printed.stderr[-2000:]
    status = run_cli(monitored, "monitor", "status", "--json")
    assert status.returncode == 0, status.stderr
    view = json.loads(status.stdout)
    assert view["streams"]["documents"]["seq"] == HELD_OUT_WINDOWS + DRIFT_WINDOWS
    assert any(a["metric"].startswith("drift.") for a in view["open_alerts"])
    report = monitored.data_dir / "report.html"
    assert run_cli(monitored, "monitor", "report", "--out", str(report)).returncode == 0
    assert all(a["metric"] in report.read_text() for a in drift)  # the alerts that fired are in the report


def test_feedback_turning_wrong_for_one_tenant_raises_quality_and_fairness_alerts_for_it_alone(
    monitored: Settings,
) -> None:
    tenants = ("north", "south", "east", "west")
    good, bad = 2 * WINDOW, 3 * WINDOW
    responses, feedback = [], []
    for i in range(good + bad):
        tenant = tenants[i % len(tenants)]
        request_id = f"q{i}-{uuid.uuid4().hex[:8]}"
        response = base_response(request_id, "app", "classify", "OK", tenant=tenant)
        response.update(label="json", probabilities={"json": 0.9, "asyncio": 0.1})
        response["latency"].update(embed_ms=4.0, classify_ms=0.5, total_ms=12.0)
        responses.append((request_id, "InferenceResponse", response))
        wrong = i >= good and tenant == "west"
        feedback.append(feedback_record(request_id, label="asyncio" if wrong else "json", source="app", language="en"))
    # Each tenant's answers are on its own reply topic, as the infer agent writes them: the monitor
    # follows every tenant's topic (created now, after it started) and joins their feedback.
    topics = Topics(monitored.namespace)
    run(ensure_topics(monitored, [topics.tenant_responses_spec(t, 1, 1) for t in tenants]))
    for tenant in tenants:
        mine = [r for r in responses if r[2]["tenant"] == tenant]
        run(send_in_order(monitored, topics.responses_for(tenant), mine))
    answered = wait_for_snapshots(monitored, "responses", (good + bad) // WINDOW)  # every answer was read
    assert sum(s["events"] for s in answered) == good + bad
    assert run(send_feedback(monitored, feedback)) == len(feedback)
    snapshots = wait_for_snapshots(monitored, "feedback", (good + bad) // WINDOW)
    assert sum(s["events"] for s in snapshots) == good + bad
    alerts = [a for a in alerts_of(monitored) if a["metric"].startswith(("quality.", "fairness."))]
    firing = {(a["metric"], a["slice"]) for a in alerts if a["state"] == "FIRING"}
    assert firing == {("quality.accuracy", "tenant=west"), ("fairness.accuracy_gap.tenant", "tenant=west")}, alerts
    assert all(a["severity"] == "critical" and a["hint"] for a in alerts)
    latest = {(m["name"], m["slice"]): m for m in snapshots[-1]["metrics"]}
    assert latest[("fairness.accuracy_gap.tenant", "tenant=west")]["value"] > 0.5
    assert not latest[("quality.accuracy", "tenant=north")]["breached"]
