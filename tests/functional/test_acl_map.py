"""The ACL map's read side is what the Faust agents really subscribe to (one source of truth)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.app import AGENT_GROUPS, create_app
from streams.kafka.acls import worker_grants
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# Read by consumers of their own, not Faust agents: the registry follower (aiokafka) reads
# models.control; agents.request_consumer (librdkafka) reads inference.requests, in the group
# <worker group>-requests, and the monitor's reader of every tenant's reply topic (a prefix).
NOT_A_FAUST_AGENT = {
    "infer": {"acl1.models.control", "acl1.inference.requests"},
    "index": {"acl1.models.control", "acl1.docs.raw"},  # the index builds' own consumers
    # the monitor's registry follower (index switches) and its reader of every tenant's reply topic
    "monitor": {"acl1.models.control", "acl1.inference.responses.tenant."},
}


@pytest.mark.parametrize("group", AGENT_GROUPS)
def test_each_agent_group_may_read_exactly_the_topics_its_agents_subscribe_to(group: str, tmp_path: Path) -> None:
    settings = Settings(namespace="acl1", data_dir=tmp_path, models_dir=ROOT / ".llmops" / "models")
    app = create_app(settings, [group])
    subscribed = {topic for agent in app.agents.values() for topic in agent.channel.topics}
    granted = {
        g.resource
        for g in worker_grants("acl1", [group], "svc")
        if g.operation == "READ" and g.resource_type == "TOPIC"
    }
    assert subscribed or group in NOT_A_FAUST_AGENT, "a group reads something"
    assert granted - subscribed == NOT_A_FAUST_AGENT.get(group, set())
    assert subscribed <= granted
