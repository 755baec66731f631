"""The ``llmops`` command line.

Why this exists:
    One entry point for people and scripts: run the embedded broker, run workers, publish and
    profile data, and run the demo. Every command takes ``--help``; commands that report take
    ``--json`` for machines. Settings come from ``LLMOPS_*`` variables (see docs/operations.md).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click
import structlog

from streams.cli.data import profile, publish
from streams.cli.demo import demo
from streams.cli.evaluation import eval_group, train_ranker_command
from streams.cli.generator import generator
from streams.cli.inference import query, search
from streams.cli.kafka import kafka
from streams.cli.models import models
from streams.cli.monitor import monitor
from streams.cli.replay import replay
from streams.cli.support import ConfigurationError, NotReady, Refused, last_settings
from streams.cli.trace import trace_command
from streams.cli.worker import worker
from streams.settings import Settings


class LlmopsGroup(click.Group):
    """The root group: turns a Kafka that cannot be used into one line and its exit code (docs/cli.md).

    Done here rather than in :func:`main`, so that click's ``CliRunner`` sees the same messages and
    exit codes as a shell.
    """

    def invoke(self, ctx: click.Context) -> Any:
        from aiokafka.errors import (
            ClusterAuthorizationFailedError,
            GroupAuthorizationFailedError,
            KafkaConnectionError,
            NodeNotReadyError,
            TopicAuthorizationFailedError,
        )

        from streams.kafka.client_security import ClientSecurityError

        try:
            return super().invoke(ctx)
        except (KafkaConnectionError, NodeNotReadyError):  # no connection, or one the broker closed at login
            from streams.kafka.admin import probe_connection

            retryable, why = asyncio.run(probe_connection(last_settings()))
            raise (NotReady if retryable else Refused)(why) from None
        except (TopicAuthorizationFailedError, GroupAuthorizationFailedError, ClusterAuthorizationFailedError) as error:
            raise Refused(refusal_message(last_settings(), error)) from None
        except ClientSecurityError as error:
            raise ConfigurationError(str(error)) from None


@click.group(cls=LlmopsGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="llmops-streams")
def cli() -> None:
    """Event-driven LLMOps on Kafka: ingest, index, infer and monitor as Faust agents.

    Start with `llmops kafka start`, then `llmops worker` in one terminal and
    `llmops publish --corpus stdlib` in another; or run `llmops demo` for all of it.

    Settings: command-line flags win over LLMOPS_* environment variables (docs/operations.md
    lists them), which win over defaults. Commands that talk to Kafka take -b/--bootstrap-server
    and --command-config FILE (a Kafka client.properties). Commands that print a result take
    --json. Exit codes: 0 ok, 1 failed, 2 usage or configuration error, 3 Kafka not reachable or
    no answer in time, 4 refused by Kafka (credentials or ACL); docs/cli.md has the details.
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
    eval_group,
    demo,
    generator,
):
    cli.add_command(command)
models.add_command(train_ranker_command)


def main() -> None:
    """Console-script entry point."""
    # Until a command configures logging, structlog prints to stdout; stdout is for results (--json).
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    cli()


def refusal_message(settings: Settings, error: Exception) -> str:
    """One line for an ACL refusal: who was refused what, and where the grants come from."""
    names = ", ".join(str(arg) for arg in error.args)
    what = {
        "TopicAuthorizationFailedError": f"access to topic {names}",
        "GroupAuthorizationFailedError": f"access to consumer group {names}",
        # An idempotent producer's first request (InitProducerId) needs Write on some topic.
        "ClusterAuthorizationFailedError": "a cluster operation (a producer that may write no topic at all)",
    }[type(error).__name__]
    user = settings.sasl_username or settings.sasl_oauthbearer_sub
    return (
        f"Kafka at {settings.bootstrap_servers} refused user {user!r} {what}: it has no ACL "
        "for it. `llmops kafka acls` lists what each agent group and client role may read and write; an admin "
        "grants them with `llmops kafka acls --apply`"
    )


if __name__ == "__main__":
    main()
