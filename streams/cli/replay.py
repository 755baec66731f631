"""``llmops replay run | diff | list | drop``: reproducibility tests on past traffic.

Why this exists:
    Engineers replay a topic range beside live traffic, then prove the result the same (or see
    exactly where it differs). ``run`` feeds the range to the pipeline in its own namespace and
    writes a manifest; ``diff`` compares and exits non-zero on any unexplained difference.
"""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from streams.cli.support import EXIT_NOT_READY, echo_json, kafka_options, load_settings
from streams.replay.runner import REPLAYABLE, ReplayError, ReplaySpec
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.replay.namespaces import DropPlan


def _time_ms(value: str | None) -> int | None:
    """Epoch milliseconds, or an ISO 8601 time (UTC when no zone is given)."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give epoch milliseconds or an ISO time like 2026-11-30T08:00") from None
    if moment.tzinfo is None:
        from datetime import UTC

        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@click.group()
def replay() -> None:
    """Replay a topic range in a namespace of its own and compare the results.

    Live topics and the live collection are only read. Each replay namespace has its own
    topics (NAME.*), consumer groups and Milvus collection, under <data_dir>/replays/NAME.
    """


@replay.command("run")
@kafka_options
@click.option("--topic", type=click.Choice(REPLAYABLE), required=True, help="Live topic to replay.")
@click.option("--namespace", required=True, help="Namespace to replay into (a new one per experiment).")
@click.option("--from-offset", type=int, default=None, help="First offset, per partition (default: the beginning).")
@click.option("--to-offset", type=int, default=None, help="Stop before this offset, per partition (default: the end).")
@click.option("--from-time", default=None, help="First record at or after this time (epoch ms or ISO 8601).")
@click.option("--to-time", default=None, help="Stop before this time (epoch ms or ISO 8601).")
@click.option(
    "--model", "models", multiple=True, help="Pin NAME@VERSION (repeatable); default: live production versions."
)
@click.option("--no-worker", is_flag=True, help="Do not start a worker: one already runs in the namespace.")
@click.option("--timeout", type=float, default=1800.0, show_default=True, help="Seconds to wait for the pipeline.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def replay_run(
    topic: str,
    namespace: str,
    from_offset: int | None,
    to_offset: int | None,
    from_time: str | None,
    to_time: str | None,
    models: tuple[str, ...],
    no_worker: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Feed a range of TOPIC into the pipeline of NAMESPACE, wait until it is processed, write a manifest."""
    from dataclasses import asdict

    from rich.progress import Progress

    from streams.models.registry import RegistryError
    from streams.replay.runner import run_replay

    spec = ReplaySpec(topic, namespace, from_offset, to_offset, _time_ms(from_time), _time_ms(to_time), models)
    with Progress(transient=True, disable=as_json) as bar:
        task = bar.add_task("copying", total=None)

        def copied(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            manifest = run_replay(
                load_settings(),
                spec,
                progress=lambda line: bar.console.print(line) if not as_json else None,
                on_copied=copied,
                start_own_worker=not no_worker,
                timeout=timeout,
            )
        except (ReplayError, RegistryError) as error:
            raise click.ClickException(str(error)) from None
    if as_json:
        echo_json(asdict(manifest))
    else:
        seconds = ((manifest.finished_at_ms or manifest.started_at_ms) - manifest.started_at_ms) / 1000
        click.echo(
            f"replayed {manifest.records} records of {manifest.source_topic} into {manifest.target_topic} "
            f"in {seconds:.1f}s; models {', '.join(m['name'] + '@' + m['version'][:12] for m in manifest.models)}"
        )
        click.echo(f"next: llmops replay diff {namespace}")
    if not manifest.caught_up:
        click.echo(f"the pipeline did not finish within {timeout:.0f}s (--timeout); see the worker log", err=True)
        sys.exit(EXIT_NOT_READY)


@replay.command("diff")
@kafka_options
@click.argument("namespace")
@click.option("--against", default="live", show_default=True, help="'live' or another replay namespace.")
@click.option("--tolerance", type=float, default=0.999, show_default=True, help="Cosine floor when models differ.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
def replay_diff(namespace: str, against: str, tolerance: float, as_json: bool) -> None:
    """Compare a replay with live traffic for its range, or with another replay of the same range.

    Exit status: 0 when every difference is explained (or there is none), 1 otherwise.
    """
    from streams.replay.diff import diff_replay

    try:
        report = diff_replay(load_settings(), namespace, against, tolerance)
    except ReplayError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        echo_json(report.to_json())
    else:
        _print_report(report.to_json())
    if not report.identical:
        sys.exit(1)


def _print_report(report: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console()
    verdict = "[green]same[/]" if report["identical"] else "[red]DIFFERENT[/]"
    console.print(f"{report['right']} vs {report['left']}: {verdict}")
    for name, value in report["counts"].items():
        console.print(f"  {name}: {value}")
    for note in report["notes"]:
        console.print(f"  [dim]note: {note}[/]")
    if report["explained_total"]:
        console.print(f"  {report['explained_total']} explained differences:")
        for item in report["explained"][:10]:
            console.print(f"    {item['kind']} {item['record']}: {item['detail']} [dim]({item['reason']})[/]")
    if report["unexplained_total"]:
        console.print(f"  [red]{report['unexplained_total']} unexplained differences:[/]")
        for item in report["unexplained"][:20]:
            console.print(f"    {item['kind']} {item['record']}: {item['detail']}")


@replay.command("list")
@kafka_options
@click.option("--json", "as_json", is_flag=True, help="Print the replays as JSON.")
def replay_list(as_json: bool) -> None:
    """Replay namespaces with their source range, models and state."""
    from streams.replay.namespaces import list_replays

    found = list_replays(load_settings())
    if as_json:
        echo_json(found)
        return
    if not found:
        click.echo("no replays yet (llmops replay run --topic docs.raw --namespace r1)")
    for item in found:
        state = "done" if item["caught_up"] else "unfinished"
        click.echo(
            f"{item['namespace']:<16} {item['source_topic']:<22} {item['records']:>7} records  {state}  "
            + ", ".join(item["models"])
        )


@replay.command("drop")
@kafka_options
@click.argument("namespace")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (needed without a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON; without --yes nothing is deleted.")
def replay_drop(namespace: str, yes: bool, as_json: bool) -> None:
    """Delete a replay namespace: its topics, consumer groups and folder (collection, manifests).

    The command lists what it will delete and asks first; --yes skips the question. Without a
    terminal to ask on, it refuses unless --yes is given. With --json it prints the plan (and,
    with --yes, deletes it).
    """
    from streams.replay.namespaces import plan_drop

    settings = load_settings()
    try:
        plan = plan_drop(settings, namespace)
    except ReplayError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        if yes:
            _drop(settings, plan)
        echo_json({**plan.to_json(), "dropped": yes})
        return
    click.echo(plan.describe())
    if plan.empty:
        click.echo(f"nothing to drop: namespace {namespace} has no topics, groups or folder here")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise click.ClickException(
                f"no terminal to ask on: pass --yes to delete the above (llmops replay drop {namespace} --yes)"
            )
        click.confirm(f"delete everything listed above for namespace {namespace}?", abort=True)
    _drop(settings, plan)
    click.echo(f"dropped {namespace}: {len(plan.topics)} topics, {len(plan.groups)} consumer groups, folder removed")


def _drop(settings: Settings, plan: DropPlan) -> None:
    from streams.replay.namespaces import drop_namespace

    try:
        drop_namespace(settings, plan)
    except ReplayError as error:
        raise click.ClickException(str(error)) from None
