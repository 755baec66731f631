"""The ACL map: least privilege per agent group and client role, named after namespace and agent set."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.app import AGENT_GROUPS
from streams.kafka.acls import AGENT_ACCESS, AclGrant, default_grants, markdown_table, role_grants, worker_grants


def test_an_ingest_worker_reads_docs_raw_writes_its_outputs_and_owns_its_group_and_internal_topics() -> None:
    grants = worker_grants("r1", ["ingest"], "svc")
    assert {(g.operation, g.resource_type, g.resource, g.pattern) for g in grants} == {
        ("READ", "TOPIC", "r1.docs.raw", "LITERAL"),
        ("WRITE", "TOPIC", "r1.docs.clean", "LITERAL"),
        ("WRITE", "TOPIC", "r1.docs.duplicates", "LITERAL"),
        ("WRITE", "TOPIC", "r1.deadletter", "LITERAL"),
        ("WRITE", "TOPIC", "r1.telemetry.spans", "LITERAL"),
        ("READ", "GROUP", "llmops-r1-ingest", "LITERAL"),
        ("ALL", "TOPIC", "llmops-r1-ingest-", "PREFIXED"),
    }
    assert {g.principal for g in grants} == {"User:svc"}


def test_a_worker_of_several_agents_gets_the_union_and_one_group_named_after_the_set() -> None:
    grants = worker_grants("", ["index", "embed"], "svc")
    reads = {g.resource for g in grants if g.operation == "READ" and g.resource_type == "TOPIC"}
    assert reads == {"docs.clean", "docs.embeddings", "docs.raw", "models.control"}  # index builds read the last two
    groups = [(g.resource, g.pattern) for g in grants if g.resource_type == "GROUP"]
    assert groups == [("llmops-live-embed_index", "LITERAL"), ("llmops-live-index-build-", "PREFIXED")]
    assert len(grants) == len(set(grants)), "no grant twice"


# Written and read by the monitor without a loop: the questions it asks again at an index switch
# carry its own client id, which its windows skip, and a reference it writes is only loaded back.
READ_BACK_SAFELY = {"monitor": {"inference.requests", "monitor.reference"}}


def test_no_agent_may_write_what_it_reads() -> None:
    for agent, access in AGENT_ACCESS.items():
        assert set(access.reads) & set(access.writes) == READ_BACK_SAFELY.get(agent, set()), agent


def test_only_the_model_manager_may_write_the_registry() -> None:
    writers = {
        principal
        for principal, grants in default_grants("").items()
        for grant in grants
        if grant.resource == "models.control" and grant.operation in ("WRITE", "ALL")
    }
    assert writers == {"llmops-model-manager"}
    infer = worker_grants("", ["infer"], "svc")
    assert ("READ", "models.control") in {(g.operation, g.resource) for g in infer}


def test_every_agent_group_and_role_has_a_principal_and_nothing_is_granted_cluster_wide() -> None:
    grants = default_grants("")
    roles = {"llmops-publisher", "llmops-inference-client", "llmops-tenant-client", "llmops-model-manager"}
    assert set(grants) == {f"llmops-{a}" for a in AGENT_GROUPS} | roles
    assert all(g.resource_type in ("TOPIC", "GROUP") for group in grants.values() for g in group)
    assert role_grants("", "publisher", "up") == [AclGrant("User:up", "WRITE", "TOPIC", "docs.raw")]


def test_a_tenant_client_reads_only_its_tenants_replies_and_infer_writes_them_by_prefix() -> None:
    acme = role_grants("r1", "tenant-client", "svc-acme", "acme")
    reads = {(g.resource, g.pattern) for g in acme if g.operation == "READ" and g.resource_type == "TOPIC"}
    assert reads == {("r1.inference.responses.tenant.acme", "LITERAL")}  # not the shared one, not a prefix
    assert {g.resource for g in acme if g.operation == "WRITE"} == {"r1.inference.requests", "r1.feedback"}
    infer = {(g.operation, g.resource, g.pattern) for g in worker_grants("r1", ["infer"], "svc")}
    assert ("WRITE", "r1.inference.responses.tenant.", "PREFIXED") in infer
    assert not any(op == "CREATE" for op, _, _ in infer), "a request must not make the worker create topics"
    monitor = {(g.operation, g.resource_type, g.resource, g.pattern) for g in worker_grants("r1", ["monitor"], "svc")}
    assert ("READ", "TOPIC", "r1.inference.responses.tenant.", "PREFIXED") in monitor
    assert ("READ", "GROUP", "llmops-r1-monitor-tenant-responses", "LITERAL") in monitor
    with pytest.raises(ValueError, match="--tenant"):
        role_grants("", "tenant-client", "svc")
    with pytest.raises(ValueError, match="not an identifier"):
        role_grants("", "tenant-client", "svc", "a*")  # a prefix wildcard would grant every tenant


def test_unknown_agents_and_roles_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown agents"):
        worker_grants("", ["ingest", "translate"], "svc")
    with pytest.raises(ValueError, match="unknown role"):
        role_grants("", "admin", "svc")


def test_the_security_guide_table_is_the_one_the_code_makes() -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    assert markdown_table() in guide, (
        "the ACL table of docs/security.md differs from streams.kafka.acls.markdown_table(): paste it again"
    )
