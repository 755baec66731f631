"""The ``llmops`` command line.

Why this exists:
    One entry point for people and scripts: run the embedded broker, run workers, publish and
    profile data, and run the demo. Every command takes ``--help``; commands that report take
    ``--json`` for machines. Settings come from ``LLMOPS_*`` variables (see README).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from streams.cli_inference import models, query
from streams.cli_monitor import monitor
from streams.cli_replay import replay
from streams.cli_support import echo_json as _echo_json
from streams.cli_support import load_settings as _settings
from streams.settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="llmops-streams")
def cli() -> None:
    """Event-driven LLMOps on Kafka: ingest, index, infer and monitor as Faust agents.

    Start with `llmops kafka start`, then `llmops worker` in one terminal and
    `llmops publish --corpus stdlib` in another; or run `llmops demo` for all of it.
    Configuration is read from LLMOPS_* environment variables (see the README).
    """


# --- kafka ---------------------------------------------------------------------------------
@cli.group()
def kafka() -> None:
    """Run the embedded Apache Kafka broker (KRaft, one node, jars from Maven Central)."""


@kafka.command("start")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def kafka_start(as_json: bool) -> None:
    """Start the broker if it is not running, create our topics, print the bootstrap address.

    The first start resolves the broker's jars with Maven (needs `java` 17+ and `mvn`).
    """
    from streams.admin import ensure_topics
    from streams.broker import BrokerError, EmbeddedKafka

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
def kafka_stop() -> None:
    """Stop the embedded broker (SIGTERM, then SIGKILL after 30 s)."""
    from streams.broker import BrokerError, EmbeddedKafka

    try:
        stopped = EmbeddedKafka.from_settings(_settings()).stop()
    except BrokerError as error:
        raise click.ClickException(str(error)) from None
    click.echo("Kafka stopped" if stopped else "Kafka was not running")


@kafka.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def kafka_status(as_json: bool) -> None:
    """Say whether the broker runs, and the records on each topic of this namespace. Exit 1 if down."""
    from streams.admin import count_records
    from streams.broker import BrokerError, EmbeddedKafka
    from streams.topics import ALL_BASE_NAMES, Topics

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
        sys.exit(1)


@kafka.command("topics")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def kafka_topics(as_json: bool) -> None:
    """Create any missing topic of this namespace on the configured cluster (embedded or not).

    Partitions come from LLMOPS_PARTITIONS, replication from LLMOPS_REPLICATION_FACTOR;
    models.control is compacted. Existing topics are left as they are.
    """
    from streams.admin import count_records, ensure_topics
    from streams.topics import ALL_BASE_NAMES, Topics

    settings = _settings()
    created = asyncio.run(ensure_topics(settings))
    topics = Topics(settings.namespace)
    counts = asyncio.run(count_records(settings, [topics.name(b) for b in ALL_BASE_NAMES]))
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
        click.echo(f"{count.topic:<28} {count.partitions:>3} partitions {count.records:>10} records{mark}")


@kafka.command("acls")
@click.option("--agents", default=None, help="One worker's agent set (e.g. embed,index); default: each group alone.")
@click.option(
    "--role", type=click.Choice(["publisher", "inference-client"]), default=None, help="A client role instead."
)
@click.option("--principal", default=None, help="SASL user the grants are for (default: llmops-<agents or role>).")
@click.option("--apply", "apply_", is_flag=True, help="Create the grants on the cluster (as a user allowed to).")
@click.option("--json", "as_json", is_flag=True, help="Print the grants as JSON.")
def kafka_acls(agents: str | None, role: str | None, principal: str | None, apply_: bool, as_json: bool) -> None:
    """Print the ACLs each agent group (or client role) needs, least privilege; --apply creates them.

    Without --agents or --role: one principal per agent group and per client role. Topics take the
    namespace prefix (LLMOPS_NAMESPACE); the consumer group and Faust's internal topic prefix are
    named after the agent set. --apply connects with the LLMOPS_* credentials, which must be allowed
    to alter ACLs (the embedded broker's super user); bindings that exist are kept.
    """
    from streams.acls import AclError, apply_grants, default_grants, role_grants, worker_grants

    settings = _settings()
    if agents and role:
        raise click.UsageError("give --agents or --role, not both")
    try:
        if agents:
            names = [a.strip() for a in agents.split(",") if a.strip()]
            user = principal or f"llmops-{'_'.join(sorted(names))}"
            grants = {user: worker_grants(settings.namespace, names, user)}
        elif role:
            user = principal or f"llmops-{role}"
            grants = {user: role_grants(settings.namespace, role, user)}
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


# --- worker --------------------------------------------------------------------------------
@cli.command()
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
    """
    import faust

    from agents.app import create_app, internal_topic_specs
    from streams.admin import ensure_topics
    from streams.broker_wait import EXIT_BROKER_UNREACHABLE, BrokerUnreachable, when_reachable
    from streams.heap import freeze_startup_objects, watch_collections
    from streams.logs import configure_logging, get_logger
    from streams.runtime import tune_native_allocators
    from streams.tracing import Telemetry

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
    try:
        runner.execute_from_commandline()
    finally:
        telemetry.shutdown()  # the last spans reach telemetry.spans before the process exits


# --- publish -------------------------------------------------------------------------------
@cli.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--corpus", type=click.Choice(["stdlib"]), help="Publish a built-in corpus instead of a file.")
@click.option("--limit", type=int, default=None, help="Publish at most this many documents.")
@click.option("--topic", default=None, help="Target topic (default: docs.raw of the namespace).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def publish(file: Path | None, corpus: str | None, limit: int | None, topic: str | None, as_json: bool) -> None:
    """Publish FILE.jsonl (one document per line, key = its id) or --corpus stdlib to docs.raw.

    Lines are sent unchanged: the ingest agent validates them and dead-letters bad ones.
    """
    from rich.progress import Progress

    from streams.corpus import document_key, read_jsonl, stdlib_documents
    from streams.publish import encode_document, publish_records

    if (file is None) == (corpus is None):
        raise click.UsageError("give either FILE.jsonl or --corpus stdlib")
    settings = _settings()
    if file is not None:
        lines = [raw for _, raw in read_jsonl(file)][:limit]
        records = [(document_key(raw), raw) for raw in lines]
    else:
        records = [encode_document(doc) for doc in stdlib_documents(limit=limit)]
    with Progress(disable=as_json or not sys.stderr.isatty(), transient=True) as progress:
        task = progress.add_task("publishing", total=len(records))
        report = asyncio.run(
            publish_records(settings, records, topic=topic, on_sent=lambda n: progress.advance(task, n))
        )
    rate = report.records / report.seconds if report.seconds else 0.0
    if as_json:
        _echo_json(
            {
                "topic": report.topic,
                "records": report.records,
                "bytes": report.bytes,
                "seconds": round(report.seconds, 3),
                "records_per_second": round(rate, 1),
            }
        )
    else:
        click.echo(
            f"published {report.records} records ({report.bytes / 1e6:.1f} MB) to {report.topic} "
            f"in {report.seconds:.1f}s ({rate:.0f}/s)"
        )


# --- profile -------------------------------------------------------------------------------
@cli.command()
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--topic", default=None, help="Profile a topic range instead of a file.")
@click.option("--from-offset", type=int, default=0, show_default=True, help="First offset per partition.")
@click.option("--to-offset", type=int, default=None, help="Stop before this offset per partition.")
@click.option("--corpus", type=click.Choice(["stdlib"]), help="Profile a built-in corpus.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), help="Write a length histogram here.")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
def profile(
    file: Path | None,
    topic: str | None,
    from_offset: int,
    to_offset: int | None,
    corpus: str | None,
    png: Path | None,
    as_json: bool,
) -> None:
    """Profile documents: counts, lengths, sources, scripts, languages, duplicates, PII, outliers.

    Reads FILE.jsonl, a topic range (--topic docs.raw --from-offset 0 --to-offset 1000),
    or --corpus stdlib, and runs the ingest stage's own validation, cleaning and dedup.
    """
    from streams.avro import AvroCodec, registry_from_settings
    from streams.corpus import document_key, read_jsonl, stdlib_documents
    from streams.ingest import IngestConfig
    from streams.profile import profile_records, write_histogram
    from streams.publish import encode_document

    if sum(x is not None for x in (file, topic, corpus)) != 1:
        raise click.UsageError("give exactly one of FILE.jsonl, --topic NAME or --corpus stdlib")
    settings = _settings()
    if file is not None:
        records: list[tuple[bytes | None, bytes | None]] = [(document_key(r), r) for _, r in read_jsonl(file)]
    elif corpus is not None:
        records = [encode_document(doc) for doc in stdlib_documents()]
    else:
        from streams.admin import read_topic

        async def fetch() -> list[tuple[bytes | None, bytes | None]]:
            return [
                (m.key, m.value)
                async for m in read_topic(settings, str(topic))
                if m.offset >= from_offset and (to_offset is None or m.offset < to_offset)
            ]

        records = asyncio.run(fetch())
    codec = AvroCodec(
        registry_from_settings(
            settings.schema_registry_url,
            settings.schema_registry_username,
            settings.schema_registry_password.get_secret_value() if settings.schema_registry_password else None,
        )
    )
    result = profile_records(records, codec, IngestConfig.from_settings(settings))
    if png is not None:
        write_histogram(result, png)
    data = result.to_dict()
    if as_json:
        _echo_json(data)
        return
    _print_profile(data, png)


def _print_profile(data: dict[str, Any], png: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"Profile of {data['records']} records", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    lengths = data["length_chars"]
    table.add_row("valid / deletions", f"{data['valid']} / {data['deletions']}")
    table.add_row("rejected", ", ".join(f"{k}: {v}" for k, v in data["rejected"].items()) or "none")
    if lengths:
        table.add_row(
            "length (chars)",
            f"min {lengths['min']:.0f}  p5 {lengths['p5']:.0f}  p50 {lengths['p50']:.0f}  "
            f"p95 {lengths['p95']:.0f}  max {lengths['max']:.0f}",
        )
    for key in ("sources", "tenants", "scripts", "languages", "pii_hits"):
        table.add_row(key.replace("_", " "), ", ".join(f"{k}: {v}" for k, v in list(data[key].items())[:8]) or "none")
    table.add_row("html share", f"{data['html_share']:.1%}")
    table.add_row("exact / near duplicates", f"{data['exact_duplicate_rate']:.2%} / {data['near_duplicate_rate']:.2%}")
    table.add_row("docs with PII", f"{data['docs_with_pii_share']:.2%}")
    table.add_row(
        "outliers (|z| > 3 on log length)",
        ", ".join(f"{o['id']} ({o['length_chars']})" for o in data["outliers"][:5]) or "none",
    )
    console.print(table)
    if png is not None:
        console.print(f"histogram written to {png}")


# --- search --------------------------------------------------------------------------------
@cli.command()
@click.argument("text")
@click.option("--top-k", type=click.IntRange(1, 100), default=5, show_default=True, help="Results to return.")
@click.option("--tenant", default=None, help="Search this tenant's documents (default: documents without one).")
@click.option("--json", "as_json", is_flag=True, help="Print the hits as JSON.")
def search(text: str, top_k: int, tenant: str | None, as_json: bool) -> None:
    """Semantic search over the index: chunk ids, document ids, scores and snippets.

    With Milvus Lite (the default) the index file can be open in one process only: stop the
    worker first, or run Milvus as a server and set LLMOPS_MILVUS_URI.
    """
    from streams.search import hits_as_dicts, search_index
    from streams.vectorstore import StoreUnavailable

    try:
        hits = search_index(_settings(), text, top_k, tenant)
    except StoreUnavailable as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        _echo_json(hits_as_dicts(hits))
        return
    if not hits:
        click.echo("no results (is anything indexed in this namespace and tenant?)")
    for rank, hit in enumerate(hits, start=1):
        click.echo(f"{rank:>2}. {hit.score:.3f}  {hit.chunk_id}\n    {hit.snippet}")


# --- trace ---------------------------------------------------------------------------------
@cli.command("trace")
@click.argument("trace_id", required=False)
@click.option("--doc", "doc_id", default=None, help="The latest trace of this document id.")
@click.option("--request", "request_id", default=None, help="The trace of this inference request id.")
@click.option("--last", is_flag=True, help="The latest trace (batch spans aside).")
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON.")
def trace_command(trace_id: str | None, doc_id: str | None, request_id: str | None, last: bool, as_json: bool) -> None:
    """Print one trace from telemetry.spans: its span tree, durations, attributes and a waterfall.

    Give a TRACE_ID (32 hex digits, as in log lines' trace_id), --doc ID, --request ID or --last.
    Spans reach the topic about a second after they end (all of them once a worker stops).
    """
    import re

    from rich.console import Console

    from streams.topics import Topics
    from streams.traceview import load_trace, print_trace

    if sum(x is not None for x in (trace_id, doc_id, request_id)) + last != 1:
        raise click.UsageError("give exactly one of TRACE_ID, --doc ID, --request ID or --last")
    if trace_id is not None and not re.fullmatch(r"[0-9a-fA-F]{32}", trace_id):
        raise click.UsageError(f"a trace id is 32 hex digits; got {trace_id!r}")
    settings = _settings()
    data = load_trace(settings, trace_id=trace_id, doc_id=doc_id, request_id=request_id)
    if data is None:
        what = trace_id or (f"document {doc_id}" if doc_id else f"request {request_id}" if request_id else "any")
        raise click.ClickException(
            f"no trace for {what} on {Topics(settings.namespace).telemetry_spans} "
            "(do the workers run with LLMOPS_TRACING on, in this namespace?)"
        )
    if as_json:
        _echo_json(data)
    else:
        print_trace(Console(), data)


# --- demo ----------------------------------------------------------------------------------
@cli.command()
@click.option("--limit", type=int, default=None, help="Publish at most this many stdlib documents.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(limit: int | None, as_json: bool) -> None:
    """Start the broker and a worker, publish the stdlib corpus with some bad records, report.

    This is what `make run` does. Every published record is accounted for: indexed,
    skipped as a duplicate, deleted, or dead-lettered with a reason. Then a classifier is
    trained, evaluated in QA, approved and promoted, and questions go to the infer agent over
    Kafka; each answer shows which model versions answered. Exits 1 if anything is unaccounted
    for or an answer is not what was expected.
    """
    from streams.demo import print_summary, run_demo

    summary = run_demo(_settings(), limit=limit, log=lambda line: click.echo(line, err=True))
    if as_json:
        _echo_json(summary)
    else:
        print_summary(summary)
    if not (summary["accounted"] and summary["answered"]):
        sys.exit(1)


cli.add_command(query)
cli.add_command(models)
cli.add_command(replay)
cli.add_command(monitor)


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
        from streams.admin import diagnose_connection

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
