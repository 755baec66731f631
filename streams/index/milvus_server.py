"""A ``milvus-lite server`` process: the vector store apart from the workers.

Why this exists:
    Milvus Lite inside a worker shares its memory and lets only that process open the folder.
    As a server of its own (what ``LLMOPS_MILVUS_URI`` points at), index and infer workers in
    separate processes share one store, and the store can be watched and restarted apart. The
    soak bench and the store-down fault test run it this way.

Usage:
    >>> server = MilvusLiteServer(Path("/var/lib/llmops/milvus"), port=19530)
    >>> server.start()            # returns once the server answers
    >>> settings = settings.model_copy(update={"milvus_uri": server.uri})
    >>> server.stop()             # or kill(), to simulate a crash
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from streams.kafka.broker import port_open
from streams.runtime import allocator_env

START_TIMEOUT_S = 60.0


class MilvusLiteServer:
    """``python -m milvus_lite server`` on ``port``, on a data folder that outlives the process."""

    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        self.data_dir, self.port, self.host = data_dir, port, host
        self.log = data_dir.parent / f"{data_dir.name}-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Start the server; return once it answers a request (RuntimeError after a minute)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(self.data_dir)]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [*command, "--host", self.host, "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                # The worker's allocator choices, so that Milvus Lite's freed Arrow WAL batches go
                # back to the system here too; the same variables set by an operator win.
                env={**allocator_env(), **os.environ},
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the Milvus Lite server did not start on port {self.port}; see {self.log}")
            time.sleep(0.5)

    def _answers(self) -> bool:
        if not port_open(self.host, self.port):
            return False  # pymilvus would log every refused connection at length
        from pymilvus import MilvusClient

        try:
            MilvusClient(self.uri, timeout=2).list_collections()
        except Exception:  # noqa: BLE001 - not up yet
            return False
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: the store disappears as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
