"""``llmops kafka``: run the embedded broker, list topics, print and apply ACLs."""

from __future__ import annotations

import asyncio
import sys

import click

from streams.cli.support import EXIT_NOT_READY, kafka_options
from streams.cli.support import echo_json as _echo_json
from streams.cli.support import load_settings as _settings


# --- kafka ---------------------------------------------------------------------------------
@click.group()
def kafka() -> None:
    """Run the embedded Apache Kafka broker (KRaft, one node, jars from Maven Central)."""


@kafka.command("start")
@kafka_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def kafka_start(as_json: bool) -> None:
    """Start the broker if it is not running, create our topics, print the bootstrap address.

    The first start resolves the broker's jars with Maven (needs `java` 17+ and `mvn`).
    """
    from streams.kafka.admin import ensure_topics
    from streams.kafka.broker import BrokerError, EmbeddedKafka

    settings = _settings()
    try:
        broker = EmbeddedKafka.from_settings(settings)
        bootstrap = broker.start(progress=lambda line: click.echo(line, err=True))
    except BrokerError as error:
        raise click.ClickException(str(error)) from None
    created = asyncio.run(ensure_topics(settings))
    status = broker.status()
    if as_json:
        _echo_json({"bootstrap": bootstrap, "pid": status.pid, "topics_created": created, "log": str(status.log_file)})
    else:
        click.echo(f"Kafka is running at {bootstrap} (pid {status.pid}, log {status.log_file})")
        if created:
            click.echo(f"created {len(created)} topics: {', '.join(created)}")


@kafka.command("stop")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def kafka_stop(as_json: bool) -> None:
    """Stop the embedded broker (SIGTERM, then SIGKILL after 30 s)."""
    from streams.kafka.broker import BrokerError, EmbeddedKafka

    try:
        stopped = EmbeddedKafka.from_settings(_settings()).stop()
    except BrokerError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        _echo_json({"stopped": stopped})
    else:
        click.echo("Kafka stopped" if stopped else "Kafka was not running")


@kafka.command("status")
@kafka_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def kafka_status(as_json: bool) -> None:
    """Say whether the broker runs, and the records on each topic of this namespace. Exit 3 if down."""
    from streams.kafka.admin import count_records
    from streams.kafka.broker import BrokerError, EmbeddedKafka
    from streams.kafka.topics import ALL_BASE_NAMES, Topics

    settings = _settings()
    try:
        status = EmbeddedKafka.from_settings(settings).status()
    except BrokerError as error:
        raise click.ClickException(str(error)) from None
    topics = Topics(settings.namespace)
    counts = asyncio.run(count_records(settings, [topics.name(b) for b in ALL_BASE_NAMES])) if status.running else []
    if as_json:
        _echo_json(
            {
                "running": status.running,
                "pid": status.pid,
                "bootstrap": status.bootstrap,
                "log": str(status.log_file),
                "topics": {c.topic: c.records for c in counts},
            }
        )
    else:
        state = f"running at {status.bootstrap} (pid {status.pid})" if status.running else "not running"
        click.echo(f"Kafka is {state}; log: {status.log_file}")
        for count in counts:
            click.echo(f"  {count.topic:<28} {count.partitions:>3} partitions {count.records:>10} records")
    if not status.running:
        sys.exit(EXIT_NOT_READY)


