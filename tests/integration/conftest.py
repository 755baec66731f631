"""Integration fixtures: one real Kafka broker per test run, a unique namespace per test.

The broker is the embedded Apache Kafka (KRaft) that `llmops kafka start` runs, on its own
port and with fresh storage. If it cannot start, every integration test fails (never skips):
a CI run without a broker must not look green.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams.ingest.publish import publish_records
from streams.kafka.admin import ensure_topics, offsets
from streams.kafka.broker import BrokerError, EmbeddedKafka
from streams.kafka.progress import wait_for_stages
from streams.kafka.topics import Topics
from streams.models.classifier import stdlib_topic_dataset
from streams.models.lifecycle import evaluate_version, promote, train_and_register
from streams.models.registry import ModelVersion, Stage
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# Below the ephemeral port range (32768-60999 on Linux): a client socket can never hold the port
# while the broker restarts.
TEST_PORT = int(os.environ.get("LLMOPS_TEST_KAFKA_PORT", "29092"))
PIPELINE_AGENTS = ("embed", "index", "ingest")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def start_or_fail(start: Callable[[], str], what: str) -> str:
    """Start a real service for the tests, or fail them (never skip) saying why it did not start."""
    try:
        return start()
    except BrokerError as error:
        pytest.fail(f"{what} did not start, so integration tests cannot run:\n{error}")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    broker = EmbeddedKafka(ROOT / ".llmops" / "kafka", port=TEST_PORT, heap="512m")
    broker.stop()
    shutil.rmtree(broker.storage_dir, ignore_errors=True)
    yield start_or_fail(lambda: broker.start(timeout=180), "the real Kafka broker")
    broker.stop()


def isolated_settings(kafka_bootstrap: str, data_dir: Path, prefix: str = "t") -> Settings:
    """Settings of a namespace of its own (``prefix`` + random hex) on the test broker."""
    return Settings(
        bootstrap_servers=kafka_bootstrap,
        namespace=prefix + uuid.uuid4().hex[:12],
        data_dir=data_dir,
        models_dir=ROOT / ".llmops" / "models",  # built graphs are shared by every test
        partitions=3,
        ingest_batch_seconds=0.02,
    )


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return isolated_settings(kafka_bootstrap, tmp_path)


class WorkerProcess:
    """`llmops worker` in a subprocess, configured by environment like a deployed worker."""

    def __init__(self, settings: Settings, agents: str = "ingest") -> None:  # comma-separated agent groups
        self.settings = settings
        self.agents = agents
        self.log = settings.data_dir / f"worker-{agents}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.settings.to_env(), "LLMOPS_LOG_FORMAT": "json"}

    def start(self) -> WorkerProcess:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker", "--agents", self.agents],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env(),
                cwd=ROOT,
            )
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


@pytest.fixture
def worker(settings: Settings) -> Iterator[WorkerProcess]:
    process = WorkerProcess(settings)
    yield process
    process.stop()


def run_cli(
    settings: Settings, *args: str, timeout: float | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`llmops ARGS` in a subprocess configured by ``settings`` (and ``env`` over it), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        capture_output=True,
        text=True,
        env={**WorkerProcess(settings).env(), **(env or {})},
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def production_classifier(settings: Settings, name: str, classes: int) -> ModelVersion:
    """Train, register, evaluate and approve a head on a small stdlib subset."""
    data = stdlib_topic_dataset(classes=classes, per_class=30)
    version = run(train_and_register(settings, data, name, actor="test"))
    run(promote(settings, name, version.version, Stage.QA, actor="test"))
    evaluated = run(evaluate_version(settings, name, version.version, data, actor="test"))
    assert evaluated.qa_passed, evaluated.qa_report
    run(promote(settings, name, version.version, Stage.PRODUCTION, actor="test", approved_by="qa-lead"))
    return version


def final_chunks(clean: list[dict]) -> set[str]:
    """The chunk ids that decoded ``docs.clean`` records leave in the index, applied in topic order.

    A document that stepped down as a copy of a smaller id was upserted first and deleted later.
    """
    chunks: set[str] = set()
    for chunk in clean:
        if chunk["op"] == "UPSERT":
            chunks.add(chunk["chunk_id"])
        elif chunk["chunk_index"] < 0:
            chunks = {c for c in chunks if not c.startswith(f"{chunk['doc_id']}#")}
        else:
            chunks.discard(chunk["chunk_id"])
    return chunks


def run(coro):  # type: ignore[no-untyped-def]
    """Run a coroutine from a synchronous test."""
    return asyncio.run(coro)


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.5) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def index_with_worker(
    settings: Settings, records: list, agents: tuple[str, ...] = PIPELINE_AGENTS, timeout: float = 240.0
) -> WorkerProcess:
    """Start a worker running ``agents``, publish ``records`` and wait until every stage committed them.

    Returns the running worker (stop it when done); a worker that does not finish is stopped and fails the test.
    """
    worker = WorkerProcess(settings, agents=",".join(agents)).start()
    try:
        run(ensure_topics(settings))
        run(publish_records(settings, records))
        _, raw_end = run(offsets(settings, [Topics(settings.namespace).docs_raw]))
        ok, _ = wait_for_stages(settings, [agents], raw_end, timeout, alive=worker.alive)
        assert ok, f"the worker did not finish; log:\n{worker.log_tail()}"
    except BaseException:
        worker.stop()
        raise
    return worker


def run_pipeline(settings: Settings, records: list) -> None:
    """Publish, run a full worker until every stage committed, stop it (Milvus Lite has one owner).

    Records already on docs.raw count too: a test may publish its own way first and pass [].
    """
    worker = index_with_worker(settings, records)
    assert worker.stop() == 0, worker.log_tail()
