"""Topic replay: run a range of a live topic again in a namespace of its own, and record how.

Why this exists:
    Reproducibility is shown, not claimed: an engineer takes a range of ``docs.raw`` or
    ``inference.requests``, feeds it to the pipeline in namespace NAME (every topic prefixed,
    its own consumer groups, its own Milvus collection) beside live traffic, and later diffs the
    result (:mod:`streams.replay.diff`). A manifest records exactly what ran: source partitions
    and offsets, model versions with their file digests, a settings digest, the code version.
    Live topics and the live collection are only ever read.

How a range is fed:
    Records are copied with their keys and headers to ``NAME.<topic>``, keyed partitioning as
    upstream producers do, plus ``llmops.replay-of`` (original ``topic:partition:offset``) and
    ``llmops.original-timestamp`` headers; the infer agent shifts request deadlines by the
    replay delay, so a request keeps the time budget it had. The namespace's registry
    (``NAME.models.control``) is seeded with the pinned versions, or with live production.

Usage:
    >>> spec = ReplaySpec("docs.raw", "r1", from_offset=0, to_offset=500)
    >>> manifest = run_replay(live_settings, spec, progress=print)     # starts its own worker

Notes:
    One module of about 440 lines on purpose: the spec, the range, the copy, the seeded
    registry, the supervised worker and the manifest are the steps of one run and share its
    settings; listing and dropping namespaces live in :mod:`streams.replay.namespaces`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.index.embed import version_for
from streams.kafka.admin import client_kwargs, ensure_topics, offsets, producer, read_range, wait_for_group
from streams.kafka.topics import DOCS_RAW, INFERENCE_REQUESTS, NamespaceError, Topics, check_namespace
from streams.logs import get_logger
from streams.models.lifecycle import load_registry, write_events
from streams.models.registry import Kind, ModelVersion, Stage
from streams.records import now_ms
from streams.settings import Settings

log = get_logger(__name__)

REPLAYABLE = (DOCS_RAW, INFERENCE_REQUESTS)
REPLAY_OF_HEADER = "llmops.replay-of"
ORIGINAL_TIMESTAMP_HEADER = "llmops.original-timestamp"
# What shapes a result: two runs with equal digests of these settings are comparable.
RESULT_SETTINGS = (
    "chunk_tokens",
    "chunk_overlap",
    "max_text_bytes",
    "min_text_chars",
    "redact_pii",
    "near_dup_max_hamming",
    "near_dup_enabled",
    "embed_model",
    "milvus_index_type",
    "milvus_metric",
    "default_classifier",
    "injection_block_score",
    "injection_flag_score",
)
# One agent set (so one consumer group) for every replay into a namespace: documents replayed
# first are searchable by the requests replayed after them.
REPLAY_AGENTS = ("embed", "index", "infer", "ingest")


class ReplayError(ValueError):
    """A replay that cannot run as asked; the message says what to change."""


@dataclass(frozen=True)
class ReplaySpec:
    """What to replay and where."""

    topic: str
    namespace: str
    from_offset: int | None = None
    to_offset: int | None = None  # exclusive, per partition
    from_time_ms: int | None = None
    to_time_ms: int | None = None  # exclusive
    models: tuple[str, ...] = ()

    def check(self, live_namespace: str) -> None:
        if self.topic not in REPLAYABLE:
            raise ReplayError(f"--topic must be one of {list(REPLAYABLE)}, got {self.topic!r}")
        checked_namespace(self.namespace, live_namespace)
        if self.from_offset is not None and self.from_time_ms is not None:
            raise ReplayError("give --from-offset or --from-time, not both")
        if self.to_offset is not None and self.to_time_ms is not None:
            raise ReplayError("give --to-offset or --to-time, not both")


def checked_namespace(namespace: str, live_namespace: str) -> str:
    """``namespace`` if a replay may own it (:func:`streams.kafka.topics.check_namespace`), else ReplayError."""
    try:
        return check_namespace(namespace, live_namespace)
    except NamespaceError as error:
        raise ReplayError(str(error)) from None


def replay_settings(live: Settings, namespace: str, **overrides: Any) -> Settings:
    """Settings of the replay namespace: its own data dir (Milvus Lite file, Faust state), same models."""
    return live.model_copy(
        update={
            "namespace": namespace,
            "data_dir": replay_dir(live, namespace),
            "models_dir": live.models_dir or live.data_dir / "models",
            **overrides,
        }
    )


def replays_root(live: Settings) -> Path:
    """The folder that holds every replay namespace's folder."""
    return (live.data_dir / "replays").resolve()


