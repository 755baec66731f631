"""The probes, the metrics exporter and its HTTP server (stdlib server on localhost, urllib client)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.settings import Settings
from streams.telemetry.endpoints import LIVENESS_STALE_S, EndpointServer, Probes
from streams.telemetry.metrics import (
    LAG,
    count_dead_letter,
    exposition,
    observe_monitor_outputs,
    request_seconds,
    sample_names,
    set_active_models,
    stage_metrics,
)


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition().decode())
        for s in family.samples
    }


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_readiness_names_each_failing_check_and_why() -> None:
    probes = Probes()
    store_open = []
    probes.add("store", lambda: None if store_open else "collection not open")
    probes.add("store", lambda: None)
    probes.add("models", lambda: None)

    def broken() -> str | None:
        raise RuntimeError("no metadata")

    probes.add("broker", broken)
    assert probes.readiness() == {
        "store": "collection not open",
        "models": None,
        "broker": "check failed: RuntimeError('no metadata')",
    }
    store_open.append(True)
    assert probes.readiness()["store"] is None


def test_liveness_fails_only_once_a_beating_loop_goes_silent() -> None:
    clock = Clock()
    probes = Probes(clock)
    assert probes.liveness() is None  # starting: the loop has not beaten yet
    probes.beat()
    clock.now += LIVENESS_STALE_S
    assert probes.liveness() is None
    clock.now += 1
    assert probes.liveness() == f"the event loop has not run for {LIVENESS_STALE_S + 1:.0f} s (limit 60 s)"
    probes.beat()
    assert probes.liveness() is None


@pytest.fixture
def server() -> Iterator[tuple[EndpointServer, list[bool]]]:
    probes = Probes()
    ready: list[bool] = []
    probes.add("consumer_group", lambda: None if ready else "group not joined")
    endpoints = EndpointServer(probes, "127.0.0.1", 0).start()
    yield endpoints, ready
    endpoints.close()


def test_the_server_answers_probes_and_metrics(server: tuple[EndpointServer, list[bool]]) -> None:
    endpoints, ready = server
    status, body = get(endpoints.port, "/readyz")
    assert (status, json.loads(body)) == (
        503,
        {"ready": False, "not_ready": {"consumer_group": "group not joined"}, "checks": ["consumer_group"]},
    )
    assert samples()[("llmops_worker_ready", ())] == 0
    assert samples()[("llmops_ready", (("check", "consumer_group"),))] == 0
    ready.append(True)
    assert get(endpoints.port, "/readyz") == (
        200,
        json.dumps({"ready": True, "not_ready": {}, "checks": ["consumer_group"]}),
    )
    assert samples()[("llmops_worker_ready", ())] == 1
    assert get(endpoints.port, "/healthz") == (200, '{"live": true}')
    status, text = get(endpoints.port, "/metrics?name[]=x")
    assert status == 200 and "llmops_worker_ready 1.0" in text
    assert get(endpoints.port, "/other")[0] == 404


def test_a_taken_port_is_an_os_error(server: tuple[EndpointServer, list[bool]]) -> None:
    with pytest.raises(OSError):
        EndpointServer(Probes(), "127.0.0.1", server[0].port).start()


def test_counters_histograms_and_lag_appear_in_the_scrape() -> None:
    before = samples()
    metrics = stage_metrics("unit-stage")
    assert stage_metrics("unit-stage") is metrics  # bound once
    metrics.processed.inc(3)
    metrics.batch_seconds.observe(0.02)
    count_dead_letter("unit-stage", "BAD_JSON")
    request_seconds("unit-task").observe(0.003)
    LAG.update("unit-group", {("t.docs.raw", 0): 4, ("t.docs.raw", 1): 0})
    after = samples()

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert grew("llmops_records_processed_total", stage="unit-stage") == 3
    assert grew("llmops_records_dead_lettered_total", stage="unit-stage", reason="BAD_JSON") == 1
    assert grew("llmops_batch_seconds_bucket", stage="unit-stage", le="0.025") == 1
    assert grew("llmops_batch_seconds_bucket", stage="unit-stage", le="0.01") == 0
    assert grew("llmops_request_seconds_count", task="unit-task") == 1
    assert after[("llmops_consumer_lag", (("group", "unit-group"), ("partition", "0"), ("topic", "t.docs.raw")))] == 4
    LAG.update("unit-group", {("t.docs.raw", 0): 0})
    lag = {k: v for k, v in samples().items() if k[0] == "llmops_consumer_lag" and ("group", "unit-group") in k[1]}
    assert list(lag.values()) == [0]  # partition 1 is gone: the group's figures are replaced whole
    assert {name for name, _ in after} <= sample_names()  # what rules and dashboards may name


def test_model_versions_dropped_leave_the_scrape() -> None:
    set_active_models("unit", [("stdlib-topic", "a" * 64), ("minilm", "b" * 64)])
    set_active_models("unit", [("stdlib-topic", "c" * 64), ("minilm", "b" * 64)])
    active = {
        dict(labels)["model"] + "@" + dict(labels)["version"][:1]
        for (name, labels), v in samples().items()
        if name == "llmops_model_active" and ("agent", "unit") in labels and v == 1
    }
    assert active == {"stdlib-topic@c", "minilm@b"}


def test_drift_statistics_of_snapshots_become_gauges() -> None:
    snapshot = {
        "stream": "unit-documents",
        "metrics": [
            {"name": "drift.embedding.mmd", "value": 0.31, "threshold": 0.12},
            {"name": "drift.length_chars.ks", "value": 0.05, "threshold": None},
            {"name": "documents.per_second", "value": 40.0, "threshold": None},
        ],
    }
    observe_monitor_outputs([("snapshot", snapshot), ("alert", {"metric": "drift.embedding.mmd"})])
    scraped = samples()
    key = (("detector", "embedding.mmd"), ("stream", "unit-documents"))
    assert scraped[("llmops_drift_score", key)] == pytest.approx(0.31)
    assert scraped[("llmops_drift_threshold", key)] == pytest.approx(0.12)
    assert scraped[("llmops_drift_score", (("detector", "length_chars.ks"), ("stream", "unit-documents")))] == 0.05
    assert ("llmops_drift_threshold", (("detector", "length_chars.ks"), ("stream", "unit-documents"))) not in scraped
    assert not any(labels and ("detector", "documents.per_second") in labels for _, labels in scraped)


class App:
    """Stands in for a Faust app: serve_endpoints only needs a key for its probes."""


def test_the_worker_runs_on_without_endpoints_when_the_port_is_off_or_taken(
    server: tuple[EndpointServer, list[bool]],
) -> None:
    from structlog.testing import capture_logs

    from agents.sre import serve_endpoints

    loop = asyncio.new_event_loop()
    try:
        assert serve_endpoints(App(), Settings(sre_port=0), loop) is None
        with capture_logs() as logs:
            taken = Settings(sre_port=server[0].port, sre_host="127.0.0.1")
            assert serve_endpoints(App(), taken, loop) is None
    finally:
        loop.close()
    (line,) = [line for line in logs if line["event"] == "sre_endpoints_unavailable"]
    assert line["port"] == server[0].port and "LLMOPS_SRE_PORT" in line["fix"]
