"""Garbage collection in a long-running worker: start-up objects frozen, long pauses logged.

Why this exists:
    A full (generation 2) collection holds the GIL while it walks every tracked object. In a
    worker with the Faust app, the ONNX embedder and Milvus Lite loaded, one took about 110 ms of
    CPU (0.5-1.7 s of wall time on a busy 2-core machine): every agent, the embedder threads
    between runs and Milvus Lite's server threads stand still meanwhile, and each chunk in
    flight gets that much staler. Objects that live as long as the process (modules, the model,
    clients) never become garbage, so they are moved out of the collector's sight once they
    exist (``gc.freeze``); later collections walk only what the stream allocated since.
    Young collections run every 10,000 net allocations instead of 700: a batch allocates far
    more than 700 short-lived objects, and the ingest stage spent 6% of its CPU in the collector
    with the default (1.7% frozen and with this threshold; 2,000 stdlib documents, in process).

Usage:
    >>> freeze_startup_objects()          # after the app, its agents and models are loaded
    >>> watch_collections(log_over_s=0.1) # one warning per collection longer than 100 ms
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from streams.logs import get_logger

log = get_logger(__name__)
YOUNG_COLLECTION_THRESHOLD = 10_000  # net allocations between young collections (CPython's default: 700)


def freeze_startup_objects() -> int:
    """Collect start-up garbage, exempt the survivors from later collections, collect young objects less often.

    Returns:
        How many objects are frozen now. Calling it again (after more long-lived objects were
        created, e.g. a store opened) freezes those too.
    """
    gc.collect()
    gc.freeze()
    young, older, oldest = gc.get_threshold()
    gc.set_threshold(max(YOUNG_COLLECTION_THRESHOLD, young), older, oldest)
    return gc.get_freeze_count()


def watch_collections(
    log_over_s: float = 0.1, clock: Callable[[], float] = time.perf_counter
) -> Callable[[str, dict[str, Any]], None]:
    """Log a warning for every garbage collection that pauses the process longer than ``log_over_s``.

    Returns the callback (installed in ``gc.callbacks``) so that a caller can remove it.
    """
    started = [0.0]

    def on_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = clock()
            return
        seconds = clock() - started[0]
        if seconds >= log_over_s:
            log.warning(
                "gc_pause",
                generation=info.get("generation"),
                seconds=round(seconds, 3),
                collected=info.get("collected"),
            )

    gc.callbacks.append(on_collection)
    return on_collection