def replay_dir(live: Settings, namespace: str) -> Path:
    """``<data_dir>/replays/<namespace>``, for a checked namespace, and never outside the replays folder."""
    root = replays_root(live)
    directory = (root / checked_namespace(namespace, live.namespace)).resolve()
    if directory == root or not directory.is_relative_to(root):  # a symlink pointing elsewhere
        raise ReplayError(f"the folder of namespace {namespace} resolves outside {root}; remove it by hand")
    return directory


def settings_digest(settings: Settings) -> str:
    values = {name: getattr(settings, name) for name in RESULT_SETTINGS}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def code_version() -> str:
    """The package version and, in a git checkout, the commit (with '+dirty' for local changes)."""
    from importlib.metadata import version

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty=+dirty", "--abbrev=12"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return f"{version('llmops-streams')} ({commit})"


async def resolve_range(settings: Settings, spec: ReplaySpec) -> dict[TopicPartition, tuple[int, int]]:
    """Per partition of the live topic: [first, stop) offsets the spec selects."""
    topic = Topics(settings.namespace).name(spec.topic)
    begin, end = await offsets(settings, [topic])
    if not end:
        raise ReplayError(f"topic {topic} does not exist on {settings.bootstrap_servers}")
    starts = {tp: max(begin[tp], spec.from_offset or 0) for tp in end}
    stops = {tp: min(end[tp], spec.to_offset) if spec.to_offset is not None else end[tp] for tp in end}
    if spec.from_time_ms is not None or spec.to_time_ms is not None:
        consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
        await consumer.start()
        try:
            for bound, chosen in ((spec.from_time_ms, starts), (spec.to_time_ms, stops)):
                if bound is None:
                    continue
                found = await consumer.offsets_for_times(dict.fromkeys(end, bound))
                for tp in end:
                    chosen[tp] = found[tp].offset if found.get(tp) is not None else end[tp]
        finally:
            await consumer.stop()
    return {tp: (starts[tp], max(starts[tp], stops[tp])) for tp in sorted(end, key=lambda tp: tp.partition)}


@dataclass
class Manifest:
    """Exactly what a replay ran; one file per replayed topic, ``<data_dir>/replays/NAME/manifest-<topic>.json``."""

    namespace: str
    source_topic: str
    target_topic: str
    partitions: dict[str, list[int]]  # partition -> [first, stop)
    records: int
    models: list[dict[str, Any]]
    settings_digest: str
    embed_model: str
    code_version: str
    started_at_ms: int
    copied_at_ms: int = 0
    finished_at_ms: int | None = None
    caught_up: bool = False
    worker_restarts: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def topic(self) -> str:
        """The replayed topic's base name (``docs.raw`` or ``inference.requests``)."""
        return self.target_topic.removeprefix(f"{self.namespace}.")

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"manifest-{self.topic}.json"
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def read(cls, directory: Path, topic: str) -> Manifest:
        manifests = read_manifests(directory)
        if topic not in manifests:
            raise ReplayError(f"namespace {directory.name} has no replay of {topic} (it has {sorted(manifests)})")
        return manifests[topic]

    def ranges(self) -> dict[TopicPartition, tuple[int, int]]:
        return {TopicPartition(self.source_topic, int(p)): (r[0], r[1]) for p, r in self.partitions.items()}


def read_manifests(directory: Path) -> dict[str, Manifest]:
    """Every replay manifest of a namespace, by replayed topic."""
    manifests = {}
    for path in sorted(directory.glob("manifest-*.json")):
        manifest = Manifest(**json.loads(path.read_text()))
        manifests[manifest.topic] = manifest
    if not manifests:
        raise ReplayError(
            f"no replay manifest in {directory}: run `llmops replay run --topic docs.raw --namespace {directory.name}`"
        )
    return manifests


