"""/healthz, /readyz and /metrics of a real worker process, read with a real HTTP client.

The worker runs the document pipeline (ingest, embed, index: the real broker, ONNX embedder and
Milvus Lite). The scrape is parsed with prometheus_client's own parser, as Prometheus would.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.inference.client import InferenceClient
from streams.ingest.chunk import default_tokenizer
from streams.ingest.publish import encode_document, publish_records
from streams.kafka.admin import count_records, ensure_topics, offsets
from streams.kafka.progress import wait_for_stages
from streams.kafka.topics import Topics
from streams.monitor.reference import corpus_texts, sample_chunks
from streams.settings import Settings
from streams.telemetry.metrics import sample_names

from .conftest import PIPELINE_AGENTS, WorkerProcess, run, run_cli, wait_for
from .test_monitor_flow import chunk_embeddings, send_in_order

DOCS = [
    encode_document({"id": f"doc-{i}", "text": f"Document {i} explains how a worker reports its health to SREs."})
    for i in range(5)
]
BAD = (b"bad-json", b'{"id": "bad-json", ')  # dead-lettered by ingest as BAD_JSON


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of GET ``path``; an HTTP error status is a result too."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    status, content_type, text = get(port, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[tuple[WorkerProcess, int]]:
    port = free_port()
    worker = WorkerProcess(
        settings.model_copy(update={"sre_port": port, "sre_host": "127.0.0.1"}), ",".join(PIPELINE_AGENTS)
    )
    yield worker, port
    worker.stop()


def test_probes_and_metrics_of_a_real_worker(settings: Settings, pipeline: tuple[WorkerProcess, int]) -> None:
    worker, port = pipeline
    topics = Topics(settings.namespace)
    group = topics.app_id(*PIPELINE_AGENTS)
    run(ensure_topics(settings))
    worker.start()

    # Ready is observed only after not-ready: every /readyz answer is recorded until one is 200.
    answers: list[tuple[int, dict]] = []

    def ready() -> bool:
        try:
            status, content_type, body = get(port, "/readyz")
        except OSError:  # the server is not listening yet
            return False
        assert content_type == "application/json"
        answers.append((status, json.loads(body)))
        return status == 200

    assert wait_for(ready, timeout=240, interval=0.1), f"never ready: {answers[-1:]}\n{worker.log_tail()}"
    first_status, first_body = answers[0]
    assert first_status == 503, answers[:3]
    assert first_body["ready"] is False and first_body["not_ready"], first_body
    assert set(first_body["not_ready"]) <= {"broker", "consumer_group", "store", "models"}
    assert all(isinstance(reason, str) and reason for reason in first_body["not_ready"].values())
    assert answers[-1][1] == {"ready": True, "not_ready": {}, "checks": ["broker", "consumer_group", "models", "store"]}

    status, _, body = get(port, "/healthz")
    assert (status, json.loads(body)) == (200, {"live": True})
    assert get(port, "/nothing-here")[0] == 404

    run(publish_records(settings, [*DOCS, BAD]))
    _, raw_end = run(offsets(settings, [topics.docs_raw]))
    done, _ = wait_for_stages(settings, [PIPELINE_AGENTS], raw_end, 240.0, alive=worker.alive)
    assert done, worker.log_tail()
    counts = {c.topic: c.records for c in run(count_records(settings, [topics.docs_clean, topics.docs_embeddings]))}
    assert counts[topics.docs_clean] >= len(DOCS)

    def lag(samples: dict) -> dict[tuple[str, str], float]:
        return {
            (labels["topic"], labels["partition"]): value
            for (name, label_items), value in samples.items()
            if name == "llmops_consumer_lag" and (labels := dict(label_items))["group"] == group
        }

    # Lag is measured every 15 s: wait for a measurement taken after every stage committed.
    raw_partitions = {(topics.docs_raw, str(p)) for p in range(settings.partitions)}
    assert wait_for(
        lambda: (figures := lag(scrape(port))).keys() >= raw_partitions and not any(figures.values()),
        timeout=90,
    ), lag(scrape(port))
    samples = scrape(port)
    lags = lag(samples)
    for topic in (topics.docs_raw, topics.docs_clean, topics.docs_embeddings):
        assert {(topic, str(p)) for p in range(settings.partitions)} <= lags.keys()

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("llmops_records_processed_total", stage="ingest") == len(DOCS) + 1
    assert value("llmops_records_dead_lettered_total", stage="ingest", reason="BAD_JSON") == 1
    assert sum(v for (n, _), v in samples.items() if n == "llmops_records_dead_lettered_total") == 1
    assert value("llmops_records_processed_total", stage="embed") == counts[topics.docs_clean]
    assert value("llmops_records_processed_total", stage="index") == counts[topics.docs_embeddings]
    assert value("llmops_batch_seconds_count", stage="ingest") >= 1
    assert (
        value("llmops_batch_seconds_bucket", stage="embed", le="+Inf")
        == value("llmops_batch_seconds_count", stage="embed")
        >= 1
    )
    models = [dict(labels) for (name, labels), v in samples.items() if name == "llmops_model_active" and v == 1]
    assert len(models) == 1 and models[0]["agent"] == "embed" and len(models[0]["version"]) == 64, models
    assert value("llmops_worker_ready") == 1
    assert value("llmops_ready", check="store") == 1
    assert {name for name, _ in samples if name.startswith("llmops_")} <= sample_names()

    assert worker.stop() == 0, worker.log_tail()


def test_request_latency_models_and_drift_scores_of_an_infer_and_monitor_worker(settings: Settings) -> None:
    """Search requests through Kafka, and one window of documents against a stdlib drift reference."""
    window = 20
    settings = settings.model_copy(
        update={"monitor_window_events": window, "monitor_window_seconds": 600.0, "monitor_min_drift_events": window}
    )
    run(ensure_topics(settings))
    stored = run_cli(settings, "monitor", "set-reference", "--corpus", "stdlib", "--split", "reference", "--json")
    assert stored.returncode == 0, stored.stderr
    assert json.loads(stored.stdout)["thresholds"]["documents"]["embedding.mmd"] > 0
    port = free_port()
    worker = WorkerProcess(settings.model_copy(update={"sre_port": port, "sre_host": "127.0.0.1"}), "infer,monitor")
    worker.start()
    try:
        assert wait_for(lambda: get_or_none(port, "/readyz") == 200, timeout=240), worker.log_tail()
        _, _, body = get(port, "/readyz")
        assert json.loads(body)["checks"] == ["broker", "consumer_group", "models", "store"]

        questions = ["how do I read a file line by line", "parse command line arguments", "sort a list"]
        responses = run(ask(settings, questions))
        assert [r["status"] for r in responses] == ["OK"] * len(questions)
        chunks = sample_chunks(corpus_texts("holdout"), window, default_tokenizer(), settings, seed=3)
        run(
            send_in_order(
                settings, Topics(settings.namespace).docs_embeddings, chunk_embeddings(settings, chunks, "sre")
            )
        )

        def drift_measured() -> bool:
            return any(name == "llmops_drift_score" for name, _ in scrape(port))

        assert wait_for(drift_measured, timeout=120), worker.log_tail()
        group = Topics(settings.namespace).requests_group("infer", "monitor")
        assert wait_for(
            lambda: (
                {
                    dict(labels)["partition"]: v
                    for (name, labels), v in scrape(port).items()
                    if name == "llmops_consumer_lag" and dict(labels)["group"] == group
                }
                == {str(p): 0.0 for p in range(settings.partitions)}
            ),
            timeout=90,
        )
        samples = scrape(port)

        def value(name: str, **labels: str) -> float:
            return samples.get((name, tuple(sorted(labels.items()))), 0.0)

        assert value("llmops_request_seconds_count", task="search") == len(questions)
        assert value("llmops_records_processed_total", stage="infer") == len(questions)
        # The monitor read the requests, their responses and the window of documents.
        assert wait_for(
            lambda: (
                scrape(port).get(("llmops_records_processed_total", (("stage", "monitor"),)))
                == 2 * len(questions) + window
            ),
            timeout=60,
        )
        embedder = {
            dict(labels)["version"]
            for (name, labels), v in samples.items()
            if name == "llmops_model_active" and dict(labels)["agent"] == "infer" and v == 1
        }
        assert embedder and all(len(version) == 64 for version in embedder)
        mmd = (("detector", "embedding.mmd"), ("stream", "documents"))
        assert samples[("llmops_drift_threshold", mmd)] > 0
        # The unbiased MMD^2 estimate dips just below 0 when the window is like the reference.
        assert math.isfinite(samples[("llmops_drift_score", mmd)])
        assert samples[("llmops_drift_score", mmd)] < samples[("llmops_drift_threshold", mmd)]
    finally:
        assert worker.stop() == 0, worker.log_tail()


def get_or_none(port: int, path: str) -> int | None:
    try:
        return get(port, path)[0]
    except OSError:
        return None


async def ask(settings: Settings, questions: list[str]) -> list[dict]:
    async with InferenceClient(settings) as client:
        futures = [await client.send(client.request(text=text, task="search")) for text in questions]
        return list(await asyncio.wait_for(asyncio.gather(*futures), 120))
