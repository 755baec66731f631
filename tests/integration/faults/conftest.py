"""Fault tests: real processes broken on purpose (kill -9, SIGTERM, broker restarts, garbage).

Every test here is marked ``faults`` (they take minutes, not seconds): ``make test`` leaves them
out and ``make test-faults`` (which ``.ci/run`` also runs) runs them. Each prints one
``FAULT {...}`` JSON line with what it survived; run with ``-s`` to see them.

Extra brokers take ports below ``LLMOPS_TEST_KAFKA_PORT`` (see :func:`fault_port`), so a run on
another port never collides with this one.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)
