"""The Faust application that hosts our agents, configured from :class:`Settings`.

Why this exists:
    Every agent group (ingest, embed, index, ...) runs in a Faust app whose id, and so whose
    consumer group and table changelog topics, carries the namespace: a replay in namespace
    ``r1`` never shares offsets or state with live traffic.

Usage:
    >>> telemetry = Telemetry.from_settings(settings)           # span exporters of this process
    >>> app = create_app(Settings(), agents=("ingest",), telemetry=telemetry)
    >>> faust.Worker(app, loglevel="info").execute_from_commandline()   # what `llmops worker` does
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import faust

from agents import faust_fixes
from agents.sre import attach_sre
from streams.kafka.client_security import SettingsTokenProvider, ssl_context
from streams.kafka.topics import Topics, TopicSpec
from streams.settings import Settings
from streams.telemetry.tracing import Telemetry

AGENT_GROUPS = ("ingest", "embed", "index", "infer", "monitor")


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials for the configured Kafka security (TLS, mTLS, SASL, OAUTHBEARER), or None."""
    context = ssl_context(settings)
    if settings.sasl_mechanism == "OAUTHBEARER":
        return faust.OAuthCredentials(oauth_cb=SettingsTokenProvider(settings), ssl_context=context)
    if settings.sasl_mechanism:
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value() if settings.sasl_password else None,
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def create_app(
    settings: Settings, agents: Sequence[str] = AGENT_GROUPS, telemetry: Telemetry | None = None
) -> faust.App:
    """A Faust app with the named agent groups registered; each traces as its own service.

    ``telemetry`` holds the span exporters (None: no spans are recorded; trace headers still
    pass through). The caller flushes it with ``telemetry.shutdown()`` when the worker stops.
    """
    faust_fixes.apply()
    unknown = sorted(set(agents) - set(AGENT_GROUPS))
    if unknown:
        raise ValueError(f"unknown agents {unknown}; choose from {list(AGENT_GROUPS)}")
    topics = Topics(settings.namespace)
    app_id = topics.app_id(*agents)
    datadir = settings.data_dir / "faust" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=[f"kafka://{server.strip()}" for server in settings.bootstrap_servers.split(",")],
        broker_credentials=broker_credentials(settings),
        store="memory://",
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        consumer_auto_offset_reset="earliest",
        # Faust's own default is 60 s: a worker killed without leaving the group would hold its
        # partitions that long. The consumer thread heartbeats even while the event loop is busy.
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_s,
        producer_acks=-1,
        # Same batching as every other producer of the project (streams.kafka.admin.producer): a few
        # milliseconds of linger turn thousands of tiny produce requests into a few large ones.
        producer_linger=0.005,
        producer_max_batch_size=256 * 1024,
        web_enabled=False,
        # Faust's own per-message sensors and monitor cost time on the hot path; we export
        # our own metrics.
        autodiscover=False,
    )
    # Table writes queue in Faust's producer buffer; past `max_messages` (100 by default) the
    # consumer stops delivering until 100 are sent one by one, which stalled ingest for ~13% of
    # its time in bench/ingest_throughput.py. A batch writes one state per document, so allow a
    # few batches' worth.
    app.producer.buffer.max_messages = max(10_000, 4 * settings.ingest_batch_size)
    telemetry = telemetry or Telemetry([], enabled=False)

    def tracer(agent: str, group: str = app_id) -> Any:
        return telemetry.agent_tracer(agent, group=group, namespace=settings.namespace)

    if "ingest" in agents:
        from agents.ingest import register_ingest

        register_ingest(app, settings, tracer("ingest"))
    if "embed" in agents:
        from agents.embed import register_embed

        register_embed(app, settings, tracer("embed"))
    if "index" in agents:
        from agents.index import register_index

        register_index(app, settings, tracer("index"))
        from agents.index_build import register_index_builds

        register_index_builds(app, settings)  # candidate index versions are built where Milvus is owned
    if "infer" in agents:
        from agents.infer import register_infer

        register_infer(app, settings, tracer("infer", topics.requests_group(*agents)), agents)
    if "monitor" in agents:
        from agents.monitor import register_monitor

        register_monitor(app, settings, agents)
    attach_sre(app, settings)  # /readyz checks and lag of the groups above (served by `llmops worker`)
    return app


def internal_topic_specs(app: faust.App, settings: Settings) -> list[TopicSpec]:
    """Faust's own topics of ``app`` (table changelogs, the assignor's leader topic), to create first.

    Faust creates them itself moments before its first rebalance. On a cluster the consumer's
    metadata can lag that creation: the assignor then skips the changelog ("Ignoring missing
    topic") and table recovery waits for it forever. Created (and propagated) before the worker
    starts, they are in the metadata from its first fetch.
    """
    specs = [
        TopicSpec(
            table.changelog_topic.get_topic_name(),
            table.partitions or settings.partitions,
            settings.replication_factor,
            {"cleanup.policy": "compact"},
        )
        for table in app.tables.values()
    ]
    specs.append(TopicSpec(f"{app.conf.id}-__assignor-__leader", 1, settings.replication_factor))
    return specs
