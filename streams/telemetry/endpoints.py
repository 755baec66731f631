"""``/healthz``, ``/readyz`` and ``/metrics`` of a worker, on ``LLMOPS_SRE_PORT``.

Why this exists:
    Kubernetes probes a worker for liveness and readiness, and Prometheus scrapes it. Faust's
    own web server is off in our workers (``web_enabled=False``), and it would start only after
    table recovery, inside the event loop it should be judging. This server runs in a daemon
    thread of its own (the standard library's ``ThreadingHTTPServer``): it answers from the first
    second of the process, reports ``503`` on ``/readyz`` while the worker is starting, and can
    say that the event loop is stuck, because it does not run in it. It costs the data path
    nothing: the loop only moves a heartbeat timestamp once a second.

Usage:
    >>> probes = Probes()
    >>> probes.add("store", lambda: None if store_open else "Milvus collection not open yet")
    >>> server = EndpointServer(probes, host="0.0.0.0", port=9188).start(loop)   # noqa: S104
    >>> server.close()

Notes:
    A readiness check returns None when ready, else why not (a short sentence naming what to
    check). ``/readyz`` answers 200 ``{"ready": true, ...}`` or 503 with ``not_ready`` naming
    each failing check. ``/healthz`` answers 503 once the event loop has missed its heartbeat for
    ``LIVENESS_STALE_S`` seconds (a loop that never started beating yet is starting: 200).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from streams.logs import get_logger
from streams.telemetry.metrics import REGISTRY, Readiness, exposition

log = get_logger(__name__)
HEARTBEAT_S = 1.0
# Embedding, Milvus writes and calibration run in threads; nothing should hold the loop this long.
LIVENESS_STALE_S = 60.0

Check = Callable[[], str | None]


class Probes:
    """Named readiness checks and the event loop's heartbeat."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._checks: dict[str, list[Check]] = {}
        self._clock = clock
        self._beat: float | None = None

    def add(self, name: str, check: Check) -> None:
        """Add a check under ``name`` (several checks may share a name: all must pass)."""
        self._checks.setdefault(name, []).append(check)

    def readiness(self) -> dict[str, str | None]:
        """Each check's name and None (ready) or why it is not ready."""
        results: dict[str, str | None] = {}
        for name, checks in self._checks.items():
            problems = []
            for check in checks:
                try:
                    problem = check()
                except Exception as error:  # noqa: BLE001 - a failing check means not ready, and why
                    problem = f"check failed: {error!r}"
                if problem:
                    problems.append(problem)
            results[name] = "; ".join(problems) or None
        return results

    def beat(self) -> None:
        """Called from the event loop: it is responsive now."""
        self._beat = self._clock()

    def liveness(self) -> str | None:
        """None while the loop beats (or has not started yet), else why the process is not live."""
        if self._beat is None:
            return None
        silent = self._clock() - self._beat
        if silent > LIVENESS_STALE_S:
            return f"the event loop has not run for {silent:.0f} s (limit {LIVENESS_STALE_S:.0f} s)"
        return None

    def start_heartbeat(self, loop: asyncio.AbstractEventLoop) -> None:
        """Beat every ``HEARTBEAT_S`` in ``loop`` (a timer callback: no task, no allocation per beat)."""

        def beat() -> None:
            self.beat()
            loop.call_later(HEARTBEAT_S, beat)

        loop.call_soon_threadsafe(beat)


class EndpointServer:
    """The HTTP server of the probes and the metrics, in a daemon thread."""

    def __init__(self, probes: Probes, host: str, port: int) -> None:
        self.probes = probes
        self.host, self.port = host, port
        self._server: ThreadingHTTPServer | None = None
        self._collector = Readiness(probes.readiness)

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> EndpointServer:
        """Bind and serve (raises ``OSError`` when the port is taken); beat in ``loop`` if given."""
        self._server = ThreadingHTTPServer((self.host, self.port), _handler(self.probes))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        REGISTRY.register(self._collector)
        threading.Thread(target=self._server.serve_forever, name="sre-endpoints", daemon=True).start()
        if loop is not None:
            self.probes.start_heartbeat(loop)
        log.info("sre_endpoints", host=self.host, port=self.port, paths=["/healthz", "/readyz", "/metrics"])
        return self

    def close(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        REGISTRY.unregister(self._collector)
        self._server = None


def _handler(probes: Probes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(HTTPStatus.OK, exposition(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                problem = probes.liveness()
                body = {"live": problem is None, **({"problem": problem} if problem else {})}
                self._json(HTTPStatus.OK if problem is None else HTTPStatus.SERVICE_UNAVAILABLE, body)
            elif path == "/readyz":
                checks = probes.readiness()
                not_ready = {name: problem for name, problem in checks.items() if problem}
                body = {"ready": not not_ready, "not_ready": not_ready, "checks": sorted(checks)}
                self._json(HTTPStatus.SERVICE_UNAVAILABLE if not_ready else HTTPStatus.OK, body)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found", "paths": ["/healthz", "/readyz", "/metrics"]})

        def _json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Probes arrive every few seconds: no access log line for each."""

    return Handler