@kafka.command("topics")
@kafka_options
@click.option(
    "--tenant",
    "tenants",
    multiple=True,
    help="Also create this tenant's reply topic (inference.responses.tenant.NAME); repeat for more.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def kafka_topics(tenants: tuple[str, ...], as_json: bool) -> None:
    """Create any missing topic of this namespace on the configured cluster (embedded or not).

    Partitions come from LLMOPS_PARTITIONS, replication from LLMOPS_REPLICATION_FACTOR;
    models.control is compacted. Existing topics are left as they are. A tenant's reply topic is
    created by an operator with --tenant (or, without ACLs, by the tenant's InferenceClient);
    the infer agent never creates one and dead-letters a request for a tenant without it.
    """
    from streams.kafka.admin import count_records, ensure_topics
    from streams.kafka.topics import ALL_BASE_NAMES, Topics
    from streams.records import tenant_problem

    settings = _settings()
    topics = Topics(settings.namespace)
    for tenant in tenants:
        why = tenant_problem(tenant)
        if why:
            raise click.BadParameter(why, param_hint="--tenant")
    specs = topics.specs(settings.partitions, settings.replication_factor) + [
        topics.tenant_responses_spec(tenant, settings.partitions, settings.replication_factor) for tenant in tenants
    ]
    created = asyncio.run(ensure_topics(settings, specs))
    names = [topics.name(b) for b in ALL_BASE_NAMES] + [topics.responses_for(tenant) for tenant in tenants]
    counts = asyncio.run(count_records(settings, names))
    if as_json:
        _echo_json(
            {
                "created": created,
                "topics": {c.topic: {"partitions": c.partitions, "records": c.records} for c in counts},
            }
        )
        return
    for count in counts:
        mark = " (created)" if count.topic in created else ""
        click.echo(f"{count.topic:<36} {count.partitions:>3} partitions {count.records:>10} records{mark}")


@kafka.command("acls")
@kafka_options
@click.option("--agents", default=None, help="One worker's agent set (e.g. embed,index); default: each group alone.")
@click.option(
    "--role",
    type=click.Choice(["publisher", "inference-client", "tenant-client", "model-manager"]),
    default=None,
    help=(
        "A client role instead (tenant-client: one tenant's applications, with --tenant; "
        "model-manager: the only writer of models.control)."
    ),
)
@click.option("--tenant", default=None, help="The tenant a tenant-client is granted for (its reply topic only).")
@click.option("--principal", default=None, help="SASL user the grants are for (default: llmops-<agents or role>).")
@click.option("--apply", "apply_", is_flag=True, help="Create the grants on the cluster (as a user allowed to).")
@click.option("--json", "as_json", is_flag=True, help="Print the grants as JSON.")
def kafka_acls(
    agents: str | None, role: str | None, tenant: str | None, principal: str | None, apply_: bool, as_json: bool
) -> None:
    """Print the ACLs each agent group (or client role) needs, least privilege; --apply creates them.

    Without --agents or --role: one principal per agent group and per client role. Topics take the
    namespace prefix (LLMOPS_NAMESPACE); the consumer group and Faust's internal topic prefix are
    named after the agent set. --apply connects with the LLMOPS_* credentials, which must be allowed
    to alter ACLs (the embedded broker's super user); bindings that exist are kept.

    Tenants: each tenant's applications get a principal of their own with
    `--role tenant-client --tenant NAME --principal USER`: it may read only that tenant's reply
    topic, so tenant A cannot read tenant B's answers (docs/security.md).
    """
    from streams.kafka.acls import AclError, apply_grants, default_grants, role_grants, worker_grants

    settings = _settings()
    if agents and role:
        raise click.UsageError("give --agents or --role, not both")
    try:
        if agents:
            names = [a.strip() for a in agents.split(",") if a.strip()]
            user = principal or f"llmops-{'_'.join(sorted(names))}"
            grants = {user: worker_grants(settings.namespace, names, user)}
        elif role:
            user = principal or (f"llmops-{role}-{tenant}" if tenant else f"llmops-{role}")
            grants = {user: role_grants(settings.namespace, role, user, tenant)}
        else:
            if principal:
                raise click.UsageError("--principal needs --agents or --role")
            grants = default_grants(settings.namespace)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    applied = 0
    if apply_:
        try:
            applied = asyncio.run(apply_grants(settings, [g for group in grants.values() for g in group]))
        except AclError as error:
            raise click.ClickException(str(error)) from None
    if as_json:
        _echo_json(
            {"grants": {user: [g.to_dict() for g in group] for user, group in grants.items()}, "applied": applied}
        )
        return
    for group in grants.values():
        for grant in group:
            click.echo(grant.line())
    if apply_:
        click.echo(f"applied {applied} grants", err=True)
