"""The worker's runtime choices: native allocators that give memory back, and the event loop.

Each case runs in a fresh interpreter: both choices are process-wide and must come first.
"""

import json
import os
import subprocess
import sys

ALLOCATOR_PROBE = """
import ctypes, json, sys
from streams.runtime import tune_native_allocators

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                     "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = MallInfo2
applied = tune_native_allocators(int(sys.argv[1]), sys.argv[2])
libc.free(libc.malloc(4 << 20))  # freeing a mapped 4 MiB block raises glibc's adaptive threshold past 1 MiB
before = libc.mallinfo2().hblks
block = libc.malloc(1 << 20)
mapped = libc.mallinfo2().hblks - before
libc.free(block)
import pyarrow
print(json.dumps({"applied": applied, "mapped_blocks": mapped, "arrow": pyarrow.default_memory_pool().backend_name}))
"""

LOOP_PROBE = """
import asyncio, json, sys, threading
from streams.runtime import use_event_loop

chosen = use_event_loop(sys.argv[1])
main = type(asyncio.new_event_loop()).__module__
in_thread = []
thread = threading.Thread(target=lambda: in_thread.append(type(asyncio.new_event_loop()).__module__))
thread.start(); thread.join()
print(json.dumps({"chosen": chosen, "main": main, "thread": in_thread[0]}))
"""


def _probe(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "ARROW_DEFAULT_MEMORY_POOL")}
    result = subprocess.run(
        [sys.executable, "-c", script, *args], env={**clean, **(env or {})}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_fixed_mmap_threshold_maps_large_blocks_and_arrow_uses_the_chosen_pool() -> None:
    tuned = _probe(ALLOCATOR_PROBE, "131072", "system")
    assert tuned["applied"] == {"malloc_mmap_threshold": 131072, "arrow_memory_pool": "system"}
    assert tuned["mapped_blocks"] == 1  # the 1 MiB block has its own mapping, returned to the kernel on free
    assert tuned["arrow"] == "system"

    adaptive = _probe(ALLOCATOR_PROBE, "0", "default")  # glibc's own behaviour: the block sits in the heap
    assert adaptive["applied"] == {"malloc_mmap_threshold": "glibc default", "arrow_memory_pool": "default"}
    assert adaptive["mapped_blocks"] == 0
    assert adaptive["arrow"] == "mimalloc"


def test_the_operators_environment_wins() -> None:
    chosen = _probe(
        ALLOCATOR_PROBE,
        "131072",
        "system",
        env={"MALLOC_MMAP_THRESHOLD_": "8388608", "ARROW_DEFAULT_MEMORY_POOL": "jemalloc"},
    )
    assert chosen["applied"] == {"malloc_mmap_threshold": "env", "arrow_memory_pool": "jemalloc (env)"}
    assert chosen["mapped_blocks"] == 0  # 8 MiB threshold: the 1 MiB block is not mapped
    assert chosen["arrow"] == "jemalloc"


def test_uvloop_runs_every_loop_created_afterwards_also_in_threads() -> None:
    assert _probe(LOOP_PROBE, "uvloop") == {"chosen": "uvloop", "main": "uvloop", "thread": "uvloop"}
    standard = "asyncio.unix_events"
    assert _probe(LOOP_PROBE, "asyncio") == {"chosen": "asyncio", "main": standard, "thread": standard}
