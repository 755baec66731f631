"""ACLs enforced on the embedded broker (KRaft StandardAuthorizer, SASL/SCRAM): an admin grants each
principal what `llmops kafka acls` says it needs; a publisher and an ingest worker do their work with
their own principals, and a principal writing a topic it has no ACL for is refused in one clear line."""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import replace

import pytest
from pydantic import SecretStr

from streams.acls import role_grants, worker_grants
from streams.admin import ensure_topics, offsets
from streams.broker import EmbeddedKafka
from streams.broker_security import BrokerSecurity
from streams.demo import wait_until_consumed
from streams.settings import Settings
from streams.topics import Topics

from ..conftest import ROOT, WorkerProcess, run, run_cli
from .helpers import account_raw, fault_port, fresh, report

USERS = ("llmops-ingest", "llmops-publisher")


@pytest.fixture
def cluster_with_acls(settings: Settings) -> Iterator[tuple[Settings, dict[str, Settings]]]:
    """A SCRAM broker enforcing ACLs (port ``LLMOPS_TEST_KAFKA_PORT - 10``): admin settings, and
    settings for each per-agent principal (created when storage is formatted, with no grant yet)."""
    port = fault_port(10)
    admin = settings.model_copy(
        update={
            "bootstrap_servers": f"127.0.0.1:{port}",
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "llmops-admin",
            "sasl_password": SecretStr("pw-" + secrets.token_urlsafe(18)),
            "kafka_authorizer": True,
        }
    )
    principals = {
        user: admin.model_copy(update={"sasl_username": user, "sasl_password": SecretStr(secrets.token_urlsafe(18))})
        for user in USERS
    }
    security = BrokerSecurity.from_settings(admin)
    assert security is not None
    security = replace(security, users=tuple((u, s.sasl_password) for u, s in principals.items() if s.sasl_password))
    broker = EmbeddedKafka(ROOT / ".llmops" / "kafka", port=port, heap="256m", security=security)
    shutil.rmtree(broker.home / f"tls-{port}", ignore_errors=True)
    with fresh(broker):
        yield admin, principals


def test_each_principal_does_its_work_with_only_its_grants_and_is_refused_elsewhere(
    cluster_with_acls: tuple[Settings, dict[str, Settings]],
) -> None:
    admin, principals = cluster_with_acls
    ingest, publisher = principals["llmops-ingest"], principals["llmops-publisher"]
    topics = Topics(admin.namespace)
    run(ensure_topics(admin))  # an operator creates the topics; workers may not

    # Before any grant: refused, and the message says who, what and where the grants come from.
    refused_early = run_cli(publisher, "publish", "--corpus", "stdlib", "--limit", "2")
    assert refused_early.returncode == 2, refused_early.stderr[-2000:]
    (early,) = [line for line in refused_early.stderr.splitlines() if line.startswith("Error: ")]
    assert "refused user 'llmops-publisher' a cluster operation" in early and "llmops kafka acls" in early, early
    applied = {}
    for user, args in (("llmops-ingest", ["--agents", "ingest"]), ("llmops-publisher", ["--role", "publisher"])):
        result = run_cli(admin, "kafka", "acls", *args, "--principal", user, "--apply", "--json")
        assert result.returncode == 0, result.stderr
        applied[user] = json.loads(result.stdout)["applied"]
    assert applied == {
        "llmops-ingest": len(worker_grants(admin.namespace, ["ingest"], "llmops-ingest")),
        "llmops-publisher": len(role_grants(admin.namespace, "publisher", "llmops-publisher")),
    }

    worker = WorkerProcess(ingest, agents="ingest").start()
    try:
        published = run_cli(publisher, "publish", "--corpus", "stdlib", "--limit", "30", "--json")
        assert published.returncode == 0, published.stderr[-2000:]
        _, end = run(offsets(admin, [topics.docs_raw]))
        consumed = run(wait_until_consumed(admin, topics.app_id("ingest"), end, 180.0, alive=worker.alive))
        assert consumed, worker.log_tail()
    finally:
        code = worker.stop()
    assert code == 0, worker.log_tail()
    summary = account_raw(admin)
    assert summary["accounted"] and summary["published"] == 30, summary
    worker_log = worker.log.read_text(errors="replace")
    assert "AuthorizationFailed" not in worker_log, "the ingest worker needed a grant it does not have"

    # The ingest principal writing docs.embeddings (the embed agent's output): refused.
    refused = run_cli(ingest, "publish", "--corpus", "stdlib", "--limit", "2", "--topic", topics.docs_embeddings)
    assert refused.returncode == 2, refused.stderr[-2000:]
    message = refused.stderr.strip().splitlines()[-1]
    assert f"refused user 'llmops-ingest' access to topic {topics.docs_embeddings}" in message, message
    assert "llmops kafka acls" in message
    passwords = [s.sasl_password.get_secret_value() for s in (admin, ingest, publisher) if s.sasl_password]
    assert not any(p in worker_log + refused.stderr + published.stderr for p in passwords)
    report(
        "ACLs enforced (StandardAuthorizer) with a principal per agent",
        grants_applied=applied,
        documents=30,
        accounted=summary["accounted"],
        refused_before_grants=early,
        refused_message=message,
        worker_exit_code=code,
    )
