"""Fault tests: real processes broken on purpose (kill -9, SIGTERM, broker restarts, garbage).

Every test here is marked ``faults`` (they take minutes, not seconds): ``make test`` leaves them
out and ``make test-faults`` (which ``.ci/run`` also runs) runs them. Each prints one
``FAULT {...}`` JSON line with what it survived; run with ``-s`` to see them.

Extra brokers take ports below ``LLMOPS_TEST_KAFKA_PORT`` (see :func:`fault_port`), so a run on
another port never collides with this one.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from streams.kafka.broker import BrokerError, EmbeddedCluster, EmbeddedKafka

from ..conftest import ROOT
from .helpers import fault_port, fresh


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def own_broker() -> Iterator[EmbeddedKafka]:
    """A fresh single broker of this test's own (port ``LLMOPS_TEST_KAFKA_PORT - 12``), to break."""
    with fresh(EmbeddedKafka(ROOT / ".llmops" / "kafka", port=fault_port(12), heap="384m")) as broker:
        yield broker


@pytest.fixture
def cluster() -> Iterator[EmbeddedCluster]:
    """Three KRaft nodes (ports from ``LLMOPS_TEST_KAFKA_PORT - 6``), replication 3, min ISR 2."""
    nodes = EmbeddedCluster(ROOT / ".llmops" / "kafka", base_port=fault_port(6), heap="320m")
    nodes.stop()
    for storage in nodes.storage_dirs:
        shutil.rmtree(storage, ignore_errors=True)
    try:
        nodes.start(timeout=240)
    except BrokerError as error:
        pytest.fail(f"the three-node test cluster did not start:\n{error}")
    yield nodes
    nodes.stop()
    for storage in nodes.storage_dirs:
        shutil.rmtree(storage, ignore_errors=True)
