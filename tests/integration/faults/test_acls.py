"""ACLs enforced on the embedded broker (KRaft StandardAuthorizer, SASL/SCRAM): an admin grants each
principal what `llmops kafka acls` says it needs; a publisher and an ingest worker do their work with
their own principals, and a principal writing a topic it has no ACL for is refused in one clear line."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from streams.kafka.acls import role_grants, worker_grants
from streams.kafka.admin import ensure_topics
from streams.kafka.topics import Topics
from streams.settings import Settings

from ..conftest import run, run_cli
from .helpers import broker_with_acls, passwords_of, publish_and_ingest, refusal, refused_write, report

USERS = ("llmops-ingest", "llmops-publisher")


@pytest.fixture
def cluster_with_acls(settings: Settings) -> Iterator[tuple[Settings, dict[str, Settings]]]:
    """A SCRAM broker enforcing ACLs: admin settings, and settings for each per-agent principal."""
    with broker_with_acls(settings, USERS) as cluster:
        yield cluster


def test_each_principal_does_its_work_with_only_its_grants_and_is_refused_elsewhere(
    cluster_with_acls: tuple[Settings, dict[str, Settings]],
) -> None:
    admin, principals = cluster_with_acls
    ingest, publisher = principals["llmops-ingest"], principals["llmops-publisher"]
    topics = Topics(admin.namespace)
    run(ensure_topics(admin))  # an operator creates the topics; workers may not

    # Before any grant: refused, and the message says who, what and where the grants come from.
    early, _ = refusal(publisher, "publish", "--corpus", "stdlib", "--limit", "2")
    assert "a cluster operation" in early, early
    applied = {}
    for user, args in (("llmops-ingest", ["--agents", "ingest"]), ("llmops-publisher", ["--role", "publisher"])):
        result = run_cli(admin, "kafka", "acls", *args, "--principal", user, "--apply", "--json")
        assert result.returncode == 0, result.stderr
        applied[user] = json.loads(result.stdout)["applied"]
    assert applied == {
        "llmops-ingest": len(worker_grants(admin.namespace, ["ingest"], "llmops-ingest")),
        "llmops-publisher": len(role_grants(admin.namespace, "publisher", "llmops-publisher")),
    }

    summary, ingest_output, code = publish_and_ingest(admin, publisher, ingest, 30)

    # The ingest principal writing docs.embeddings (the embed agent's output): refused.
    message, refused_output = refused_write(ingest, topics.docs_embeddings)
    passwords = passwords_of(admin, ingest, publisher)
    assert not any(p in ingest_output + refused_output for p in passwords)
    report(
        "ACLs enforced (StandardAuthorizer) with a principal per agent",
        grants_applied=applied,
        documents=30,
        accounted=summary["accounted"],
        refused_before_grants=early,
        refused_message=message,
        worker_exit_code=code,
    )
