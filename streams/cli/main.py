"""The ``llmops`` command line.

Why this exists:
    One entry point for people and scripts: run the embedded broker, run workers, publish and
    profile data, and run the demo. Every command takes ``--help``; commands that report take
    ``--json`` for machines. Settings come from ``LLMOPS_*`` variables (see docs/operations.md).
"""

from __future__ import annotations

import asyncio
import sys

import click

from streams.cli.data import profile, publish
from streams.cli.demo import demo
from streams.cli.generator import generator
from streams.cli.inference import query, search
from streams.cli.kafka import kafka
from streams.cli.models import models
from streams.cli.monitor import monitor
from streams.cli.replay import replay
from streams.cli.support import load_settings as _settings
from streams.cli.trace import trace_command
from streams.cli.worker import worker
from streams.settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="llmops-streams")
def cli() -> None:
    """Event-driven LLMOps on Kafka: ingest, index, infer and monitor as Faust agents.

    Start with `llmops kafka start`, then `llmops worker` in one terminal and
    `llmops publish --corpus stdlib` in another; or run `llmops demo` for all of it.
    Configuration is read from LLMOPS_* environment variables (docs/operations.md lists them).
    """


for command in (
    kafka,
    worker,
    publish,
    profile,
    search,
    query,
    trace_command,
    models,
    monitor,
    replay,
    demo,
    generator,
):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point; a broker that cannot be used is explained in one line."""
    from aiokafka.errors import (
        ClusterAuthorizationFailedError,
        GroupAuthorizationFailedError,
        KafkaConnectionError,
        TopicAuthorizationFailedError,
    )

    try:
        cli()
    except KafkaConnectionError:
        from streams.kafka.admin import diagnose_connection

        click.echo(f"Error: {asyncio.run(diagnose_connection(_settings()))}", err=True)
        sys.exit(2)
    except (TopicAuthorizationFailedError, GroupAuthorizationFailedError, ClusterAuthorizationFailedError) as error:
        click.echo(f"Error: {refusal_message(_settings(), error)}", err=True)
        sys.exit(2)


def refusal_message(settings: Settings, error: Exception) -> str:
    """One line for an ACL refusal: who was refused what, and where the grants come from."""
    names = ", ".join(str(arg) for arg in error.args)
    what = {
        "TopicAuthorizationFailedError": f"access to topic {names}",
        "GroupAuthorizationFailedError": f"access to consumer group {names}",
        # An idempotent producer's first request (InitProducerId) needs Write on some topic.
        "ClusterAuthorizationFailedError": "a cluster operation (a producer that may write no topic at all)",
    }[type(error).__name__]
    return (
        f"Kafka at {settings.bootstrap_servers} refused user {settings.sasl_username!r} {what}: it has no ACL "
        "for it. `llmops kafka acls` lists what each agent group and client role may read and write; an admin "
        "grants them with `llmops kafka acls --apply`"
    )


if __name__ == "__main__":
    main()
