"""The replay namespaces on this machine: list them, and drop one with its topics, groups and folder.

Why this exists:
    A replay leaves topics, consumer groups and a folder of its own beside live traffic; people
    list what is there and drop what they no longer need, and nothing outside the namespace
    may ever be touched.

Usage:
    >>> plan = plan_drop(live_settings, "r1")      # what would go: topics, groups, folder
    >>> print(plan.describe())
    >>> drop_namespace(live_settings, plan)

Notes:
    The namespace is checked by :func:`streams.kafka.topics.check_namespace` (never the live one,
    never a topic or agent name) and every topic and group deleted passes
    :func:`streams.kafka.topics.owned_by`; the folder is resolved and must lie under
    ``<data_dir>/replays``. Planning and dropping are separate steps so that the CLI can show
    the plan and ask before anything is deleted.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streams.kafka.rdkafka import rdkafka_config
from streams.kafka.topics import check_namespace, owned_by
from streams.logs import get_logger
from streams.replay.runner import ReplayError, checked_namespace, read_manifests, replay_dir, replays_root
from streams.settings import Settings

log = get_logger(__name__)
ADMIN_TIMEOUT_S = 30.0


def list_replays(live: Settings) -> list[dict[str, Any]]:
    root = replays_root(live)
    found: list[dict[str, Any]] = []
    for directory in sorted(root.glob("*")) if root.exists() else []:
        try:
            check_namespace(directory.name, live.namespace)
        except ValueError:
            continue  # not a namespace folder: a name no replay could have
        with contextlib.suppress(ReplayError, TypeError, json.JSONDecodeError):
            found.extend(
                {
                    "namespace": manifest.namespace,
                    "source_topic": manifest.source_topic,
                    "records": manifest.records,
                    "models": [f"{m['name']}@{m['version'][:12]}" for m in manifest.models],
                    "caught_up": manifest.caught_up,
                    "started_at_ms": manifest.started_at_ms,
                    "finished_at_ms": manifest.finished_at_ms,
                }
                for manifest in read_manifests(directory).values()
            )
    return found


@dataclass(frozen=True)
class DropPlan:
    """Everything ``replay drop`` deletes for one namespace, found before anything is deleted."""

    namespace: str
    topics: list[str]
    groups: list[str]
    folder: str | None  # None when the namespace has no folder here

    @property
    def empty(self) -> bool:
        return not (self.topics or self.groups or self.folder)

    def describe(self) -> str:
        """The plan for a person: one line per thing deleted."""
        lines = [f"namespace {self.namespace}:"]
        lines += [f"  topic  {name}" for name in self.topics] or ["  (no topics)"]
        lines += [f"  group  {name}" for name in self.groups] or ["  (no consumer groups)"]
        lines.append(f"  folder {self.folder}" if self.folder else "  (no folder)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _admin(live: Settings) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient(rdkafka_config(live))


def _droppable(live: Settings, name: str, namespace: str) -> bool:
    """Whether topic or group ``name`` belongs to ``namespace`` and not to the configured live one.

    The live namespace may itself look like a replay's child (``r1-embed`` beside replay ``r1``):
    what it owns is never dropped.
    """
    return owned_by(name, namespace) and not (live.namespace and owned_by(name, live.namespace))


def plan_drop(live: Settings, namespace: str) -> DropPlan:
    """What dropping ``namespace`` deletes: its topics, its consumer groups and its folder."""
    checked_namespace(namespace, live.namespace)
    admin = _admin(live)
    topics = sorted(
        name for name in admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics if _droppable(live, name, namespace)
    )
    listed = admin.list_consumer_groups(request_timeout=ADMIN_TIMEOUT_S).result()
    groups = sorted(g.group_id for g in listed.valid if _droppable(live, g.group_id, namespace))
    folder = replay_dir(live, namespace)
    return DropPlan(namespace, topics, groups, str(folder) if folder.exists() else None)


def drop_namespace(live: Settings, plan: DropPlan) -> None:
    """Delete what ``plan`` lists (checked again: a plan from elsewhere cannot widen it)."""
    from confluent_kafka import KafkaException

    checked_namespace(plan.namespace, live.namespace)
    outside = [name for name in [*plan.topics, *plan.groups] if not _droppable(live, name, plan.namespace)]
    if outside:
        raise ReplayError(f"refusing to drop {outside}: they do not belong to namespace {plan.namespace}")
    admin = _admin(live)
    failures: list[str] = []
    if plan.groups:
        # Groups go first: a group with members cannot be deleted, and then nothing else should be.
        for group, future in admin.delete_consumer_groups(plan.groups, request_timeout=ADMIN_TIMEOUT_S).items():
            try:
                future.result()
            except KafkaException as error:
                failures.append(f"group {group}: {error.args[0].str() if error.args else error}")
        if failures:
            raise ReplayError(
                "could not delete consumer groups (stop the namespace's workers first, then drop again):\n  "
                + "\n  ".join(failures)
            )
    if plan.topics:
        for topic, future in admin.delete_topics(plan.topics, operation_timeout=ADMIN_TIMEOUT_S).items():
            try:
                future.result()
            except KafkaException as error:
                failures.append(f"topic {topic}: {error.args[0].str() if error.args else error}")
    if plan.folder:
        folder = replay_dir(live, plan.namespace)
        if folder != Path(plan.folder):
            raise ReplayError(f"refusing to remove {plan.folder}: namespace {plan.namespace}'s folder is {folder}")
        shutil.rmtree(folder, ignore_errors=True)
    if failures:
        raise ReplayError("some of the namespace could not be deleted:\n  " + "\n  ".join(failures))
    log.info("replay namespace dropped", namespace=plan.namespace, topics=len(plan.topics), groups=len(plan.groups))
