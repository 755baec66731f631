"""`llmops replay drop` on the real broker: it lists what it deletes, asks, and never reaches outside its namespace.

Live traffic here is the empty namespace (topics ``docs.raw``..., groups ``llmops-live-*``) and the
test's own namespace; a sibling replay namespace ``<ns>-b`` shares the dropped one's prefix.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.kafka.admin import client_kwargs, ensure_topics
from streams.kafka.topics import ALL_BASE_NAMES, Topics
from streams.replay.runner import REPLAY_AGENTS, replay_dir, replay_settings
from streams.settings import Settings

from .conftest import run, run_cli


async def commit_group(settings: Settings, group: str, topic: str) -> None:
    """Make consumer group ``group`` exist on the broker, with a committed offset on ``topic``."""
    consumer = AIOKafkaConsumer(**client_kwargs(settings), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.commit({tp: 0})
    finally:
        await consumer.stop()


async def create_topic(settings: Settings, name: str) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        if name not in await admin.list_topics():
            await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()


async def topics_and_groups(settings: Settings) -> tuple[set[str], set[str]]:
    """Every topic, and the consumer groups of live traffic and of this test's namespaces.

    Other tests' groups are left out: the broker deletes an empty group with no committed offset
    on its own, so one may vanish between two listings without anything here touching it.
    """
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        groups = {group[0] for group in await admin.list_consumer_groups()}
        ours = ("llmops-live-", f"llmops-{settings.namespace}-", "llmops-rd")
        return set(await admin.list_topics()), {g for g in groups if g.startswith(ours)}
    finally:
        await admin.close()


def make_namespace(live: Settings, name: str) -> Path:
    """A replay namespace as a run leaves it: topics, a worker group with Faust topics, a folder."""
    target = replay_settings(live, name)
    run(ensure_topics(target))
    app_id = Topics(name).app_id(*REPLAY_AGENTS)
    run(create_topic(target, f"{app_id}-seen-changelog"))
    run(commit_group(target, app_id, Topics(name).docs_raw))
    folder = replay_dir(live, name)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest-docs.raw.json").write_text("{}")
    return folder


def test_drop_lists_asks_and_deletes_only_its_own_namespace(settings: Settings) -> None:
    live_empty = settings.model_copy(update={"namespace": ""})
    run(ensure_topics(live_empty))
    live_group = Topics("").app_id("ingest")
    run(create_topic(live_empty, f"{live_group}-seen-changelog"))
    run(commit_group(live_empty, live_group, Topics("").docs_raw))
    run(ensure_topics(settings))
    (settings.data_dir / "keep.txt").write_text("state")

    name = "rd" + uuid.uuid4().hex[:6]
    folder = make_namespace(settings, name)
    sibling_folder = make_namespace(settings, f"{name}-b")
    before_topics, before_groups = run(topics_and_groups(settings))
    mine = {t for t in before_topics if t.startswith(f"{name}.") or t.startswith(f"llmops-{name}-embed")}
    assert len(mine) == len(ALL_BASE_NAMES) + 1

    for refused in ("..", "../..", "docs", "live", "inference", settings.namespace):
        result = run_cli(settings, "replay", "drop", refused, "--yes", timeout=120)
        assert result.returncode == 1 and "namespace" in result.stderr, (refused, result.stdout, result.stderr)
    result = run_cli(settings.model_copy(update={"namespace": ""}), "replay", "run", "--topic", "docs.raw",
                     "--namespace", "live", timeout=120)  # fmt: skip
    assert result.returncode == 1 and "live" in result.stderr, result.stderr

    result = run_cli(settings, "replay", "drop", name, timeout=120)  # no terminal, no --yes
    assert result.returncode == 1 and "--yes" in result.stderr, result.stderr
    for topic in sorted(mine):
        assert topic in result.stdout, f"the plan lists {topic}:\n{result.stdout}"
    assert Topics(name).app_id(*REPLAY_AGENTS) in result.stdout and str(folder) in result.stdout
    assert run(topics_and_groups(settings)) == (before_topics, before_groups), "nothing is deleted unasked"

    result = run_cli(settings, "replay", "drop", name, "--json", timeout=120)
    plan = json.loads(result.stdout)
    assert set(plan["topics"]) == mine and plan["groups"] == [Topics(name).app_id(*REPLAY_AGENTS)]
    assert plan["folder"] == str(folder) and plan["dropped"] is False

    result = run_cli(settings, "replay", "drop", name, "--yes", timeout=120)
    assert result.returncode == 0, result.stderr
    after_topics, after_groups = run(topics_and_groups(settings))
    assert after_topics == before_topics - mine, "exactly the namespace's topics are gone"
    assert after_groups == before_groups - {Topics(name).app_id(*REPLAY_AGENTS)}
    assert not folder.exists() and sibling_folder.exists() and (settings.data_dir / "keep.txt").exists()
    assert {live_group, Topics(f"{name}-b").app_id(*REPLAY_AGENTS)} <= after_groups
    assert {Topics("").docs_raw, Topics(settings.namespace).docs_raw, Topics(f"{name}-b").docs_raw} <= after_topics
