"""Garbage-collection helpers of the worker: frozen start-up objects, long pauses logged."""

import gc
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from streams.heap import freeze_startup_objects, watch_collections


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_start_up_objects_are_frozen_out_of_full_collections() -> None:
    kept = [[i] for i in range(1000)]
    frozen = freeze_startup_objects()
    assert frozen >= len(kept)
    assert not any(item is kept for item in gc.get_objects(2))
    assert gc.get_threshold()[0] >= 10_000  # young collections less often than every 700 allocations


def test_only_collections_longer_than_the_limit_are_logged() -> None:
    ticks = iter([0.0, 0.05, 1.0, 1.3])
    callback = watch_collections(log_over_s=0.1, clock=lambda: next(ticks))
    try:
        with capture_logs() as logs:
            callback("start", {"generation": 2})
            callback("stop", {"generation": 2, "collected": 3})  # 50 ms: quiet
            callback("start", {"generation": 2})
            callback("stop", {"generation": 2, "collected": 4})  # 300 ms: logged
    finally:
        gc.callbacks.remove(callback)
    assert [(e["event"], e["generation"], e["seconds"]) for e in logs] == [("gc_pause", 2, 0.3)]
