"""Running ``llmops worker`` as a child process, for the demo, replay, tests and benches.

Why this exists:
    Milvus Lite lets one process own its folder, and a crash must not take the caller down, so
    whoever needs a worker runs it as a child process with the caller's settings in its
    environment and JSON logs in a file, and stops it with SIGTERM (a clean Faust shutdown that
    commits what it finished) before falling back to SIGKILL.

Usage:
    >>> worker = start_worker(settings, Path("worker.log"), ("ingest", "embed", "index"))
    >>> ...
    >>> stop_worker(worker)   # the exit code
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from streams.settings import Settings

ALL_AGENTS = ("ingest", "embed", "index", "infer", "monitor")


def start_worker(settings: Settings, log_path: Path, agents: Sequence[str] = ALL_AGENTS) -> subprocess.Popen[bytes]:
    """Start ``python -m streams.cli worker --agents ...`` with ``settings`` in its environment."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings.to_env(), "LLMOPS_LOG_FORMAT": "json"}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--agents", ",".join(agents)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )


def stop_worker(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
