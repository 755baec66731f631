"""Topic names and their configuration: the one place that names a topic.

Why this exists:
    Topic names are data that users, agents and tests share. Every name takes the optional
    namespace prefix (``<namespace>.docs.raw``), which is how a replay runs beside live
    traffic without touching it. Partition counts and configs are explicit so that topics are
    never auto-created with broker defaults.

Usage:
    >>> from streams.kafka.topics import Topics
    >>> Topics("replay1").docs_raw
    'replay1.docs.raw'
    >>> Topics("").docs_raw
    'docs.raw'
    >>> check_namespace("r1")                      # a namespace a replay may create and drop
    'r1'

Namespaces:
    :func:`check_namespace` is the one check of a namespace given by a person (``replay run``,
    ``diff``, ``drop``); :func:`owned_by` tells whether a topic or consumer group belongs to one,
    so that dropping ``r1`` can never reach live traffic, ``r1-b`` or anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.settings import LIVE_GROUP_SEGMENT, namespace_problem
from streams.worker_process import ALL_AGENTS

DOCS_RAW = "docs.raw"
DOCS_CLEAN = "docs.clean"
DOCS_DUPLICATES = "docs.duplicates"
DOCS_EMBEDDINGS = "docs.embeddings"
DEADLETTER = "deadletter"
INFERENCE_REQUESTS = "inference.requests"
INFERENCE_RESPONSES = "inference.responses"
# Replies to a tenant's requests go to a topic of that tenant's own, never to the shared one: Kafka
# ACLs grant by topic (not by key), so a topic per tenant is what lets tenant A's principal read
# its own answers and not tenant B's. ``<ns>.inference.responses.tenant.<tenant>``.
TENANT_RESPONSES_PREFIX = INFERENCE_RESPONSES + ".tenant."
INFERENCE_SHADOW = "inference.shadow"
FEEDBACK = "feedback"
MONITOR_METRICS = "monitor.metrics"
MONITOR_ALERTS = "monitor.alerts"
MONITOR_REFERENCE = "monitor.reference"
MODELS_CONTROL = "models.control"
TELEMETRY_SPANS = "telemetry.spans"
# Consumer group (base name) of inference clients' response readers: looked up, never joined.
INFERENCE_CLIENTS = "inference-clients"
# Consumer groups (base-name prefix) of index builds: ``index-build-<first 16 hex of the version>``.
INDEX_BUILD_GROUP = "index-build-"

ALL_BASE_NAMES = (
    DOCS_RAW,
    DOCS_CLEAN,
    DOCS_DUPLICATES,
    DOCS_EMBEDDINGS,
    DEADLETTER,
    INFERENCE_REQUESTS,
    INFERENCE_RESPONSES,
    INFERENCE_SHADOW,
    FEEDBACK,
    MONITOR_METRICS,
    MONITOR_ALERTS,
    MONITOR_REFERENCE,
    MODELS_CONTROL,
    TELEMETRY_SPANS,
)

# models.control is the registry's source of truth: keep the latest event per model key forever.
# monitor.reference keeps the drift reference across restarts, readable by a worker on any machine.
COMPACTED = {
    MODELS_CONTROL: {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
    MONITOR_REFERENCE: {"cleanup.policy": "compact", "min.compaction.lag.ms": "0", "max.message.bytes": "4194304"},
}
# Control topics are low-volume; one partition keeps a total order of registry events.
SINGLE_PARTITION = {MODELS_CONTROL, MONITOR_REFERENCE}
# No part of a namespace between dashes may be one of these: `docs` would own the live
# `docs.raw`, `live` the live groups, and `r1-embed` would make `llmops-r1-embed-...` ambiguous.
RESERVED_NAMESPACE_WORDS = frozenset(
    {LIVE_GROUP_SEGMENT, "llmops", "clients", *ALL_AGENTS}
    | {part for base in ALL_BASE_NAMES for part in base.split(".")}
)


class NamespaceError(ValueError):
    """A namespace that must not be created or dropped; the message says what is allowed."""


def check_namespace(name: str, live: str = "") -> str:
    """Return ``name`` if a replay may create, diff and drop it; raise :class:`NamespaceError` if not.

    Args:
        name: the namespace given on the command line.
        live: the live namespace (``LLMOPS_NAMESPACE``, usually empty); it is never a replay's.
    """
    if not name or name == live:
        raise NamespaceError("the namespace must be one other than the live one (e.g. r1)")
    problem = namespace_problem(name)
    if problem:
        raise NamespaceError(problem)
    reserved = sorted(set(name.split("-")) & RESERVED_NAMESPACE_WORDS)
    if reserved:
        raise NamespaceError(
            f"a namespace may not contain the reserved word(s) {reserved} between dashes (topic, agent and "
            "live names); choose another, e.g. r1"
        )
    return name


def owned_by(name: str, namespace: str) -> bool:
    """Whether topic or consumer group ``name`` belongs to ``namespace`` (and to no other).

    A namespace owns its topics (``<ns>.<base>``), the groups and Faust internal topics of its
    workers (``llmops-<ns>-<agent>_<agent>...``) and its inference clients' group. Because no
    part of a namespace may be an agent name, ``llmops-r1-b-embed...`` belongs to ``r1-b``,
    never to ``r1``.
    """
    if name.startswith(f"{namespace}."):
        return True
    prefix = f"llmops-{namespace or LIVE_GROUP_SEGMENT}-"
    if not name.startswith(prefix):
        return False
    rest = name[len(prefix) :]
    if rest == INFERENCE_CLIENTS:
        return True
    head = rest.split("-", 1)[0]
    return bool(head) and all(agent in ALL_AGENTS for agent in head.split("_"))


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: its full name, partition count and configs."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Topics:
    """Full topic names for one namespace (``""`` = live traffic)."""

    namespace: str = ""

    def name(self, base: str) -> str:
        """Return ``base`` with the namespace prefix, if any."""
        return f"{self.namespace}.{base}" if self.namespace else base

    @property
    def docs_raw(self) -> str:
        return self.name(DOCS_RAW)

    @property
    def docs_clean(self) -> str:
        return self.name(DOCS_CLEAN)

    @property
    def docs_duplicates(self) -> str:
        return self.name(DOCS_DUPLICATES)

    @property
    def docs_embeddings(self) -> str:
        return self.name(DOCS_EMBEDDINGS)

    @property
    def inference_requests(self) -> str:
        return self.name(INFERENCE_REQUESTS)

    @property
    def inference_responses(self) -> str:
        return self.name(INFERENCE_RESPONSES)

    @property
    def tenant_responses_prefix(self) -> str:
        """The prefix every tenant's reply topic of this namespace starts with (ACLs grant by it)."""
        return self.name(TENANT_RESPONSES_PREFIX)

    def responses_for(self, tenant: str | None) -> str:
        """Where replies to a request of ``tenant`` go: its own topic, or the shared one without a tenant.

        ``tenant`` must already be valid (``streams.records.tenant_problem``): requests are checked
        where they are parsed.
        """
        return self.tenant_responses_prefix + tenant if tenant else self.inference_responses

    def is_response_topic(self, name: str) -> bool:
        """Whether ``name`` holds replies: the shared responses topic or a tenant's."""
        return name == self.inference_responses or name.startswith(self.tenant_responses_prefix)

    def tenant_responses_spec(self, tenant: str, partitions: int, replication_factor: int) -> TopicSpec:
        """The reply topic of ``tenant``, configured like the shared one."""
        return TopicSpec(self.responses_for(tenant), partitions, replication_factor)

    @property
    def inference_shadow(self) -> str:
        return self.name(INFERENCE_SHADOW)

    @property
    def feedback(self) -> str:
        return self.name(FEEDBACK)

    @property
    def monitor_metrics(self) -> str:
        return self.name(MONITOR_METRICS)

    @property
    def monitor_alerts(self) -> str:
        return self.name(MONITOR_ALERTS)

    @property
    def monitor_reference(self) -> str:
        return self.name(MONITOR_REFERENCE)

    @property
    def deadletter(self) -> str:
        return self.name(DEADLETTER)

    @property
    def models_control(self) -> str:
        return self.name(MODELS_CONTROL)

    @property
    def telemetry_spans(self) -> str:
        return self.name(TELEMETRY_SPANS)

    def group(self, base: str) -> str:
        """Consumer group ``base`` of this namespace: ``llmops-<namespace, or live>-<base>``."""
        return f"llmops-{self.namespace or 'live'}-{base}"

    def app_id(self, *agents: str) -> str:
        """Faust app id (so consumer group and changelog prefix) of a worker running ``agents``.

        Workers that share partitions must run the same set of agents: the set names the group.
        """
        return self.group("_".join(sorted(agents)))

    def requests_group(self, *agents: str) -> str:
        """Consumer group of ``inference.requests`` in a worker running ``agents``.

        The infer agent reads requests with a consumer of its own (agents/request_consumer.py),
        outside the Faust app's group, so it has a group of its own beside ``app_id``.
        """
        return f"{self.app_id(*agents)}-requests"

    def tenant_responses_group(self, *agents: str) -> str:
        """Consumer group in which the monitor of a worker running ``agents`` reads tenants' replies.

        Faust cannot subscribe to a pattern, so the monitor reads every
        ``inference.responses.tenant.*`` topic with a librdkafka consumer of its own.
        """
        return f"{self.app_id(*agents)}-tenant-responses"

    @property
    def inference_clients_group(self) -> str:
        """The ``group.id`` of inference clients' response readers: never joined, never committed.

        A librdkafka consumer needs a group id and looks up its coordinator even when it only
        reads assigned partitions, so the ``inference-client`` role may describe this one group.
        """
        return self.group(INFERENCE_CLIENTS)

    def specs(self, partitions: int, replication_factor: int) -> list[TopicSpec]:
        """Every topic of this namespace with explicit partitions and configs."""
        return [
            TopicSpec(
                name=self.name(base),
                partitions=1 if base in SINGLE_PARTITION else partitions,
                replication_factor=replication_factor,
                config=dict(COMPACTED.get(base, {})),
            )
            for base in ALL_BASE_NAMES
        ]