def embed_model_for(live: Settings, pins: tuple[str, ...]) -> str:
    """The LLMOPS_EMBED_MODEL whose graph has the pinned embedder version (or the live one)."""
    pinned = [spec.partition("@")[2] for spec in pins if spec.partition("@")[0] == "all-MiniLM-L6-v2"]
    if not pinned:
        return live.embed_model
    for choice in ("int8", "fp32", "shipped"):
        if version_for(live.model_copy(update={"embed_model": choice})).startswith(pinned[0]):
            return choice
    raise ReplayError(f"no embedding graph here has version {pinned[0][:16]}; available: int8, fp32, shipped")


async def seed_registry(live: Settings, target: Settings, pins: tuple[str, ...]) -> list[ModelVersion]:
    """Make the pinned classifier versions (or live production ones) production in the replay namespace."""
    registry = await load_registry(live)
    chosen: list[ModelVersion] = []
    for spec in pins:
        name = spec.partition("@")[0]
        if name == "all-MiniLM-L6-v2":
            continue  # the embedder follows embed_model; the replay worker registers it
        chosen.append(registry.resolve(spec))
    pinned_names = {v.name for v in chosen}
    chosen += [v for v in registry.production_of_kind(Kind.CLASSIFIER) if v.name not in pinned_names]
    unevaluated = [v.short for v in chosen if not v.qa_passed]
    if unevaluated:  # the workers' rules put no version in production without a passed QA gate
        raise ReplayError(
            f"{', '.join(unevaluated)} has not passed QA: evaluate it first (`llmops models evaluate NAME@VERSION`), "
            "then replay with it"
        )
    stamp = now_ms()
    events = [
        replace(
            v,
            stage=Stage.PRODUCTION,
            promoted_at_ms=stamp,
            updated_at_ms=stamp,
            actor="llmops replay",
            approved_by=v.approved_by or "llmops replay (pinned)",
            note="pinned",
        )
        for v in chosen
    ]
    if events:
        events = await write_events(target, events, await load_registry(target))
    return events


def read_ranges(settings: Settings, ranges: dict[TopicPartition, tuple[int, int]]) -> AsyncIterator[Any]:
    """The records of ``[first, stop)`` per partition."""
    return read_range(settings, {tp: r[0] for tp, r in ranges.items()}, {tp: r[1] for tp, r in ranges.items()})


async def copy_range(
    live: Settings,
    target: Settings,
    ranges: dict[TopicPartition, tuple[int, int]],
    on_record: Callable[[int], None] = lambda done: None,
) -> int:
    """Produce every record of ``ranges`` to the target namespace's topic; returns the count."""
    target_topic = Topics(target.namespace).name(next(iter(ranges)).topic.removeprefix(f"{live.namespace}."))
    partitions = max(tp.partition for tp in ranges) + 1
    kafka = producer(target)
    await kafka.start()
    copied = 0
    try:
        pending = []
        async for message in read_ranges(live, ranges):
            headers = [
                *(message.headers or ()),
                (REPLAY_OF_HEADER, f"{message.topic}:{message.partition}:{message.offset}".encode()),
                (ORIGINAL_TIMESTAMP_HEADER, str(message.timestamp).encode()),
            ]
            # Keyless records keep their partition (modulo the target's count); keyed ones follow the key.
            partition = None if message.key is not None else message.partition % partitions
            pending.append(
                await kafka.send(target_topic, message.value, key=message.key, partition=partition, headers=headers)
            )
            copied += 1
            on_record(copied)
        await asyncio.gather(*pending)
    finally:
        await kafka.stop()
    return copied


class SupervisedWorker:
    """The replay namespace's worker process, restarted (up to 3 times) if it dies."""

    def __init__(self, target: Settings, log_path: Path, progress: Callable[[str], None]) -> None:
        self.target, self.log_path, self.progress = target, log_path, progress
        self.process = self._start()
        self.restarts = 0

    def _start(self) -> subprocess.Popen[bytes]:
        from streams.worker_process import start_worker

        return start_worker(self.target, self.log_path, REPLAY_AGENTS)

    def alive(self) -> bool:
        return self.process.poll() is None

    def restart_if_dead(self) -> bool:
        if self.alive() or self.restarts >= 3:
            return False
        self.restarts += 1
        self.progress(
            f"replay worker exited with {self.process.returncode}; "
            f"restarting it ({self.restarts}/3), see {self.log_path}"
        )
        self.process = self._start()
        return True

    def stop(self) -> None:
        from streams.worker_process import stop_worker

        stop_worker(self.process)


