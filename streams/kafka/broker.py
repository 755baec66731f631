"""The embedded Apache Kafka broker: KRaft, one node, jars from Maven Central.

Why this exists:
    ``make run`` and ``make test`` need a real broker on a machine without Docker. This module
    resolves Apache Kafka 3.9's jars with Maven (``infra/kafka/pom.xml``), formats KRaft storage
    once, and runs ``kafka.Kafka`` with Java 17 in the background, its data and log under
    ``<data_dir>/kafka``.

Usage:
    >>> broker = EmbeddedKafka.from_settings(Settings())
    >>> broker.start()          # idempotent; returns once the broker answers
    '127.0.0.1:9092'
    >>> broker.status().running
    True
    >>> broker.stop()

Notes:
    One module on purpose (~500 lines): resolving the jars, writing the configuration, formatting
    the storage and supervising the JVM are steps of one process's lifecycle that share its paths
    and settings; split, each part would need the others' internals.
    The controller listens on the broker port + 1. ``start`` on a running broker does nothing.
    A missing ``java`` or ``mvn`` is reported with what to install.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from streams.kafka.security import BrokerSecurity, BrokerSecurityError
from streams.settings import Settings

POM = Path(__file__).resolve().parents[2] / "infra" / "kafka" / "pom.xml"


class BrokerError(RuntimeError):
    """The embedded broker could not be prepared or started; the message says what to do."""


def new_cluster_id() -> str:
    """A random KRaft cluster id: 16 bytes, URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid`` it never starts with ``-``: the storage tool's argument
    parser would read such an id as an option and refuse to format (one id in 64 otherwise).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class BrokerStatus:
    """What ``llmops kafka status`` reports."""

    running: bool
    pid: int | None  # None when the broker answering at bootstrap was not started by llmops

    bootstrap: str
    data_dir: Path
    log_file: Path


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); look at its state.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True
    return state != "Z"


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM ``pid``, then SIGKILL if it still runs after ``timeout`` seconds."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.2)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)


def require_tool(name: str, hint: str) -> str:
    """Path of an executable, or a BrokerError saying how to get it."""
    path = shutil.which(name)
    if path is None:
        raise BrokerError(f"'{name}' was not found on PATH; {hint}")
    return path


