"""Process-wide runtime choices: native allocators that give memory back, and the event loop.

Both must be made first thing in a process, before pyarrow or any event loop exists.

Native allocators (``llmops worker`` applies them from settings):
    Milvus Lite (inside the worker by default) builds one Arrow RecordBatch per upsert for its
    memtable and WAL. Arrow's default pool (mimalloc) kept the freed batches' memory: in a soak
    of updates to 2,000 ids, memray showed 1,074 MB of address space mapped for
    ``_build_wal_data_batch`` while Arrow's live allocations stayed at 2-17 MB, and the worker's
    RSS climbed 4.7 MB/min (+21.5% in 30 minutes). With Arrow on glibc malloc and glibc's mmap
    threshold fixed at 128 KiB (large buffers get their own mapping and go back to the kernel on
    free), the same 30-minute soak grew +5.2% (1.3 MB/min, a sawtooth under 420 MB).

Event loop (for clients of the inference topics):
    uvloop (libuv) runs callbacks and socket I/O in C. For a process that sends requests with
    :class:`streams.inference.client.InferenceClient` it lowered round trips by up to about 1 ms in most
    (not all) paired runs here. With the agent's request consumer on aiokafka it was what met
    the latency targets at every rate (bench runs 19-20); with the whole path on librdkafka the
    standard loop meets them too (runs 21-30). In the worker, whose time goes to the work itself,
    it made no measurable difference, so the worker keeps the standard loop (Faust's consumer
    fixes are tested on it).

Usage:
    >>> tune_native_allocators(131_072, "system")   # before pyarrow is imported
    {'malloc_mmap_threshold': 131072, 'arrow_memory_pool': 'system'}
    >>> use_event_loop("uvloop")                     # before the first event loop
    'uvloop'
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys
from typing import Final

M_MMAP_THRESHOLD = -3  # mallopt parameter number (glibc's malloc.h)
DEFAULT_MMAP_THRESHOLD = 131_072  # bytes: glibc's initial threshold, kept fixed instead of rising
DEFAULT_ARROW_POOL: Final = "system"


def allocator_env() -> dict[str, str]:
    """The default allocator choices as the environment variables glibc and pyarrow read at start.

    For a process this code does not start itself (``python -m milvus_lite server``).
    """
    return {"ARROW_DEFAULT_MEMORY_POOL": DEFAULT_ARROW_POOL, "MALLOC_MMAP_THRESHOLD_": str(DEFAULT_MMAP_THRESHOLD)}


def tune_native_allocators(mmap_threshold: int, arrow_pool: str) -> dict[str, object]:
    """Fix glibc's mmap threshold and choose Arrow's memory pool, unless the environment already does.

    ``MALLOC_MMAP_THRESHOLD_`` and ``ARROW_DEFAULT_MEMORY_POOL`` set by an operator win. Called
    before pyarrow is imported, the pool is chosen through the environment, exactly as if the
    operator had set it (after the import, ``pyarrow.set_memory_pool`` does the same).

    Args:
        mmap_threshold: Bytes from which glibc maps allocations on their own; 0 leaves glibc's
            adaptive threshold (which rises to 32 MiB as large blocks are freed) alone.
        arrow_pool: "system", "mimalloc" or "jemalloc"; "default" leaves pyarrow's choice alone.

    Returns:
        What is in effect, for the start-up log: ``malloc_mmap_threshold`` (bytes, or "env" /
        "glibc default" / "unavailable") and ``arrow_memory_pool``.
    """
    applied: dict[str, object] = {}
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        applied["malloc_mmap_threshold"] = "env"
    elif mmap_threshold <= 0:
        applied["malloc_mmap_threshold"] = "glibc default"
    else:
        done = _mallopt(M_MMAP_THRESHOLD, mmap_threshold)
        applied["malloc_mmap_threshold"] = mmap_threshold if done else "unavailable"
    if "ARROW_DEFAULT_MEMORY_POOL" in os.environ:
        applied["arrow_memory_pool"] = os.environ["ARROW_DEFAULT_MEMORY_POOL"] + " (env)"
    elif arrow_pool == "default":
        applied["arrow_memory_pool"] = "default"
    elif "pyarrow" in sys.modules:
        import pyarrow  # type: ignore[import-untyped]  # ships no type hints

        pool = getattr(pyarrow, f"{arrow_pool}_memory_pool")()
        pyarrow.set_memory_pool(pool)
        applied["arrow_memory_pool"] = pool.backend_name
    else:
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = arrow_pool  # read when pyarrow loads
        applied["arrow_memory_pool"] = arrow_pool
    return applied


def _mallopt(parameter: int, value: int) -> bool:
    """glibc's ``mallopt``; False where the C library has none (musl, macOS) or refuses the value."""
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        return bool(libc.mallopt(ctypes.c_int(parameter), ctypes.c_int(value)))
    except (OSError, AttributeError, TypeError):
        return False


def use_event_loop(name: str) -> str:
    """Make ``name`` ("uvloop" or "asyncio") the loop of every event loop created from now on.

    Returns the loop in effect: "asyncio" when uvloop was asked for but is not installed.
    """
    if name == "uvloop":
        try:
            import mode.loop

            mode.loop.use("uvloop")  # sets uvloop's policy, as Faust's own `--loop uvloop` does
        except ImportError:
            return "asyncio"
        return "uvloop"
    asyncio.set_event_loop_policy(None)
    return "asyncio"