def wait_until_replayed(
    target: Settings,
    topic: str,
    progress: Callable[[str], None],
    timeout: float,
    worker: SupervisedWorker | None,
) -> bool:
    """Wait until every stage of the namespace consumed the copied range (restarting a dead worker)."""
    from streams.kafka.progress import wait_for_stages, wait_until_consumed

    topics = Topics(target.namespace)
    _, end = asyncio.run(offsets(target, [topics.name(topic)]))
    deadline = time.monotonic() + timeout

    def alive() -> bool:
        return worker is None or worker.alive()

    while True:
        remaining = max(1.0, deadline - time.monotonic())
        if topic == DOCS_RAW:
            ok, _ = wait_for_stages(target, [REPLAY_AGENTS], end, remaining, alive=alive, log=progress)
        else:
            group = topics.requests_group(*REPLAY_AGENTS)  # the infer agent's own group

            def report(done: int, total: int) -> None:
                progress(f"  infer: committed {done}/{total} offsets on {topics.inference_requests}")

            ok = asyncio.run(wait_until_consumed(target, group, end, remaining, report, alive))
        if ok:
            return True
        if worker is None or time.monotonic() >= deadline or not worker.restart_if_dead():
            return False


def run_replay(
    live: Settings,
    spec: ReplaySpec,
    *,
    progress: Callable[[str], None] = lambda _: None,
    on_copied: Callable[[int, int], None] = lambda done, total: None,
    start_own_worker: bool = True,
    timeout: float = 1800.0,
    on_worker: Callable[[SupervisedWorker], None] = lambda worker: None,
) -> Manifest:
    """Copy the range into the namespace, run the pipeline there until done, write the manifest."""
    spec.check(live.namespace)
    target = replay_settings(live, spec.namespace, embed_model=embed_model_for(live, spec.models))
    ranges = asyncio.run(resolve_range(live, spec))
    total = sum(stop - first for first, stop in ranges.values())
    if total == 0:
        raise ReplayError(f"the range selects no records of {Topics(live.namespace).name(spec.topic)}")
    asyncio.run(ensure_topics(target))
    seeded = asyncio.run(seed_registry(live, target, spec.models))
    embedder_version = version_for(target)
    manifest = Manifest(
        namespace=spec.namespace,
        source_topic=Topics(live.namespace).name(spec.topic),
        target_topic=Topics(spec.namespace).name(spec.topic),
        partitions={str(tp.partition): [first, stop] for tp, (first, stop) in ranges.items()},
        records=total,
        models=[{"name": "all-MiniLM-L6-v2", "version": embedder_version, "kind": "embedder"}]
        + [{"name": v.name, "version": v.version, "kind": v.kind.value, "files": dict(v.files)} for v in seeded],
        settings_digest=settings_digest(target),
        embed_model=target.embed_model,
        code_version=code_version(),
        started_at_ms=now_ms(),
    )
    directory = replay_dir(live, spec.namespace)
    manifest.write(directory)
    worker = SupervisedWorker(target, directory / "worker.log", progress) if start_own_worker else None
    if worker is not None:
        on_worker(worker)
    try:
        if worker is not None:
            # Records copied while the worker is still joining its group would be fetched
            # during Faust's recovery; waiting also keeps start-up out of the replay's pace.
            progress("waiting for the replay worker to join its consumer group")
            asyncio.run(wait_for_group(target, Topics(target.namespace).app_id(*REPLAY_AGENTS)))
        progress(f"copying {total} records of {manifest.source_topic} to {manifest.target_topic}")
        asyncio.run(copy_range(live, target, ranges, lambda done: on_copied(done, total)))
        manifest.copied_at_ms = now_ms()
        manifest.write(directory)
        caught_up = wait_until_replayed(target, spec.topic, progress, timeout, worker)
    finally:
        if worker is not None:
            worker.stop()
    manifest.caught_up, manifest.finished_at_ms = caught_up, now_ms()
    manifest.worker_restarts = worker.restarts if worker else 0
    manifest.write(directory)
    return manifest