def copy_maven_dependencies(pom: Path, output: Path, what: str, goal: str = "dependency:copy-dependencies") -> None:
    """Copy what ``pom`` names (its runtime dependencies, or ``goal``'s items) from Maven Central into ``output``."""
    require_tool("java", "install a Java 17 runtime (Debian: apt-get install openjdk-17-jre-headless)")
    mvn = require_tool("mvn", "install Apache Maven (Debian: apt-get install maven)")
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    command = [mvn, "-B", "-q", "-f", str(pom), goal, f"-DoutputDirectory={output}"]
    result = subprocess.run([*command, "-DincludeScope=runtime"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(
            f"Maven could not resolve {what} (is Maven Central reachable?):\n" + (result.stdout + result.stderr)[-2000:]
        )


def _java_argument(argument: str) -> str:
    """One argument as a line of a Java ``@argfile``: quoted, with backslashes and quotes escaped."""
    return '"' + argument.replace("\\", "\\\\").replace('"', '\\"') + '"'


# The broker's garbage collector (LLMOPS_KAFKA_GC). Under the inference bench's load, G1 stopped
# the broker for 5-27 ms every 10-12 s (young pauses, `-Xlog:gc`), and every record in flight
# waited. ZGC's pauses stayed under 0.1 ms, but in full runs on 2 cores the p99 was no better
# (README, "Inference latency"): G1 stays the default; ZGC is for machines with cores to spare.
GC_OPTIONS: dict[str, tuple[str, ...]] = {
    "g1": ("-XX:+UseG1GC",),
    "zgc": ("-XX:+UseZGC",),
}


class EmbeddedKafka:
    """One KRaft broker+controller process on loopback."""

    def __init__(
        self,
        home: Path,
        host: str = "127.0.0.1",
        port: int = 9092,
        heap: str = "768m",
        extra_properties: dict[str, str] | None = None,
        security: BrokerSecurity | None = None,
        node_id: int = 1,
        voters: str | None = None,
        gc: str = "g1",
    ) -> None:
        self.home = home.resolve()
        self.host = host
        self.port = port
        self.heap = heap
        self.gc = gc
        self.extra_properties = dict(extra_properties or {})
        self.security = security
        self.node_id = node_id
        # controller.quorum.voters: this node alone unless it is one of a cluster's voters.
        self.voters = voters or f"{node_id}@{host}:{port + 1}"
        self._log_start = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedKafka:
        first = settings.bootstrap_servers.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
            raise BrokerError(
                f"the bootstrap address {settings.bootstrap_servers} (-b or LLMOPS_BOOTSTRAP_SERVERS) is not a "
                "loopback address; "
                "the embedded broker only runs locally (use your cluster directly instead)"
            )
        try:
            security = BrokerSecurity.from_settings(settings)
        except BrokerSecurityError as error:
            raise BrokerError(str(error)) from None
        return cls(
            settings.kafka_dir,
            host="127.0.0.1",
            port=int(port),
            heap=settings.kafka_heap,
            security=security,
            gc=settings.kafka_gc,
        )

    # --- paths ------------------------------------------------------------------------------
    @property
    def libs_dir(self) -> Path:
        return self.home / "libs"

    @property
    def storage_dir(self) -> Path:
        return self.home / f"data-{self.port}"

    @property
    def log_file(self) -> Path:
        return self.home / f"broker-{self.port}.log"

    @property
    def pid_file(self) -> Path:
        return self.home / f"broker-{self.port}.pid"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    # --- steps ------------------------------------------------------------------------------
    def resolve_jars(self, progress: Callable[[str], None] = lambda _: None) -> Path:
        """Copy the broker's runtime jars from Maven Central (once per pom version)."""
        stamp = self.libs_dir / ".pom-sha256"
        wanted = hashlib.sha256(POM.read_bytes()).hexdigest()
        if stamp.exists() and stamp.read_text() == wanted and any(self.libs_dir.glob("kafka_2.13-*.jar")):
            return self.libs_dir
        progress("resolving Apache Kafka jars from Maven Central (first run only)...")
        copy_maven_dependencies(POM, self.libs_dir, "the Kafka jars")
        stamp.write_text(wanted)
        return self.libs_dir

    def _write_config(self) -> Path:
        protocol = self.security.protocol if self.security else "PLAINTEXT"
        try:
            secured = self.security.properties(protocol, self.home / f"tls-{self.port}") if self.security else {}
        except BrokerSecurityError as error:
            raise BrokerError(str(error)) from None
        properties = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters,
            "listeners": f"{protocol}://{self.host}:{self.port},CONTROLLER://{self.host}:{self.port + 1}",
            "advertised.listeners": f"{protocol}://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": f"{protocol}:{protocol},CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": protocol,
            **secured,
            "log.dirs": str(self.storage_dir),
            "num.partitions": "6",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "12",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.hours": "168",
            # The log cleaner allocates its dedupe buffer (128 MiB by default) at start; with the
            # small heaps of local and test brokers that failed now and then (OutOfMemoryError).
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            **self.extra_properties,
        }
        config = self.home / f"server-{self.port}.properties"
        config.touch(mode=0o600)  # it may hold the SCRAM and keystore passwords
        config.chmod(0o600)
        config.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
        log4j = self.home / f"log4j-{self.port}.properties"
        log4j.write_text(
            "log4j.rootLogger=INFO, file\n"
            "log4j.logger.kafka.request.logger=WARN\n"
            "log4j.logger.org.apache.kafka.clients=WARN\n"
            "log4j.appender.file=org.apache.log4j.FileAppender\n"
            f"log4j.appender.file.File={self.log_file}\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        )
        return config

    def _java(self, *args: str) -> list[str]:
        java = require_tool("java", "install a Java 17 runtime (Debian: apt-get install openjdk-17-jre-headless)")
        return [
            java,
            f"-Xmx{self.heap}",
            "-Xms128m",
            *GC_OPTIONS[self.gc],
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.home / f'log4j-{self.port}.properties'}",
            "-cp",
            f"{self.libs_dir}/*",
            *args,
        ]

    def format_command(self, config: Path, cluster_id: str, argument_file: Path) -> list[str]:
        """The ``kafka-storage format`` command; its arguments are in ``argument_file`` (written here, 0600).

        ``--add-scram`` carries the SCRAM passwords: on a command line, ``ps`` (``/proc/<pid>/cmdline``)
        would show them to every user of the machine. The Java launcher reads the main class and
        its arguments from an ``@file`` instead, so the command line holds only that file's name.
        """
        arguments = [
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "-c",
            str(config),
            *(self.security.format_arguments() if self.security else []),
        ]
        argument_file.unlink(missing_ok=True)
        argument_file.touch(mode=0o600)
        argument_file.write_text("\n".join(_java_argument(argument) for argument in arguments) + "\n")
        return self._java(f"@{argument_file}")

    def format_storage(self, config: Path, cluster_id: str | None = None) -> None:
        """Format KRaft storage once (a fresh cluster id per data folder unless ``cluster_id``)."""
        if (self.storage_dir / "meta.properties").exists():
            return
        argument_file = self.home / f"format-{self.port}.args"
        try:
            result = subprocess.run(
                self.format_command(config, cluster_id or new_cluster_id(), argument_file),
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            argument_file.unlink(missing_ok=True)
        if result.returncode != 0:
            raise BrokerError(f"formatting KRaft storage failed:\n{(result.stdout + result.stderr)[-2000:]}")

    def _read_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def status(self) -> BrokerStatus:
        return BrokerStatus(
            port_open(self.host, self.port), self._read_pid(), self.bootstrap, self.storage_dir, self.log_file
        )

    def start(self, timeout: float = 90.0, progress: Callable[[str], None] = lambda _: None) -> str:
        """Start the broker unless it runs; wait until it accepts connections; return bootstrap."""
        status = self.status()
        if status.running:
            if status.pid is None:
                progress(f"a broker already answers at {self.bootstrap} (not started by llmops); using it")
            return self.bootstrap
        for attempt in range(3):
            process = self.launch(progress)
            try:
                self.wait_until_started(process, timeout)
                return self.bootstrap
            except BrokerError as error:
                # Ports in the ephemeral range can be held for a moment by some client's outgoing
                # connection; the broker then exits at once with "Address already in use".
                if attempt == 2 or "Address already in use" not in str(error):
                    raise
                progress(f"port {self.port} or {self.port + 1} was briefly in use; starting again")
                time.sleep(2.0)
        raise AssertionError("unreachable")

    def launch(
        self, progress: Callable[[str], None] = lambda _: None, cluster_id: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Write the config, format storage if new, and start the process without waiting for it."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.resolve_jars(progress)
        config = self._write_config()
        self.format_storage(config, cluster_id)
        progress(f"starting Kafka broker on {self.bootstrap} (log: {self.log_file})")
        # Readiness is read from what the log gains from now on (it keeps earlier runs' lines).
        self._log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.home / f"broker-{self.port}.stdout", "ab") as out:
            process = subprocess.Popen(
                self._java("kafka.Kafka", str(config)),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        return process

    def wait_until_started(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        """Wait until the launched broker says it started and accepts connections, or raise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BrokerError(
                    f"the broker exited with code {process.returncode}; see {self.log_file}:\n" + self._log_tail()
                )
            if port_open(self.host, self.port) and self._started_in_log():
                return
            time.sleep(0.25)
        self.stop()
        raise BrokerError(f"the broker did not answer within {timeout:.0f}s; see {self.log_file}:\n{self._log_tail()}")

    def _run_log_lines(self) -> list[str]:
        """Lines the log gained since the current launch."""
        try:
            with open(self.log_file, "rb") as log:
                log.seek(self._log_start)
                return log.read().decode(errors="replace").splitlines()
        except OSError:
            return []

    def _started_in_log(self) -> bool:
        try:
            with open(self.log_file, "rb") as log:
                log.seek(max(self._log_start, os.path.getsize(self.log_file) - 200_000))
                return b"Kafka Server started" in log.read()
        except OSError:
            return False

    def _log_tail(self, lines: int = 20) -> str:
        try:
            tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
            bind_errors = [line for line in self._run_log_lines() if "Address already in use" in line]
            return "\n".join(bind_errors[-1:] + tail)
        except OSError:
            return "(no log yet)"

    def kill(self) -> bool:
        """SIGKILL the broker (a crash, for fault tests); True if one was running."""
        pid = self._read_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        while _pid_alive(pid):
            time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); True if one was running."""
        pid = self._read_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        terminate(pid, timeout)
        self.pid_file.unlink(missing_ok=True)
        return True


class EmbeddedCluster:
    """Three (or more) KRaft nodes on loopback, each broker and controller, from the same jars.

    Node ``i`` (0-based) listens on ``base_port + 2i`` and runs its controller on the port after;
    all nodes are voters of one quorum, so the cluster survives losing a minority of them.
    Topics default to replication ``size`` with ``min.insync.replicas`` a majority of it, so an
    ``acks=all`` write survives the loss of one node of three and is refused when two are gone.

    Usage:
        >>> cluster = EmbeddedCluster(Path(".llmops/kafka"), base_port=19092)
        >>> cluster.start()
        '127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096'
        >>> cluster.kill(0); cluster.restart(0)   # a crash and a recovery, for fault tests
        >>> cluster.stop()
    """

    def __init__(self, home: Path, base_port: int, size: int = 3, heap: str = "320m") -> None:
        host = "127.0.0.1"
        voters = ",".join(f"{i + 1}@{host}:{base_port + 2 * i + 1}" for i in range(size))
        majority = size // 2 + 1
        properties = {
            "default.replication.factor": str(size),
            "min.insync.replicas": str(majority),
            "offsets.topic.replication.factor": str(size),
            "transaction.state.log.replication.factor": str(size),
            "transaction.state.log.min.isr": str(majority),
            # A restarted node takes its partitions back as leader once it is in sync again.
            "auto.leader.rebalance.enable": "true",
            "leader.imbalance.check.interval.seconds": "10",
        }
        self.nodes = [
            EmbeddedKafka(home, host, base_port + 2 * i, heap, properties, node_id=i + 1, voters=voters)
            for i in range(size)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def storage_dirs(self) -> list[Path]:
        return [node.storage_dir for node in self.nodes]

    def start(self, timeout: float = 180.0, progress: Callable[[str], None] = lambda _: None) -> str:
        """Format every node with one cluster id, start all at once (a quorum needs a majority up), wait."""
        cluster_id = new_cluster_id()
        processes = [node.launch(progress, cluster_id) for node in self.nodes]
        for node, process in zip(self.nodes, processes, strict=True):
            for attempt in range(3):
                try:
                    node.wait_until_started(process, timeout)
                    break
                except BrokerError as error:
                    if attempt == 2 or "Address already in use" not in str(error):
                        self.stop()
                        raise
                    time.sleep(2.0)  # a client's ephemeral port held it for a moment (see EmbeddedKafka.start)
                    process = node.launch(progress, cluster_id)
        return self.bootstrap

    def kill(self, index: int) -> None:
        """SIGKILL one node."""
        self.nodes[index].kill()

    def restart(self, index: int, timeout: float = 180.0) -> None:
        """Start a stopped node again on its storage; it rejoins the quorum and catches up."""
        node = self.nodes[index]
        node.wait_until_started(node.launch(), timeout)

    def stop(self) -> None:
        """Stop every node at once (one by one, the last would wait long for a quorum that is gone)."""
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.stop(), self.nodes))
