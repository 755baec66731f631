"""Kafka ACLs each agent group and client role needs (least privilege), and granting them.

Why this exists:
    With ACLs enforced, a worker may read and write only its own topics. Which topics those are
    is written once, here (:data:`AGENT_ACCESS`, :data:`ROLE_ACCESS`): the table in docs/security.md,
    ``llmops kafka acls`` and the grants it applies all come from it, and a test checks the read
    side against the topics the Faust agents really subscribe to.

Usage:
    >>> grants = worker_grants("", ["ingest"], "llmops-ingest")
    >>> grants[2].line()
    'User:llmops-ingest ALLOW READ TOPIC docs.raw'
    >>> await apply_grants(admin_settings, grants)       # AdminClient.create_acls, as a super user

Notes:
    Read, Write and the rest imply Describe in Kafka, so no Describe grants are listed. A worker's
    consumer group and Faust's internal topics (table changelogs, the assignor's topic) are named
    after the set of agents it runs (``Topics.app_id``): the grants name that group and that topic
    prefix. Topics themselves are created by an operator (``llmops kafka topics``); a worker that
    may not create one leaves it be.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from streams.kafka.topics import (
    DEADLETTER,
    DOCS_CLEAN,
    DOCS_DUPLICATES,
    DOCS_EMBEDDINGS,
    DOCS_RAW,
    FEEDBACK,
    INDEX_BUILD_GROUP,
    INFERENCE_CLIENTS,
    INFERENCE_REQUESTS,
    INFERENCE_RESPONSES,
    INFERENCE_SHADOW,
    MODELS_CONTROL,
    MONITOR_ALERTS,
    MONITOR_METRICS,
    MONITOR_REFERENCE,
    TELEMETRY_SPANS,
    TENANT_RESPONSES_PREFIX,
    Topics,
)
from streams.records import tenant_problem
from streams.settings import Settings


@dataclass(frozen=True)
class Access:
    """Base topic names read and written by an agent group or a client role.

    ``groups``: base names of consumer groups a client role may read (``Topics.group``). A role
    never joins them; a librdkafka consumer still looks up its group's coordinator.
    """

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    prefix_reads: tuple[str, ...] = ()  # base-name prefixes read (every tenant's reply topic)
    prefix_writes: tuple[str, ...] = ()  # base-name prefixes written (every tenant's reply topic)
    tenant_replies: bool = False  # reads the reply topic of the one tenant it is granted for


# Every agent writes dead letters and spans (the worker's span exporter writes telemetry.spans).
AGENT_ACCESS: dict[str, Access] = {
    "ingest": Access((DOCS_RAW,), (DOCS_CLEAN, DOCS_DUPLICATES, DEADLETTER, TELEMETRY_SPANS)),
    "embed": Access((DOCS_CLEAN,), (DOCS_EMBEDDINGS, DEADLETTER, TELEMETRY_SPANS)),
    # index also builds candidate index versions: it follows models.control and re-reads docs.raw,
    # each build in a consumer group of its own (``llmops-<ns>-index-build-<version>``).
    "index": Access((DOCS_EMBEDDINGS, DOCS_RAW, MODELS_CONTROL), (DEADLETTER, TELEMETRY_SPANS)),
    # infer follows (only reads) the registry on models.control; a control event it refuses raises
    # an alert on monitor.alerts. Only the model-manager role writes models.control. It answers a
    # tenant on that tenant's own reply topic, which an operator creates (never the worker).
    "infer": Access(
        (INFERENCE_REQUESTS, MODELS_CONTROL),
        (INFERENCE_RESPONSES, INFERENCE_SHADOW, MONITOR_ALERTS, DEADLETTER, TELEMETRY_SPANS),
        prefix_writes=(TENANT_RESPONSES_PREFIX,),
    ),
    # monitor also follows index switches on models.control: it asks recent questions again, pinned
    # to the new index (as an inference client), and stores the scores sample on monitor.reference.
    "monitor": Access(
        (DOCS_EMBEDDINGS, INFERENCE_REQUESTS, INFERENCE_RESPONSES, FEEDBACK, MONITOR_REFERENCE, MODELS_CONTROL),
        (MONITOR_METRICS, MONITOR_ALERTS, MONITOR_REFERENCE, INFERENCE_REQUESTS, DEADLETTER, TELEMETRY_SPANS),
        prefix_reads=(TENANT_RESPONSES_PREFIX,),
    ),
}
# Clients that are not workers. They read assigned partitions and never join a consumer group.
ROLE_ACCESS: dict[str, Access] = {
    "publisher": Access((), (DOCS_RAW,)),
    # Without a tenant: the shared replies, which never hold a tenant's answers.
    "inference-client": Access((INFERENCE_RESPONSES,), (INFERENCE_REQUESTS, FEEDBACK), (INFERENCE_CLIENTS,)),
    # One tenant's applications: its own reply topic only (`--tenant NAME`); tenant B's is not readable.
    "tenant-client": Access((), (INFERENCE_REQUESTS, FEEDBACK), (INFERENCE_CLIENTS,), tenant_replies=True),
    # `llmops models ...` (train, register, evaluate, promote, roll back; shadow-report reads
    # inference.shadow): the one principal that may write models.control. It holds the signing key.
    "model-manager": Access((MODELS_CONTROL, INFERENCE_SHADOW), (MODELS_CONTROL,)),
}


@dataclass(frozen=True, order=True)
class AclGrant:
    """One ALLOW binding: principal, operation, resource (type, pattern type, name)."""

    principal: str  # "User:<name>"
    operation: str  # READ | WRITE | CREATE | ALL
    resource_type: str  # TOPIC | GROUP
    resource: str
    pattern: str = "LITERAL"  # LITERAL | PREFIXED

    def line(self) -> str:
        prefixed = " (prefix)" if self.pattern == "PREFIXED" else ""
        return f"{self.principal} ALLOW {self.operation} {self.resource_type} {self.resource}{prefixed}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _topic_grants(principal: str, access: Iterable[Access], topics: Topics) -> list[AclGrant]:
    accesses = list(access)
    reads = {topics.name(base) for a in accesses for base in a.reads}
    writes = {topics.name(base) for a in accesses for base in a.writes}
    prefix_reads = {topics.name(base) for a in accesses for base in a.prefix_reads}
    prefix_writes = {topics.name(base) for a in accesses for base in a.prefix_writes}
    return (
        [AclGrant(principal, "READ", "TOPIC", name) for name in reads]
        + [AclGrant(principal, "WRITE", "TOPIC", name) for name in writes]
        + [AclGrant(principal, "READ", "TOPIC", name, "PREFIXED") for name in prefix_reads]
        + [AclGrant(principal, "WRITE", "TOPIC", name, "PREFIXED") for name in prefix_writes]
    )


def worker_grants(namespace: str, agents: Sequence[str], username: str) -> list[AclGrant]:
    """Everything a worker running ``agents`` as SASL user ``username`` needs, nothing more."""
    unknown = sorted(set(agents) - set(AGENT_ACCESS))
    if unknown:
        raise ValueError(f"unknown agents {unknown}; choose from {list(AGENT_ACCESS)}")
    topics = Topics(namespace)
    principal = f"User:{username}"
    group = topics.app_id(*agents)
    grants = _topic_grants(principal, (AGENT_ACCESS[agent] for agent in agents), topics)
    grants.append(AclGrant(principal, "READ", "GROUP", group))
    if "infer" in agents:  # the infer agent reads inference.requests in a group of its own
        grants.append(AclGrant(principal, "READ", "GROUP", topics.requests_group(*agents)))
    if "index" in agents:  # each index version's build reads docs.raw in a group of its own
        grants.append(AclGrant(principal, "READ", "GROUP", topics.group(INDEX_BUILD_GROUP), "PREFIXED"))
    if "monitor" in agents:  # and the monitor reads the tenants' reply topics in one of its own
        grants.append(AclGrant(principal, "READ", "GROUP", topics.tenant_responses_group(*agents)))
        # At an index switch it is an inference client, and reads how far a candidate's build got.
        grants.append(AclGrant(principal, "READ", "GROUP", topics.group(INFERENCE_CLIENTS)))
        grants.append(AclGrant(principal, "READ", "GROUP", topics.group(INDEX_BUILD_GROUP), "PREFIXED"))
    # Faust's own topics: <group>-<table>-changelog and <group>-__assignor-__leader, which it creates.
    grants.append(AclGrant(principal, "ALL", "TOPIC", f"{group}-", "PREFIXED"))
    return sorted(grants)


def role_grants(namespace: str, role: str, username: str, tenant: str | None = None) -> list[AclGrant]:
    """What a non-worker client role (``publisher``, ``inference-client``, ``tenant-client``, ``model-manager``) needs.

    Raises:
        ValueError: an unknown role, or ``tenant-client`` without a valid ``tenant``.
    """
    if role not in ROLE_ACCESS:
        raise ValueError(f"unknown role {role!r}; choose from {list(ROLE_ACCESS)}")
    topics, access = Topics(namespace), ROLE_ACCESS[role]
    grants = _topic_grants(f"User:{username}", [access], topics)
    if access.tenant_replies:
        why = tenant_problem(tenant) if tenant else f"role {role!r} is granted for one tenant: name it (--tenant NAME)"
        if why:
            raise ValueError(why)
        grants.append(AclGrant(f"User:{username}", "READ", "TOPIC", topics.responses_for(tenant)))
    # READ implies DESCRIBE, which the coordinator lookup needs.
    grants += [AclGrant(f"User:{username}", "READ", "GROUP", topics.group(base)) for base in access.groups]
    return sorted(grants)


EXAMPLE_TENANT = "acme"  # what the listing shows for a role granted per tenant


def default_grants(namespace: str) -> dict[str, list[AclGrant]]:
    """One principal per agent group (``llmops-<group>``) and per client role, each with its grants.

    A per-tenant role is shown for the tenant :data:`EXAMPLE_TENANT`.
    """
    grants = {f"llmops-{agent}": worker_grants(namespace, [agent], f"llmops-{agent}") for agent in AGENT_ACCESS}
    grants.update(
        {f"llmops-{role}": role_grants(namespace, role, f"llmops-{role}", EXAMPLE_TENANT) for role in ROLE_ACCESS}
    )
    return grants


def markdown_table() -> str:
    """The ACL table of docs/security.md, from :data:`AGENT_ACCESS` and :data:`ROLE_ACCESS`."""

    def names(bases: Iterable[str]) -> str:
        return ", ".join(f"`{base}`" for base in sorted(bases))

    def prefixes(access: Access) -> list[str]:
        return [f"`{base}` (Read)" for base in access.prefix_reads] + [
            f"`{base}` (Write)" for base in access.prefix_writes
        ]

    rows = [
        "| principal | topics: Read | topics: Write | consumer group: Read | topics by prefix |",
        "| --- | --- | --- | --- | --- |",
    ]
    own_groups = {"infer": ("requests",), "monitor": ("tenant-responses",)}
    builds = f"`llmops-<ns>-{INDEX_BUILD_GROUP}` (prefix)"
    other_groups = {"index": (builds,), "monitor": (f"`llmops-<ns>-{INFERENCE_CLIENTS}` (looked up)", builds)}
    for agent, access in AGENT_ACCESS.items():
        group = f"llmops-<ns>-{agent}"
        groups = ", ".join(
            [
                f"`{group}`",
                *(f"`{group}-{suffix}`" for suffix in own_groups.get(agent, ())),
                *other_groups.get(agent, ()),
            ]
        )
        by_prefix = ", ".join([f"`{group}-` (All)", *prefixes(access)])
        rows.append(
            f"| `llmops-{agent}` ({agent} worker) | {names(access.reads)} | {names(access.writes)} "
            f"| {groups} | {by_prefix} |"
        )
    for role, access in ROLE_ACCESS.items():
        groups = f" {names(f'llmops-<ns>-{base}' for base in access.groups)} (looked up, never joined)"
        groups = groups if access.groups else ""
        reads = [*access.reads, *((f"{TENANT_RESPONSES_PREFIX}<tenant>",) if access.tenant_replies else ())]
        rows.append(f"| `llmops-{role}` | {names(reads)} | {names(access.writes)} |{groups} | |")
    return "\n".join(rows) + "\n"


class AclError(RuntimeError):
    """The broker refused to create a grant; the message names it and the broker's reason."""


