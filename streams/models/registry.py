"""The model registry: versions and their lifecycle, kept as events on ``models.control``.

Why this exists:
    Models are versioned (a version is the sha256 of its files), evaluated in QA, approved and
    promoted to production, and rolled back, while workers run. The compacted ``models.control``
    topic is the source of truth: each event is the full current state of one ``name@version``,
    so any worker rebuilds the registry by reading the topic from the beginning, and the latest
    event per version survives compaction.

The lifecycle (the rules are in :mod:`streams.models.rules`, which every event produced here
and every event a worker reads passes through):
    registered -> qa -> production -> archived; qa -> registered (demote); archived -> production
    only by rollback. Promotion to production needs a passed QA evaluation and a named approver.
    At most one production version per name: promoting one archives the previous one.

Usage:
    >>> registry = Registry()
    >>> registry.apply(version)                   # from a control event
    >>> registry.production("stdlib-topic")       # the version that answers now
    >>> events = registry.promote("stdlib-topic", "ab12...", "production", approved_by="ana", now_ms=...)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from streams.logs import get_logger
from streams.models.indexes import IndexGate
from streams.models.rejections import ControlRejected, Reason, RegistryError
from streams.models.rules import check_event, check_production
from streams.models.version import Kind, ModelVersion, Stage, classifier_config, digests_version, files_version

__all__ = [
    "ControlCheck",
    "ControlReject",
    "IndexGate",
    "Kind",
    "ModelVersion",
    "QaGate",
    "Registry",
    "RegistryError",
    "RegistryFollower",
    "RetrievalGate",
    "Stage",
    "classifier_config",
    "digests_version",
    "files_version",
]

log = get_logger(__name__)


@dataclass(frozen=True)
class QaGate:
    """What a QA evaluation must show before production: a floor, and no big drop from production."""

    min_accuracy: float = 0.6
    max_drop: float = 0.02  # vs the production version's QA accuracy on the same data

    def judge(self, accuracy: float, production_accuracy: float | None) -> tuple[bool, str]:
        if accuracy < self.min_accuracy:
            return False, f"accuracy {accuracy:.3f} is below the gate's floor {self.min_accuracy:.3f}"
        if production_accuracy is not None and accuracy < production_accuracy - self.max_drop:
            return False, (
                f"accuracy {accuracy:.3f} is more than {self.max_drop:.3f} below production's "
                f"{production_accuracy:.3f} on the same data"
            )
        against = f", production {production_accuracy:.3f}" if production_accuracy is not None else ""
        return True, f"accuracy {accuracy:.3f} >= floor {self.min_accuracy:.3f}{against}"


@dataclass(frozen=True)
class RetrievalGate:
    """What a ranker's retrieval evaluation must show: a floor, and no drop from production on the same questions.

    ``against`` holds production's metrics on the same questions (the builtin RRF order when no
    ranker is in production), so the comparison is paired, not against an old report.
    """

    metrics: tuple[str, ...] = ("recall@5", "mrr@5")
    min_recall_at_5: float = 0.5
    max_drop: float = 0.0

    def judge(self, metrics: Mapping[str, float], against: Mapping[str, float] | None) -> tuple[bool, str]:
        recall = float(metrics.get("recall@5", 0.0))
        if recall < self.min_recall_at_5:
            return False, f"recall@5 {recall:.3f} is below the gate's floor {self.min_recall_at_5:.3f}"
        for name in self.metrics:
            if against is not None and float(metrics[name]) < float(against[name]) - self.max_drop:
                return False, (
                    f"{name} {metrics[name]:.3f} is more than {self.max_drop:.3f} below production's "
                    f"{against[name]:.3f} on the same questions"
                )
        shown = ", ".join(
            f"{n} {metrics[n]:.3f}" + (f" (production {against[n]:.3f})" if against is not None else "")
            for n in self.metrics
        )
        return True, f"{shown}; floor recall@5 {self.min_recall_at_5:.3f}, allowed drop {self.max_drop:.3f}"


class Registry:
    """Every known version by key; lifecycle rules that produce the events to write."""

    def __init__(self, versions: Iterable[ModelVersion] = ()) -> None:
        self._versions: dict[str, ModelVersion] = {}
        for version in versions:
            self.apply(version)

    def copy(self) -> Registry:
        """A snapshot that later events do not change (what one request answers with)."""
        return Registry(self._versions.values())

    def apply(self, version: ModelVersion) -> None:
        """Take a control event (the full state of one version)."""
        self._versions[version.key] = version

    def find(self, key: str) -> ModelVersion | None:
        """The version stored under a control key (``name@version``), if any."""
        return self._versions.get(key)

    def remove(self, key: str) -> None:
        """A tombstone on the control topic: the version is forgotten."""
        self._versions.pop(key, None)

    def all(self, name: str | None = None) -> list[ModelVersion]:
        versions = [v for v in self._versions.values() if name is None or v.name == name]
        return sorted(versions, key=lambda v: (v.name, v.updated_at_ms))

    def names(self) -> list[str]:
        return sorted({v.name for v in self._versions.values()})

    def get(self, name: str, version: str) -> ModelVersion:
        """A version by name and full version or a unique prefix of it."""
        exact = self._versions.get(f"{name}@{version}")
        if exact:
            return exact
        matches = [v for v in self._versions.values() if v.name == name and v.version.startswith(version)]
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(v.short for v in self.all(name)) or "none"
        what = "is ambiguous" if matches else "is not registered"
        raise RegistryError(f"model {name}@{version} {what}; known versions: {known} (see `llmops models list`)")

    def resolve(self, spec: str) -> ModelVersion:
        """``name@version`` (prefix allowed) or ``name`` (its production version)."""
        name, _, version = spec.partition("@")
        if version:
            return self.get(name, version)
        current = self.production(name)
        if current is None:
            raise RegistryError(f"model {name!r} has no production version; promote one or pin name@version")
        return current

    def production(self, name: str) -> ModelVersion | None:
        current = [v for v in self._versions.values() if v.name == name and v.stage is Stage.PRODUCTION]
        # The latest production event wins (a rollback restores a version with an old promotion time).
        return max(current, key=lambda v: v.updated_at_ms) if current else None

    def shadows(self, name: str) -> list[ModelVersion]:
        """QA candidates of ``name`` that receive a copy of production traffic."""
        return [v for v in self._versions.values() if v.name == name and v.stage is Stage.QA and v.shadow]

    def production_of_kind(self, kind: Kind) -> list[ModelVersion]:
        return [v for v in self._versions.values() if v.kind is kind and v.stage is Stage.PRODUCTION]

    # --- lifecycle: each returns the events to write (the caller writes them, then applies) -------

    def register(self, version: ModelVersion) -> list[ModelVersion]:
        existing = self._versions.get(version.key)
        if existing is not None:
            raise RegistryError(
                f"{version.short} is already registered (stage {existing.stage}); the same files give the same version"
            )
        return self._checked([replace(version, stage=Stage.REGISTERED)])

    def record_evaluation(
        self,
        name: str,
        version: str,
        metrics: Mapping[str, float],
        gate: QaGate | RetrievalGate | IndexGate,
        *,
        actor: str,
        now_ms: int,
        against: Mapping[str, float] | None = None,
    ) -> list[ModelVersion]:
        """The QA result of a version: ``gate`` applied to ``metrics`` (``against``: production's, rankers, indexes)."""
        candidate = self.get(name, version)
        if isinstance(gate, RetrievalGate | IndexGate):
            passed, report = gate.judge(metrics, against)
        else:
            current = self.production(name)
            production_accuracy = None
            if current is not None and current.version != candidate.version:
                production_accuracy = current.qa_metrics.get("accuracy", current.metrics.get("holdout_accuracy"))
            passed, report = gate.judge(float(metrics["accuracy"]), production_accuracy)
        return self._checked(
            [
                replace(
                    candidate,
                    qa_metrics=dict(metrics),
                    qa_passed=passed,
                    qa_report=report,
                    updated_at_ms=now_ms,
                    actor=actor,
                    note="QA evaluation",
                )
            ]
        )

    def promote(
        self,
        name: str,
        version: str,
        to: Stage,
        *,
        actor: str,
        now_ms: int,
        approved_by: str | None = None,
        shadow: bool = False,
    ) -> list[ModelVersion]:
        candidate = self.get(name, version)
        if to is Stage.QA:
            if candidate.stage not in (Stage.REGISTERED, Stage.QA):
                raise RegistryError(f"{candidate.short} is {candidate.stage}; only a registered version goes to qa")
            note = "promoted to qa" + (" with shadow traffic" if shadow else "")
            event = replace(candidate, stage=Stage.QA, shadow=shadow, updated_at_ms=now_ms, actor=actor, note=note)
            return self._checked([event])
        if to is not Stage.PRODUCTION:
            raise RegistryError(f"promote goes to qa or production, not {to}")
        if candidate.stage is not Stage.QA:
            raise RegistryError(
                f"{candidate.short} is {candidate.stage}; promote it to qa and evaluate it first "
                f"(`llmops models promote {candidate.short} --to qa`, then `llmops models evaluate`)"
            )
        # The QA gate and the approval are lifecycle rules (streams.models.rules), checked on the event.
        # The new version first: a worker applies one event at a time, and between the two events
        # the newest promotion answers (``production`` picks it), never "no production version".
        events = [
            replace(
                candidate,
                stage=Stage.PRODUCTION,
                shadow=False,
                approved_by=(approved_by or "").strip() or None,
                promoted_at_ms=now_ms,
                updated_at_ms=now_ms,
                actor=actor,
                note="promoted to production",
            )
        ]
        current = self.production(name)
        if current is not None:
            note = f"superseded by {candidate.version[:12]}"
            events.append(replace(current, stage=Stage.ARCHIVED, updated_at_ms=now_ms, actor=actor, note=note))
        return self._checked(events)

    def rollback(self, name: str, *, actor: str, now_ms: int) -> list[ModelVersion]:
        """Archive the production version and restore the one that was in production before it."""
        current = self.production(name)
        if current is None:
            raise RegistryError(f"model {name!r} has no production version to roll back")
        earlier = [
            v
            for v in self._versions.values()
            if v.name == name
            and v.stage is Stage.ARCHIVED
            and v.promoted_at_ms is not None
            and v.promoted_at_ms < (current.promoted_at_ms or 0)
        ]
        if not earlier:
            raise RegistryError(f"{current.short} is the first production version of {name!r}; nothing to roll back to")
        previous = max(earlier, key=lambda v: v.promoted_at_ms or 0)
        # Restored first (it keeps its older promotion time, so the current version answers until
        # the second event archives it): there is a production version after every event.
        return self._checked(
            [
                replace(
                    previous,
                    stage=Stage.PRODUCTION,
                    updated_at_ms=now_ms,
                    actor=actor,
                    note=f"restored by rollback of {current.version[:12]}",
                ),
                replace(current, stage=Stage.ARCHIVED, updated_at_ms=now_ms, actor=actor, note="rolled back"),
            ]
        )

    def _checked(self, events: list[ModelVersion]) -> list[ModelVersion]:
        """``events`` unsigned (the writer signs them), each checked by the lifecycle rules in turn."""
        state = self.copy()
        unsigned = [event.unsigned() for event in events]
        for event in unsigned:
            check_event(state.find(event.key), event)
            check_production(state.production(event.name), event)
            state.apply(event)
        return unsigned


# Checks one control record against the registry built so far: the version to apply, None for an
# accepted tombstone, or ControlRejected (lifecycle.control_check is the one the product uses).
ControlCheck = Callable[["Registry", str, "bytes | None"], "ModelVersion | None"]
# Told about each refused record (the agent writes a dead letter and an alert).
ControlReject = Callable[[Any, ControlRejected], Awaitable[None]]


async def _log_only(message: Any, rejected: ControlRejected) -> None:
    return None


class RegistryFollower:
    """Keeps a :class:`Registry` in step with ``models.control`` in this process.

    Every worker reads the whole (single-partition) topic without a consumer group, so each one
    sees every event; ``ready`` is set once the end offset seen at start is reached, so nothing
    answers with a stale registry after a restart. ``on_change`` runs after each applied event.

    A record is applied only when ``check`` accepts it and ``on_change`` (which loads the models)
    succeeds; otherwise the registry keeps what it had, ``on_reject`` is told (dead letter, alert)
    and the follower goes on with the next record. After a broker error it resumes at the next
    unread offset, never from the start (which re-read a failing record forever).
    """

    def __init__(
        self,
        settings: Any,
        check: ControlCheck,
        on_change: Callable[[ModelVersion | None, str], None] = lambda version, key: None,
        on_reject: ControlReject = _log_only,
    ) -> None:
        from streams.kafka.topics import Topics

        self.settings = settings
        self.topic = Topics(settings.namespace).models_control
        self.registry = Registry()
        self.ready = asyncio.Event()
        self.rejected = 0
        self._check = check
        self._on_change = on_change
        self._on_reject = on_reject
        self._next_offset: int | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="registry-follower")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from streams.kafka.admin import client_kwargs

        partition = TopicPartition(self.topic, 0)
        while True:
            consumer = AIOKafkaConsumer(**client_kwargs(self.settings), enable_auto_commit=False, group_id=None)
            try:
                await consumer.start()
                consumer.assign([partition])
                if self._next_offset is None:
                    await consumer.seek_to_beginning(partition)
                else:
                    consumer.seek(partition, self._next_offset)  # after a hiccup: where it stopped
                end = (await consumer.end_offsets([partition]))[partition]
                if end == 0 or (self._next_offset or 0) >= end:
                    self.ready.set()
                while True:
                    batch = await consumer.getmany(partition, timeout_ms=500)
                    for message in batch.get(partition, []):
                        await self.take(message)
                        self._next_offset = message.offset + 1
                        if message.offset + 1 >= end:
                            self.ready.set()
                    if not self.ready.is_set() and await consumer.position(partition) >= end:
                        self.ready.set()  # compaction can leave the last offsets empty
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the follower must outlive broker hiccups
                log.warning("registry_follower_error", error=repr(error), retry_in_s=1.0, resume_at=self._next_offset)
                await asyncio.sleep(1.0)
            finally:
                await consumer.stop()

    async def take(self, message: Any) -> None:
        """Apply one control record, or refuse it and keep the registry as it was (never raises)."""
        key = (message.key or b"").decode("utf-8", "replace")
        previous = self.registry.find(key)
        try:
            try:
                version = self._check(self.registry, key, message.value)
            except ControlRejected:
                raise
            except Exception as error:  # noqa: BLE001 - a check that crashes refuses the record
                raise ControlRejected(Reason.MALFORMED, f"the record could not be checked: {error!r}") from None
            if version is None:
                self.registry.remove(key)
            else:
                self.registry.apply(version)
            try:
                self._on_change(version, key)
            except Exception as error:
                self._restore(key, previous)
                if isinstance(error, ControlRejected):
                    raise
                raise ControlRejected(
                    Reason.LOAD_FAILED, f"the models could not be loaded: {error!r}; the active models stay"
                ) from None
        except ControlRejected as rejected:
            self.rejected += 1
            log.warning(
                "model_control_rejected",
                key=key,
                offset=message.offset,
                reason=rejected.reason.value,
                detail=rejected.detail,
            )
            try:
                await self._on_reject(message, rejected)
            except Exception as error:  # noqa: BLE001 - reporting must not stop the registry
                log.error("model_control_reject_report_failed", key=key, offset=message.offset, error=repr(error))
            return
        if version is None:
            log.info("registry_event", key=key, removed=True)
        else:
            log.info("registry_event", model=version.short, stage=version.stage.value, note=version.note)

    def _restore(self, key: str, previous: ModelVersion | None) -> None:
        if previous is None:
            self.registry.remove(key)
        else:
            self.registry.apply(previous)
