"""A real schema registry on loopback, speaking the Confluent REST API, for tests and local runs.

Why this exists:
    The Avro path must work against a registry as deployed (Confluent Schema Registry, Apicurio,
    Karapace...), not against a mock of its HTTP API. Apicurio Registry's app distribution is on
    Maven Central (``infra/registry/pom.xml``) and runs on the Java 17 that the embedded broker
    already needs; its Confluent-compatible API lives under ``/apis/ccompat/v7``. Storage is
    in-memory (H2): every start is an empty registry.

Usage:
    >>> server = EmbeddedSchemaRegistry(Path(".llmops/registry"), port=29493)
    >>> server.start()            # resolves the app once, then about 30-60 s to answer
    'http://127.0.0.1:29493/apis/ccompat/v7'
    >>> server.requests("/schemas/ids/7")   # access-log lines for a path: HTTP calls made
    0
    >>> server.stop()

Notes:
    Apicurio 3.0.x is the newest line built for Java 17 (3.1 and later need Java 21).
    ``LLMOPS_SCHEMA_REGISTRY_URL`` set to :attr:`url` points every process at it.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from streams.kafka.broker import BrokerError, _pid_alive, copy_maven_dependencies, port_open, terminate

POM = Path(__file__).resolve().parents[2] / "infra" / "registry" / "pom.xml"
API_PATH = "/apis/ccompat/v7"
# Startup over throughput: C1 only and a serial collector start the Quarkus app about twice as
# fast on 2 busy cores, and a test registry serves a few hundred requests.
JVM_OPTIONS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")


class EmbeddedSchemaRegistry:
    """One Apicurio Registry process on loopback, with in-memory storage."""

    def __init__(self, home: Path, port: int, heap: str = "256m", host: str = "127.0.0.1") -> None:
        self.home = home
        self.port = port
        self.heap = heap
        self.host = host
        self.log_file = home / f"registry-{port}.log"
        self.pid_file = home / f"registry-{port}.pid"

    @property
    def url(self) -> str:
        """The Confluent-compatible API's base URL (what ``LLMOPS_SCHEMA_REGISTRY_URL`` takes)."""
        return f"http://{self.host}:{self.port}{API_PATH}"

    def resolve(self, progress: Callable[[str], None] = lambda _: None) -> Path:
        """Fetch and unpack the app from Maven Central (once per pom version); return its runner jar."""
        app = self.home / "app"
        stamp = app / ".pom-sha256"
        wanted = hashlib.sha256(POM.read_bytes()).hexdigest()
        if not (stamp.exists() and stamp.read_text() == wanted):
            progress("resolving Apicurio Registry from Maven Central (first run only)...")
            dist = self.home / "dist"
            copy_maven_dependencies(POM, dist, "Apicurio Registry", goal="dependency:copy")
            shutil.rmtree(app, ignore_errors=True)
            for archive in dist.glob("*.tar.gz"):
                with tarfile.open(archive) as tar:
                    tar.extractall(app, filter="data")
            stamp.write_text(wanted)
        runners = sorted(app.glob("*-runner.jar"))
        if not runners:
            raise BrokerError(f"no *-runner.jar in {app}; delete {app} to fetch Apicurio Registry again")
        return runners[0]

    def start(self, timeout: float = 180.0, progress: Callable[[str], None] = lambda _: None) -> str:
        """Start the registry unless it runs; wait until its API answers; return :attr:`url`."""
        if self._answers():
            return self.url
        if port_open(self.host, self.port):
            raise BrokerError(f"port {self.port} is taken by something that is not a schema registry")
        runner = self.resolve(progress)
        self.home.mkdir(parents=True, exist_ok=True)
        progress(f"starting Apicurio Registry at {self.url} (log: {self.log_file})")
        command = [
            "java",
            f"-Xmx{self.heap}",
            *JVM_OPTIONS,
            f"-Dquarkus.http.port={self.port}",
            f"-Dquarkus.http.host={self.host}",
            "-jar",
            str(runner),
        ]
        with open(self.log_file, "wb") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BrokerError(f"the schema registry exited with code {process.returncode}:\n{self._log_tail()}")
            if self._answers():
                return self.url
            time.sleep(0.5)
        self.stop()
        raise BrokerError(f"the schema registry did not answer within {timeout:.0f}s:\n{self._log_tail()}")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/subjects", timeout=2.0) as response:  # noqa: S310 - our URL
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def requests(self, path: str, method: str = "GET") -> int:
        """How many ``method`` requests for ``path`` (below :attr:`url`, any query) the access log shows."""
        line = re.compile(
            rf'apicurio-registry\.access method="{re.escape(method)}" path="{re.escape(API_PATH + path)}(\?[^"]*)?"'
        )
        try:
            return len(line.findall(self.log_file.read_text(errors="replace")))
        except OSError:
            return 0

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log yet)"

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop the registry (SIGTERM, then SIGKILL after ``timeout``); True if one was running."""
        try:
            pid = int(self.pid_file.read_text())
        except (OSError, ValueError):
            return False
        self.pid_file.unlink(missing_ok=True)
        if not _pid_alive(pid):
            return False
        terminate(pid, timeout)
        return True