def acl_binding(grant: AclGrant) -> Any:
    """``grant`` as confluent-kafka's ``AclBinding`` (ALLOW, from any host)."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    return AclBinding(
        ResourceType[grant.resource_type],
        grant.resource,
        ResourcePatternType[grant.pattern],
        grant.principal,
        "*",
        AclOperation[grant.operation],
        AclPermissionType.ALLOW,
    )


def create_acls(settings: Settings, grants: Sequence[AclGrant], timeout: float = 30.0) -> int:
    """Create ``grants`` with confluent-kafka's ``AdminClient.create_acls``; return how many.

    Blocking (librdkafka waits on its own threads): :func:`apply_grants` runs it off the event loop.

    Raises:
        AclError: the broker refused a grant (the first refusal is named, with the broker's reason).
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from streams.kafka.rdkafka import rdkafka_config

    if not grants:
        return 0
    admin = AdminClient(rdkafka_config(settings))
    bindings = {acl_binding(grant): grant for grant in grants}
    futures = admin.create_acls(list(bindings), request_timeout=timeout)
    for binding, future in futures.items():
        try:
            future.result()
        except KafkaException as error:
            raise AclError(f"the broker refused '{bindings[binding].line()}': {error.args[0].str()}") from None
    return len(bindings)


async def apply_grants(settings: Settings, grants: Iterable[AclGrant]) -> int:
    """Create ``grants`` (existing bindings are kept); return how many.

    ``settings`` must authenticate a principal allowed to alter ACLs (the embedded broker's super
    user).
    """
    import asyncio

    return await asyncio.to_thread(create_acls, settings, sorted(set(grants)))
