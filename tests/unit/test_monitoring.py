"""The pure monitoring core: windows, the feedback join, statistics, alerts, OpenTelemetry export."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from streams.inference.feedback import BadFeedback, decode_feedback, feedback_record
from streams.inference.service import base_response
from streams.kafka.avro import AvroCodec, EmbeddedRegistry
from streams.monitor.alerts import AlertManager
from streams.monitor.config import Metric, MonitorConfig
from streams.monitor.detectors import Reference, accuracy_metrics, with_reference_id
from streams.monitor.drift import ReferenceSample
from streams.monitor.index_versions import REFERENCE_CLIENT
from streams.monitor.monitor import Monitor
from streams.monitor.otel import OtelMonitorExporter
from streams.monitor.reference import reference_from_avro, reference_to_avro, stratified_blocks
from streams.monitor.report import write_report
from streams.monitor.status import open_alerts
from streams.monitor.windows import TtlTable, TumblingWindow, Window


class WordCounter:
    """A tokenizer stand-in: words are tokens, words with digits are unknown."""

    def count_unknown_batch(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        return [(len(t.split()), sum(any(c.isdigit() for c in w) for w in t.split())) for t in texts]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def window(seq: int = 1) -> Window[Any]:
    return Window("feedback", seq, 0, 1000, [], "count")


def test_tumbling_windows_close_by_count_and_by_time() -> None:
    windows: TumblingWindow[int] = TumblingWindow("s", max_events=3, max_seconds=10)
    assert windows.add(1, 100, 0.0) is None and windows.add(2, 50, 1.0) is None
    closed = windows.add(3, 300, 2.0)
    assert closed is not None and closed.items == [1, 2, 3] and closed.closed_by == "count"
    assert (closed.start_ms, closed.end_ms, closed.window_id) == (50, 300, "s:1")
    assert windows.due(100.0) is None  # empty windows never close
    windows.add(4, 400, 5.0)
    assert windows.due(14.9) is None
    late = windows.due(15.0)
    assert late is not None and late.items == [4] and late.closed_by == "time" and late.seq == 2


def test_ttl_table_expires_oldest_entries_first() -> None:
    table: TtlTable[str] = TtlTable(ttl=10)
    table.put("a", "1", 0.0)
    table.put("b", "2", 5.0)
    assert table.expire(10.0) == 1 and table.get("a") is None and table.get("b") == "2"
    assert table.pop("b") == "2" and len(table) == 0


def test_one_incident_is_one_alert_with_hysteresis_and_cooldown() -> None:
    manager = AlertManager(alert_after=2, clear_after=2, cooldown_windows=3, now_ms=lambda: 7)

    def observe(value: float, seq: int) -> list[dict[str, Any]]:
        return manager.observe([Metric("quality.accuracy", value, "m", 0.7, "below", hint="look")], window(seq))

    values = [0.9, 0.5, 0.9, 0.5, 0.5, 0.4, 0.6, 0.8, 0.5, 0.8, 0.8, 0.5, 0.5, 0.5, 0.5, 0.5]
    events = [(seq, e["state"]) for seq, v in enumerate(values, 1) for e in observe(v, seq)]
    # a single bad window raises nothing; two in a row raise one alert however long it lasts;
    # two healthy windows in a row resolve it; windows 12-14 are the cooldown, so it fires again at 15.
    assert events == [(5, "FIRING"), (11, "RESOLVED"), (15, "FIRING")]


def test_a_metric_may_alert_on_one_breaching_window() -> None:
    manager = AlertManager(alert_after=2, clear_after=2, cooldown_windows=0, now_ms=lambda: 7)
    novel = [Metric("drift.embedding.novel_share", v, "m", 0.2, alert_after=1) for v in (0.1, 0.5)]
    other = [Metric("drift.embedding.mmd", v, "m", 0.2) for v in (0.1, 0.5)]
    fired = [e["metric"] for i in range(2) for e in manager.observe([novel[i], other[i]], window(i + 1))]
    assert fired == ["drift.embedding.novel_share"]  # mmd waits for its second breaching window


def test_accuracy_per_slice_and_fairness_gap_name_the_worst_slice() -> None:
    config = MonitorConfig(min_slice_events=5)
    items = [{"correct": True, "tenant": "a", "source": "app", "language": "en"}] * 20
    items += [{"correct": i % 4 == 0, "tenant": "b", "source": "app", "language": "en"} for i in range(20)]
    metrics = accuracy_metrics(items, config)
    by_slice = {(m.name, m.slice): m for m in metrics}
    assert by_slice[("quality.accuracy", None)].value == pytest.approx(0.625)
    assert (
        by_slice[("quality.accuracy", "tenant=b")].breached and not by_slice[("quality.accuracy", "tenant=a")].breached
    )
    gap = by_slice[("fairness.accuracy_gap.tenant", "tenant=b")]
    assert gap.value == pytest.approx(0.75) and gap.breached and gap.severity == "critical"
    assert ("fairness.accuracy_gap.source", "source=app") not in by_slice  # one slice: no gap


def response(request_id: str, label: str | None = None, total_ms: float = 20.0, tenant: str | None = None) -> dict:
    record = base_response(request_id, "c", "classify" if label else "search", "OK", tenant=tenant)
    record["label"] = label
    record["probabilities"] = {label: 0.8, "other": 0.2} if label else {}
    record["latency"].update(embed_ms=5.0, classify_ms=1.0, total_ms=total_ms)
    return record


def test_feedback_joins_responses_in_either_order_and_expires() -> None:
    clock = FakeClock()
    monitor = Monitor(
        MonitorConfig(window_events=4, min_slice_events=2, feedback_ttl_seconds=60), WordCounter(), clock=clock
    )
    outputs = monitor.on_feedback(feedback_record("r1", label="x", tenant="t"), 1)  # before its response
    outputs += monitor.on_response(response("r1", "x"), 2)
    outputs += monitor.on_response(response("r2", "x"), 3)
    outputs += monitor.on_feedback(feedback_record("r2", label="y"), 4)
    outputs += monitor.on_response(response("r3", "x"), 5)
    outputs += monitor.on_feedback(feedback_record("r3", rating=0.9), 6)
    outputs += monitor.on_feedback(feedback_record("r4", rating=1.0), 7)  # its response never comes
    clock.now = 61
    outputs += monitor.tick()
    snapshots = {record["stream"]: record for kind, record in outputs if kind == "snapshot"}
    accuracy = {(m["name"], m["slice"]): m["value"] for m in snapshots["feedback"]["metrics"]}
    assert accuracy[("quality.accuracy", None)] == pytest.approx(2 / 3)
    assert snapshots["feedback"]["events"] == 3 and snapshots["feedback"]["closed_by"] == "time"
    assert monitor.unmatched_feedback == 1
    latency = {m["name"]: m for m in snapshots["responses"]["metrics"]}
    assert latency["latency.total.p95"]["threshold"] == 1000.0
    assert latency["quality.confidence_mean"]["value"] == pytest.approx(0.8)
    assert latency["cost.compute_ms_per_request"]["value"] == pytest.approx(6.0)


def test_rebalance_and_stop_report_every_open_window_so_windows_add_up_to_the_records() -> None:
    monitor = Monitor(MonitorConfig(window_events=4), WordCounter(), clock=FakeClock())
    outputs = [out for i in range(6) for out in monitor.on_response(response(f"r{i}", "x"), i)]
    outputs += monitor.on_request({"text": "a question"}, 7)
    outputs += monitor.flush("rebalance")  # partitions revoked: what was counted is reported now
    assert monitor.flush("rebalance") == []  # nothing is reported twice
    outputs += monitor.on_response(response("r9", "x"), 9)
    outputs += monitor.flush()  # the worker stops
    snapshots = [record for kind, record in outputs if kind == "snapshot"]
    closed = [(s["stream"], s["events"], s["closed_by"], s["seq"]) for s in snapshots]
    assert closed == [
        ("responses", 4, "count", 1),
        ("requests", 1, "rebalance", 1),
        ("responses", 2, "rebalance", 2),
        ("responses", 1, "stop", 3),
    ]
    assert sum(s["events"] for s in snapshots if s["stream"] == "responses") == 7


def test_a_record_is_released_only_with_the_window_that_counted_it() -> None:
    clock = FakeClock()
    monitor = Monitor(MonitorConfig(window_events=3, window_seconds=10), WordCounter(), clock=clock)
    deleted = {"op": "DELETE", "vector": [], "text": ""}
    upsert = {"op": "UPSERT", "vector": [1.0, 0.0], "text": "a document"}
    assert monitor.on_embedding(deleted, 1, token="e0") == []
    assert monitor.take_released() == ["e0"]  # not windowed: released at once
    monitor.on_embedding(upsert, 2, token="e1")
    monitor.on_request({"text": "a question"}, 3, token="q1")
    monitor.on_embedding(upsert, 4, token="e2")
    assert monitor.take_released() == [] and monitor.holding == 3
    closed = monitor.on_embedding(upsert, 5, token="e3")  # closes the documents window by count
    assert [r["events"] for kind, r in closed if kind == "snapshot"] == [3]
    assert monitor.take_released() == ["e1", "e2", "e3"]  # in the same call as its snapshot
    monitor.on_feedback(feedback_record("r1", label="x"), 6, token="f1")  # waits for its response: released
    monitor.on_response(response("r1", "x"), 7, token="p1")  # judges f1 (no token left to hold)
    assert monitor.take_released() == ["f1"]
    clock.now = 20
    by_time = monitor.tick()
    assert {r["stream"] for kind, r in by_time if kind == "snapshot"} == {"requests", "responses", "feedback"}
    assert sorted(map(str, monitor.take_released())) == ["p1", "q1"]
    monitor.on_request({"text": "another"}, 8, token="q2")
    monitor.on_request({"text": "mine", "client_id": REFERENCE_CLIENT}, 9, token="q3")  # the monitor's own
    assert monitor.take_released() == ["q3"]
    monitor.flush("rebalance")
    assert monitor.take_released() == ["q2"] and monitor.holding == 0


def test_documents_window_drifts_and_alerts_once_with_named_method_and_threshold() -> None:
    rng = np.random.default_rng(0)

    def rows(n: int, shift: float) -> np.ndarray:
        x = rng.normal(size=(n, 8))
        x[:, 0] += shift
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    reference = with_reference_id(Reference("", "", {"documents": ReferenceSample(vectors=rows(300, 0.0))}), "test")
    config = MonitorConfig(window_events=30, min_drift_events=10, calibration_draws=300, alert_after=2)
    monitor = Monitor(config, WordCounter(), reference, cpu_clock=lambda: 1.0)
    outputs = []
    for shift in (0.0, 0.0, 3.0, 3.0, 3.0):
        for vector in rows(30, shift):
            record = {"op": "UPSERT", "vector": vector.tolist(), "text": "plain words here"}
            outputs += monitor.on_embedding(record, 1)
    alerts = [r for kind, r in outputs if kind == "alert"]
    mmd_alerts = [a for a in alerts if a["metric"] == "drift.embedding.mmd"]
    assert len(mmd_alerts) == 1 and mmd_alerts[0]["window_id"] == "documents:4"
    assert mmd_alerts[0]["severity"] == "warning" and "set-reference" in mmd_alerts[0]["hint"]
    first = next(r for kind, r in outputs if kind == "snapshot")
    mmd = next(m for m in first["metrics"] if m["name"] == "drift.embedding.mmd")
    assert mmd["threshold"] > 0 and "median-heuristic" in mmd["method"] and not mmd["breached"]
    assert first["reference_id"] == reference.reference_id
    codec = AvroCodec(EmbeddedRegistry.from_directory())
    last = [r for kind, r in outputs if kind == "snapshot"][-1]
    assert codec.decode(codec.encode("MetricSnapshot", last, "t"), "MetricSnapshot") == last
    shifted = next(m for m in last["metrics"] if m["name"] == "drift.embedding.mmd")
    assert shifted["breached"] and shifted["p_value"] == pytest.approx(1 / (config.calibration_draws + 1))
    assert 0.01 < mmd["p_value"] <= 1.0  # a window like the reference is not improbable under the null


def test_novel_chunks_alert_on_their_first_window_and_the_mmd_on_its_second() -> None:
    rng = np.random.default_rng(1)

    def rows(n: int, novel: float) -> np.ndarray:
        x = rng.normal(size=(n, 8))
        x[: int(n * (1 - novel)), 4:] = 0.0  # the reference's rows live in the first four dimensions
        x[int(n * (1 - novel)) :, :4] = 0.0  # novel rows in the last four, where it has none
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    reference = with_reference_id(Reference("", "", {"documents": ReferenceSample(vectors=rows(300, 0.0))}), "test")
    config = MonitorConfig(window_events=30, min_drift_events=10, calibration_draws=300, alert_after=2)
    monitor = Monitor(config, WordCounter(), reference, cpu_clock=lambda: 1.0)
    outputs = []
    for novel in (0.0, 0.0, 0.5, 0.5):
        for vector in rows(30, novel):
            outputs += monitor.on_embedding({"op": "UPSERT", "vector": vector.tolist(), "text": "plain words"}, 1)
    fired = [(a["metric"], a["window_id"]) for kind, a in outputs if kind == "alert" and a["state"] == "FIRING"]
    assert ("drift.embedding.novel_share", "documents:3") in fired
    assert ("drift.embedding.mmd", "documents:3") not in fired  # the monitor's alert_after (2) for the others
    assert not [f for f in fired if f[1] in ("documents:1", "documents:2")]


def test_snapshots_alerts_feedback_and_references_fit_their_avro_schemas() -> None:
    codec = AvroCodec(EmbeddedRegistry.from_directory())
    monitor = Monitor(MonitorConfig(window_events=2, min_slice_events=1, alert_after=1), WordCounter())
    outputs = []
    for i in range(4):
        outputs += monitor.on_response(response(f"r{i}", "x", tenant="t"), i)
        outputs += monitor.on_feedback(feedback_record(f"r{i}", label="y", tenant="t"), i)
    for kind, record in outputs:
        name = "MetricSnapshot" if kind == "snapshot" else "Alert"
        assert codec.decode(codec.encode(name, record, "t"), name) == record
    assert any(kind == "alert" for kind, _ in outputs)
    feedback = feedback_record("r1", rating=0.5, language="en")
    assert decode_feedback(codec.encode("Feedback", feedback, "feedback"), codec) == feedback
    assert decode_feedback(b'{"request_id": "r9", "label": "x"}', codec)["label"] == "x"
    for bad in ({**feedback, "tenant": "t" * 300}, {**feedback, "tenant": "two words"}):  # JSON and Avro alike
        for value in (json.dumps(bad).encode(), codec.encode("Feedback", bad, "feedback")):
            with pytest.raises(BadFeedback) as caught:
                decode_feedback(value, codec)
            assert caught.value.reason == "INVALID_TENANT"
    with pytest.raises(BadFeedback, match="WRONG_TYPE"):
        decode_feedback(b'{"request_id": "r9"}', codec)
    sample = ReferenceSample(
        vectors=np.eye(3),
        numeric={"f": np.arange(3.0)},
        categorical={"l": ["a", "b", "a"]},
        groups=[0, 0, 1],
        drawn_from=9,
    )
    reference = with_reference_id(Reference("", "", {"documents": sample}, 5), "d")
    record = codec.decode(codec.encode("MonitorReference", reference_to_avro(reference), "r"), "MonitorReference")
    back = reference_from_avro(record)
    assert back.reference_id == reference.reference_id and back.samples["documents"].categorical == {
        "l": ["a", "b", "a"]
    }
    np.testing.assert_allclose(back.samples["documents"].vectors, np.eye(3))
    assert back.samples["documents"].groups == [0, 0, 1] and back.samples["documents"].drawn_from == 9
    ungrouped = with_reference_id(Reference("", "", {"documents": replace(sample, groups=None)}, 5), "d")
    assert ungrouped.reference_id != reference.reference_id  # the blocks change the null, so the id
    whole = with_reference_id(Reference("", "", {"documents": replace(sample, drawn_from=0)}, 5), "d")
    assert whole.reference_id != reference.reference_id  # and so does the share of each block


def test_a_stratified_reference_takes_whole_items_from_every_block_in_proportion() -> None:
    # blocks (packages) of items (documents) with 1-3 rows (chunks) each, in publication order
    blocks = [[[f"b{b}d{d}c{c}" for c in range(1 + (b + d) % 3)] for d in range(4 * (b + 1))] for b in range(5)]
    total = sum(len(item) for block in blocks for item in block)
    rows, groups, drawn_from = stratified_blocks(blocks, 30, seed=1, expand=lambda item: item)
    assert drawn_from == total and len(rows) == len(groups) == 30
    assert sorted(set(groups)) == [0, 1, 2, 3, 4] and groups == sorted(groups)  # every block, in order
    for block, rows_of_block in enumerate([[r for r, g in zip(rows, groups, strict=True) if g == b] for b in range(5)]):
        in_block = sum(len(item) for item in blocks[block])
        assert abs(len(rows_of_block) - 30 * in_block / total) < 1  # its share of the 30 rows
        assert all(row.startswith(f"b{block}d") for row in rows_of_block)
        flat = [row for item in blocks[block] for row in item]
        positions = [flat.index(row) for row in rows_of_block]
        assert positions == sorted(positions)  # publication order
        items = [row.split("c")[0] for row in rows_of_block]
        for item in set(items[:-1]) - {items[-1]}:  # whole documents, but for the last one cut to fit
            assert items.count(item) == len(next(i for i in blocks[block] if i[0].startswith(item + "c")))
    everything, _, _ = stratified_blocks(blocks, 10_000, expand=lambda item: item)
    assert len(everything) == total


def test_outputs_are_exported_as_opentelemetry_metrics() -> None:
    reader = InMemoryMetricReader()
    exporter = OtelMonitorExporter(MeterProvider(metric_readers=[reader]).get_meter("test"))
    monitor = Monitor(
        MonitorConfig(window_events=2, min_slice_events=1, alert_after=1), WordCounter(), on_outputs=exporter.export
    )
    for i in range(2):
        monitor.on_response(response(f"r{i}", "x"), i)
        monitor.on_feedback(feedback_record(f"r{i}", label="y"), i)
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        (metric.name, point.attributes.get("metric"), point.attributes.get("state")): point.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in metric.data.data_points
    }
    assert points[("llmops.monitor.value", "quality.accuracy", None)] == 0.0
    assert points[("llmops.monitor.alerts", "quality.accuracy", "FIRING")] == 1
    assert points[("llmops.monitor.alerts_firing", "quality.accuracy", None)] == 1


def test_open_alerts_and_the_report_show_history(tmp_path: Path) -> None:
    monitor = Monitor(MonitorConfig(window_events=2, min_slice_events=1, alert_after=1), WordCounter())
    outputs = []
    for i in range(6):
        outputs += monitor.on_response(response(f"r{i}", "x"), i * 1000)
        outputs += monitor.on_feedback(feedback_record(f"r{i}", label="y" if i < 4 else "x"), i * 1000)
    snapshots = [r for kind, r in outputs if kind == "snapshot"]
    alerts = [r for kind, r in outputs if kind == "alert"]
    assert {a["state"] for a in alerts} == {"FIRING"} and len(open_alerts(alerts)) == len(alerts)
    write_report(tmp_path / "r.png", snapshots, alerts)
    write_report(tmp_path / "r.html", snapshots, alerts)
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert "quality.accuracy" in (tmp_path / "r.html").read_text()


def test_thresholds_are_calibrated_on_a_small_grid_of_window_sizes() -> None:
    from streams.monitor.detectors import calibration_sizes

    config = MonitorConfig(window_events=200, min_drift_events=20, calibration_draws=100)
    assert calibration_sizes(config) == [20, 25, 50, 100, 200]
    sample = ReferenceSample(numeric={"x": np.arange(300.0)})
    reference = Reference("r", "", {"documents": sample})
    assert reference.thresholds("documents", 19, config) is None
    assert reference.thresholds("documents", 140, config).n == 100  # type: ignore[union-attr]
    reference.calibrate_all(config)
    assert sorted(n for _, n in reference._thresholds) == [20, 25, 50, 100, 200]
