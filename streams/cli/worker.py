"""``llmops worker``: run Faust agents in this process until interrupted."""

from __future__ import annotations

import asyncio
import sys

import click

from streams.cli.support import kafka_options
from streams.cli.support import load_settings as _settings


# --- worker --------------------------------------------------------------------------------
@click.command()
@kafka_options
@click.option(
    "--agents",
    default="ingest,embed,index,infer,monitor",
    show_default=True,
    help="Comma-separated agent groups to run in this process (index and infer share Milvus Lite).",
)
def worker(agents: str) -> None:
    """Run Faust agents until interrupted (Ctrl-C or SIGTERM stop it cleanly).

    A broker that is not reachable yet is retried with backoff for LLMOPS_BROKER_WAIT_SECONDS
    (default 300); after that the worker exits with code 69 and says what to check.

    Run several workers with the same --agents to share the partitions of their topics.

    Serves /healthz, /readyz and Prometheus /metrics on LLMOPS_SRE_PORT (default 9188; 0: off).
    """
    import faust

    from agents.app import create_app, internal_topic_specs
    from agents.sre import serve_endpoints
    from streams.heap import freeze_startup_objects, watch_collections
    from streams.kafka.admin import ensure_topics
    from streams.kafka.broker_wait import EXIT_BROKER_UNREACHABLE, BrokerUnreachable, when_reachable
    from streams.logs import configure_logging, get_logger
    from streams.runtime import tune_native_allocators
    from streams.telemetry.tracing import Telemetry

    settings = _settings()
    allocators = tune_native_allocators(settings.malloc_mmap_threshold, settings.arrow_memory_pool)
    configure_logging(settings)
    get_logger("streams.worker").info("native_allocators", **allocators)
    try:
        asyncio.run(when_reachable(settings, lambda: ensure_topics(settings), settings.broker_wait_seconds))
    except BrokerUnreachable as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(EXIT_BROKER_UNREACHABLE)
    telemetry = Telemetry.from_settings(settings)
    try:
        app = create_app(settings, [a.strip() for a in agents.split(",") if a.strip()], telemetry)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    asyncio.run(ensure_topics(settings, internal_topic_specs(app, settings)))
    watch_collections()
    freeze_startup_objects()  # the model, the app, the clients: full collections skip them from here on
    runner = faust.Worker(app, loglevel=settings.log_level.lower(), override_logging=False, redirect_stdouts=False)
    endpoints = serve_endpoints(app, settings, runner.loop)  # /healthz, /readyz, /metrics (LLMOPS_SRE_PORT)
    try:
        runner.execute_from_commandline()
    finally:
        if endpoints is not None:
            endpoints.close()
        telemetry.shutdown()  # the last spans reach telemetry.spans before the process exits
