"""A worker started while its broker is down: it retries with backoff and clear log lines, and works
once the broker comes up; one that waits past LLMOPS_BROKER_WAIT_SECONDS exits 69 saying what to do."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator

import pytest

from streams.kafka.broker import BrokerError, EmbeddedKafka
from streams.kafka.broker_wait import EXIT_BROKER_UNREACHABLE
from streams.settings import Settings

from ..conftest import ROOT, WorkerProcess, run_cli, wait_for
from .helpers import (
    account_raw,
    fault_port,
    pipeline_worker,
    publish,
    records_of,
    report,
    snapshot,
    unique_documents,
    wait_pipeline,
)

DOCUMENTS = 40


@pytest.fixture
def stopped_broker() -> Iterator[EmbeddedKafka]:
    """A broker of this test's own (port ``LLMOPS_TEST_KAFKA_PORT - 12``) on empty storage, not started."""
    broker = EmbeddedKafka(ROOT / ".llmops" / "kafka", port=fault_port(12), heap="384m")
    broker.stop()
    shutil.rmtree(broker.storage_dir, ignore_errors=True)
    yield broker
    broker.stop()
    shutil.rmtree(broker.storage_dir, ignore_errors=True)


def log_events(worker: WorkerProcess, name: str) -> list[dict[str, object]]:
    events = []
    for line in worker.log.read_text(errors="replace").splitlines() if worker.log.exists() else []:
        if line.startswith("{") and f'"{name}"' in line:
            event = json.loads(line)
            if event.get("event") == name:
                events.append(event)
    return events


def test_a_worker_started_before_its_broker_waits_for_it_and_then_processes(
    settings: Settings, stopped_broker: EmbeddedKafka
) -> None:
    settings = settings.model_copy(update={"bootstrap_servers": stopped_broker.bootstrap})
    worker = pipeline_worker(settings).start()
    try:
        assert wait_for(lambda: len(log_events(worker, "broker_unreachable")) >= 3, 120.0), worker.log_tail()
        assert worker.alive(), worker.log_tail()
        retries_while_down = len(log_events(worker, "broker_unreachable"))
        started = time.monotonic()
        try:
            stopped_broker.start(timeout=180)
        except BrokerError as error:
            pytest.fail(f"the test broker did not start:\n{error}")
        broker_start_s = time.monotonic() - started
        assert wait_for(lambda: bool(log_events(worker, "broker_reachable")), 120.0), worker.log_tail()
        (reachable,) = log_events(worker, "broker_reachable")
        publish(settings, records_of(unique_documents(DOCUMENTS, offset=1200)))
        wait_pipeline(settings, worker, timeout=300)
        assert worker.alive(), worker.log_tail()
    finally:
        code = worker.stop()
    assert code == 0, worker.log_tail()

    retries = log_events(worker, "broker_unreachable")
    first = retries[0]
    assert first["bootstrap_servers"] == stopped_broker.bootstrap
    assert "ConnectionRefusedError" in str(first["error"]) and "LLMOPS_BOOTSTRAP_SERVERS" in str(first["hint"])
    delays = [float(str(event["retry_in_s"])) for event in retries]
    assert delays == sorted(delays), delays  # backoff never shortens
    summary = account_raw(settings)
    assert summary["accounted"] and summary["published"] == DOCUMENTS, summary
    index = snapshot(settings)
    assert {doc_id for doc_id, _, _ in index.rows.values()} == {doc["id"] for doc in unique_documents(DOCUMENTS, 1200)}
    report(
        "worker started while the broker is down",
        retries_logged=len(retries),
        retries_before_broker_start=retries_while_down,
        retry_delays_s=delays,
        broker_start_s=round(broker_start_s, 1),
        worker_waited_s=reachable["waited_s"],
        attempts=reachable["attempts"],
        documents=DOCUMENTS,
        chunks_indexed=len(index.rows),
        worker_exit_code=code,
    )


def test_a_worker_that_waits_past_its_limit_exits_69_saying_what_to_check(
    settings: Settings, stopped_broker: EmbeddedKafka
) -> None:
    settings = settings.model_copy(update={"bootstrap_servers": stopped_broker.bootstrap, "broker_wait_seconds": 4.0})
    started = time.monotonic()
    result = run_cli(settings, "worker", "--agents", "ingest")
    elapsed = time.monotonic() - started
    assert result.returncode == EXIT_BROKER_UNREACHABLE, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith(f"Error: no Kafka broker answered at {stopped_broker.bootstrap}"), message
    assert "llmops kafka status" in message and "LLMOPS_BROKER_WAIT_SECONDS (4)" in message
    report(
        "worker gives up on a broker that stays down",
        broker_wait_seconds=4.0,
        exit_code=result.returncode,
        seconds_to_exit=round(elapsed, 1),
        message=message,
    )
