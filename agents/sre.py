"""What a worker's ``/readyz`` checks and ``/metrics`` lag figures come from, per Faust app.

Why this exists:
    Readiness depends on what each agent group loads (the embedder, the Milvus collection, the
    model registry) and on the Faust consumer group; consumer lag is measured for the groups the
    worker reads in. Agents declare their checks and groups here as they are registered; the
    HTTP server (:mod:`streams.telemetry.endpoints`) reads them from its own thread.

Usage:
    >>> sre = sre_of(app)                               # in register_<agent>
    >>> sre.probes.add("store", lambda: None if stores else "Milvus collection not open yet")
    >>> sre.lag_groups[group] = {topic}                 # a consumer of the agent's own
    >>> attach_sre(app, settings)                       # create_app, after every agent
    >>> server = serve_endpoints(app, settings, loop)   # `llmops worker`, before the loop runs
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import faust

from streams.kafka.admin import consumer_lag
from streams.logs import get_logger
from streams.settings import Settings
from streams.telemetry.endpoints import EndpointServer, Probes
from streams.telemetry.metrics import LAG

log = get_logger(__name__)
LAG_INTERVAL_S = 15.0  # a lag probe opens a few Kafka connections: every 15 s is plenty for alerts
BROKER_STALE_S = 3 * LAG_INTERVAL_S + 30.0  # no successful probe for this long: the broker is not ready


@dataclass
class Sre:
    """Readiness checks and consumer groups of one Faust app."""

    probes: Probes = field(default_factory=Probes)
    lag_groups: dict[str, set[str]] = field(default_factory=dict)  # group -> topics it reads
    state: dict[str, Any] = field(default_factory=dict)


_SRE: weakref.WeakKeyDictionary[Any, Sre] = weakref.WeakKeyDictionary()


def sre_of(app: faust.App) -> Sre:
    """The :class:`Sre` of ``app`` (created on first use)."""
    if app not in _SRE:
        _SRE[app] = Sre()
    return _SRE[app]


def faust_topics(app: faust.App) -> set[str]:
    """Topics the Faust agents of ``app`` read (its consumer group's subscription)."""
    return {name for agent in app.agents.values() for name in getattr(agent.channel, "topics", ())}


def attach_sre(app: faust.App, settings: Settings) -> Sre:
    """The Faust group and broker checks, and the task that measures lag (call after every agent)."""
    sre = sre_of(app)
    state = sre.state
    subscribed = faust_topics(app)
    if subscribed:
        sre.lag_groups[app.conf.id] = subscribed

        def faust_group() -> str | None:
            if not state.get("recovered"):
                return f"Faust consumer group {app.conf.id} has not joined and recovered its tables yet"
            if app.rebalancing:
                return f"Faust consumer group {app.conf.id} is rebalancing"
            return None

        sre.probes.add("consumer_group", faust_group)

    def broker() -> str | None:
        last = state.get("broker_ok_at")
        if last is None:
            reason = state.get("broker_error", "no probe yet")
            return f"Kafka at {settings.bootstrap_servers} not reached yet ({reason})"
        if time.monotonic() - last > BROKER_STALE_S:
            return (
                f"Kafka at {settings.bootstrap_servers} not reached for {time.monotonic() - last:.0f} s "
                f"({state.get('broker_error')}): check LLMOPS_BOOTSTRAP_SERVERS and the broker"
            )
        return None

    sre.probes.add("broker", broker)

    @app.task  # type: ignore[untyped-decorator]  # faust's decorators are untyped
    async def measure_lag() -> None:
        """Faust starts tasks once the group is joined and tables recovered; then lag every 15 s."""
        state["recovered"] = True
        while not app.should_stop:
            await probe_lag(sre, settings)
            await asyncio.sleep(LAG_INTERVAL_S)

    return sre


async def probe_lag(sre: Sre, settings: Settings) -> None:
    """Lag of every group of the worker; a success also proves the broker reachable."""
    try:
        for group, topics in list(sre.lag_groups.items()):
            LAG.update(group, await consumer_lag(settings, group, topics))
    except Exception as error:  # noqa: BLE001 - reported by /readyz ("broker") and retried
        sre.state["broker_error"] = repr(error)
        log.warning("lag_probe_failed", error=repr(error))
        return
    sre.state["broker_ok_at"] = time.monotonic()


def serve_endpoints(app: faust.App, settings: Settings, loop: asyncio.AbstractEventLoop) -> EndpointServer | None:
    """Start ``/healthz``, ``/readyz`` and ``/metrics`` on ``LLMOPS_SRE_PORT`` (None: disabled or taken)."""
    if not settings.sre_port:
        return None
    server = EndpointServer(sre_of(app).probes, settings.sre_host, settings.sre_port)
    try:
        return server.start(loop)
    except OSError as error:
        log.warning(
            "sre_endpoints_unavailable",
            host=settings.sre_host,
            port=settings.sre_port,
            error=repr(error),
            fix="set LLMOPS_SRE_PORT to a free port (0 disables the endpoints)",
        )
        return None
