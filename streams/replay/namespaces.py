"""The replay namespaces on this machine: list them, and drop one with its topics, groups and folder.

Why this exists:
    A replay leaves topics, consumer groups and a folder of its own beside live traffic; people
    list what is there and drop what they no longer need, and nothing outside the namespace
    may ever be touched.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from typing import Any

from streams.kafka.admin import client_kwargs
from streams.logs import get_logger
from streams.replay.runner import ReplayError, read_manifests, replay_dir
from streams.settings import Settings

log = get_logger(__name__)


def list_replays(live: Settings) -> list[dict[str, Any]]:
    root = live.data_dir / "replays"
    found: list[dict[str, Any]] = []
    for directory in sorted(root.glob("*")) if root.exists() else []:
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


async def drop_replay(live: Settings, namespace: str) -> list[str]:
    """Delete the namespace's topics (its own and Faust's), its state and collection; returns topic names."""
    from aiokafka.admin import AIOKafkaAdminClient

    if not namespace or namespace == live.namespace:
        raise ReplayError("refusing to drop the live namespace")
    admin = AIOKafkaAdminClient(**client_kwargs(live))
    await admin.start()
    try:
        names = [
            name
            for name in await admin.list_topics()
            if name.startswith(f"{namespace}.") or name.startswith(f"llmops-{namespace}-")
        ]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()
    shutil.rmtree(replay_dir(live, namespace), ignore_errors=True)
    return sorted(names)
