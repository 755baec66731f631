"""``llmops query`` and ``llmops models ...``: inference over Kafka and the model lifecycle.

Why this exists:
    People ask the running infer agent questions and manage model versions from a terminal;
    scripts do the same with ``--json``. Every registry change is an event on ``models.control``
    that running workers pick up without a restart.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from streams.cli_support import echo_json, load_settings
from streams.registry import RegistryError, Stage

STAGE_COLOURS = {"production": "green", "qa": "yellow", "registered": "cyan", "archived": "dim"}


def _run(coroutine: Any) -> Any:
    """Run a lifecycle coroutine; lifecycle refusals become CLI errors that say what to do."""
    try:
        return asyncio.run(coroutine)
    except (RegistryError, ValueError) as error:
        raise click.ClickException(str(error)) from None


def _spec(value: str) -> tuple[str, str]:
    name, _, version = value.partition("@")
    if not name or not version:
        raise click.BadParameter(f"{value!r}: expected NAME@VERSION (a unique version prefix is enough)")
    return name, version


def print_response(response: dict[str, Any]) -> None:
    """A response as people read it: status, answer, evidence, models, latency."""
    from rich.console import Console

    console = Console()
    status = response["status"]
    colour = "green" if status == "OK" else "red"
    safety = response["safety"]
    console.print(
        f"[{colour}]{status}[/] {response['task']} (request {response['request_id'][:12]}), "
        f"safety {safety['verdict']} {safety['score']:.2f}{' ' + ','.join(safety['rules']) if safety['rules'] else ''}"
    )
    if response.get("error"):
        console.print(f"  [red]{response['error']}[/]")
    if response.get("label"):
        top = sorted(response["probabilities"].items(), key=lambda kv: -kv[1])[:3]
        console.print(f"  label [bold]{response['label']}[/]  ({', '.join(f'{k} {v:.2f}' for k, v in top)})")
    for item in response.get("explanation", []):
        console.print(f"    {item['weight']:+.4f}  {item['token']}")
    if response.get("explanation_method"):
        console.print(f"    [dim]method: {response['explanation_method']}[/]")
    for rank, hit in enumerate(response.get("hits", []), 1):
        console.print(f"  [{rank}] {hit['score']:.3f} {hit['chunk_id']}\n      {hit['snippet'][:110]}")
    if response.get("answer"):
        console.print(f"  [bold]answer:[/] {response['answer']}")
    if response.get("note"):
        console.print(f"  [dim]{response['note']}[/]")
    models = ", ".join(f"{m['name']}@{m['version'][:12]} ({m['stage']})" for m in response.get("models", []))
    latency = response["latency"]
    console.print(f"  models: {models or 'none'}")
    if response.get("trace_id"):
        console.print(f"  [dim]trace: llmops trace {response['trace_id']}[/]")
    console.print(
        "  latency ms: "
        + ", ".join(f"{k[:-3]} {v:.1f}" for k, v in latency.items() if v or k == "total_ms")
        + (
            f"; round trip {response['received_at_ms'] - response['sent_at_ms']} ms"
            if "received_at_ms" in response and "sent_at_ms" in response
            else ""
        )
    )


# --- query ---------------------------------------------------------------------------------
@click.command()
@click.argument("text")
@click.option("--task", type=click.Choice(["search", "classify", "rag"]), default="search", show_default=True)
@click.option("--tenant", default=None, help="Retrieve only this tenant's chunks (default: documents without one).")
@click.option("--top-k", type=click.IntRange(1, 50), default=5, show_default=True, help="Chunks to retrieve.")
@click.option("--model", default=None, help="Pin a classifier: NAME (its production version) or NAME@VERSION.")
@click.option("--explain", is_flag=True, help="classify: also show the words that moved the prediction most.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for the answer.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole response as JSON.")
def query(
    text: str,
    task: str,
    tenant: str | None,
    top_k: int,
    model: str | None,
    explain: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Ask the running infer agent over Kafka and print its answer.

    A worker running the infer agent must be up (`llmops worker`, the default agents include it).
    The response says which model versions answered and where the time went.
    """
    from streams.client import InferenceClient, InferenceTimeout

    settings = load_settings()

    async def ask() -> dict[str, Any]:
        async with InferenceClient(settings) as client:
            request = client.request(text, task, tenant=tenant, top_k=top_k, model=model, explain=explain)
            future = await client.send(request)
            response = await asyncio.wait_for(future, timeout)
            response["sent_at_ms"] = request.sent_at_ms
            return response

    try:
        response = asyncio.run(ask())
    except TimeoutError:
        raise click.ClickException(
            f"no answer within {timeout:.0f}s: is a worker with the infer agent running (`llmops worker`)?"
        ) from None
    except (InferenceTimeout, RuntimeError) as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        echo_json(response)
    else:
        print_response(response)
    if response["status"] != "OK":
        sys.exit(2)


# --- models --------------------------------------------------------------------------------
@click.group()
def models() -> None:
    """The model registry on models.control: train, register, evaluate, promote, roll back.

    Lifecycle: registered -> qa -> production -> archived. Production needs a passed QA
    evaluation (gate: LLMOPS_QA_MIN_ACCURACY, LLMOPS_QA_MAX_DROP) and --approved-by.
    Running workers switch models on each event, without a restart.
    """


def _dataset(data: Path | None, corpus: str | None, classes: int, per_class: int) -> Any:
    from streams.classifier import read_labelled_jsonl, stdlib_topic_dataset

    if data is None and corpus is None:
        raise click.UsageError("give labelled data: --data FILE.jsonl or --corpus stdlib")
    try:
        return read_labelled_jsonl(data) if data else stdlib_topic_dataset(classes, per_class)
    except ValueError as error:
        raise click.ClickException(str(error)) from None


_data_options = [
    click.option(
        "--data",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help='Labelled JSONL: {"text": ..., "label": ...[, "id": ...]} per line.',
    ),
    click.option("--corpus", type=click.Choice(["stdlib"]), help="The stdlib docstrings labelled by top-level module."),
    click.option("--classes", type=int, default=10, show_default=True, help="stdlib: the largest N modules."),
    click.option("--per-class", type=int, default=120, show_default=True, help="stdlib: at most N docs per module."),
]


def data_options(function: Any) -> Any:
    for option in reversed(_data_options):
        function = option(function)
    return function


@models.command("list")
@click.option("--name", default=None, help="Only this model.")
@click.option("--json", "as_json", is_flag=True, help="Print the versions as JSON.")
def models_list(name: str | None, as_json: bool) -> None:
    """Every registered version with its stage, metrics and approvals."""
    from rich.console import Console
    from rich.table import Table

    from streams.model_ops import load_registry

    registry = _run(load_registry(load_settings()))
    versions = registry.all(name)
    if as_json:
        echo_json([v.summary() for v in versions])
        return
    if not versions:
        click.echo("no models registered (train one: `llmops models train-classifier --corpus stdlib`)")
        return
    table = Table(title="models.control")
    for column in ("name@version", "kind", "stage", "metrics", "qa", "approved by", "note"):
        table.add_column(column)
    for v in versions:
        metrics = ", ".join(f"{k} {val:.3f}" for k, val in v.metrics.items() if "accuracy" in k or "f1" in k)
        qa = "-" if v.qa_passed is None else ("passed " if v.qa_passed else "FAILED ") + (v.qa_report or "")
        colour = STAGE_COLOURS.get(v.stage.value, "white")
        table.add_row(
            v.short, v.kind.value, f"[{colour}]{v.stage.value}[/]", metrics, qa, v.approved_by or "", v.note or ""
        )
    Console().print(table)


def _echo_events(events: Any, as_json: bool) -> None:
    if as_json:
        echo_json([event.summary() for event in events])
        return
    for event in events:
        click.echo(f"{event.short}: {event.stage.value} ({event.note})")


@models.command("train-classifier")
@click.option("--name", default="stdlib-topic", show_default=True, help="Model name to register the version under.")
@data_options
@click.option("--json", "as_json", is_flag=True, help="Print the registered version as JSON.")
def models_train(name: str, data: Path | None, corpus: str | None, classes: int, per_class: int, as_json: bool) -> None:
    """Train a logistic-regression head on embeddings, export it with skl2onnx, register it.

    One record in five (by a hash of its id) is held out: its accuracy is recorded with the
    version, and `llmops models evaluate` scores the same held-out records later.
    """
    from streams.model_ops import default_actor, train_and_register

    records = _dataset(data, corpus, classes, per_class)
    click.echo(f"training {name} on {len(records)} labelled records...", err=True)
    version = _run(train_and_register(load_settings(), records, name, actor=default_actor()))
    if as_json:
        echo_json(version.summary())
        return
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in version.metrics.items())
    click.echo(f"registered {version.short} ({len(version.labels)} labels): {metrics}")
    click.echo(f"next: llmops models promote {version.short} --to qa")


@models.command("register")
@click.argument("name")
@click.argument("graph", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--labels", required=True, help="Comma-separated labels in the graph's output order.")
@click.option("--json", "as_json", is_flag=True, help="Print the registered version as JSON.")
def models_register(name: str, graph: Path, labels: str, as_json: bool) -> None:
    """Register an ONNX classifier head (input: embedding vectors; output 'probabilities')."""
    from streams.embed import version_for
    from streams.model_ops import default_actor, register_file

    settings = load_settings()
    label_list = [label.strip() for label in labels.split(",") if label.strip()]
    version = _run(
        register_file(
            settings,
            name,
            graph.read_bytes(),
            label_list,
            actor=default_actor(),
            embedder_version=version_for(settings),
            source=graph.name,
        )
    )
    _echo_events([version], as_json)


@models.command("evaluate")
@click.argument("spec", metavar="NAME@VERSION")
@data_options
@click.option("--json", "as_json", is_flag=True, help="Print the evaluated version as JSON.")
def models_evaluate(
    spec: str, data: Path | None, corpus: str | None, classes: int, per_class: int, as_json: bool
) -> None:
    """QA evaluation on the held-out records; records whether the version passes the gate."""
    from streams.model_ops import default_actor, evaluate_version

    name, version = _spec(spec)
    records = _dataset(data, corpus, classes, per_class)
    result = _run(evaluate_version(load_settings(), name, version, records, actor=default_actor()))
    if as_json:
        echo_json(result.summary())
    else:
        verdict = "passed" if result.qa_passed else "FAILED"
        click.echo(f"{result.short}: QA {verdict}: {result.qa_report}")
    if not result.qa_passed:
        sys.exit(3)


@models.command("promote")
@click.argument("spec", metavar="NAME@VERSION")
@click.option("--to", "stage", type=click.Choice(["qa", "production"]), required=True, help="Target stage.")
@click.option("--approved-by", default=None, help="Who approves (required for production).")
@click.option("--shadow", is_flag=True, help="qa: also answer a copy of production traffic (to inference.shadow).")
@click.option("--json", "as_json", is_flag=True, help="Print the changed versions as JSON.")
def models_promote(spec: str, stage: str, approved_by: str | None, shadow: bool, as_json: bool) -> None:
    """Move a version to qa, or (after a passed QA evaluation, with approval) to production."""
    from streams.model_ops import default_actor, promote

    name, version = _spec(spec)
    events = _run(
        promote(
            load_settings(), name, version, Stage(stage), actor=default_actor(), approved_by=approved_by, shadow=shadow
        )
    )
    _echo_events(events, as_json)


@models.command("rollback")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the changed versions as JSON.")
def models_rollback(name: str, as_json: bool) -> None:
    """Archive the production version of NAME and restore the one before it."""
    from streams.model_ops import default_actor, rollback

    _echo_events(_run(rollback(load_settings(), name, actor=default_actor())), as_json)


@models.command("shadow-report")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def models_shadow_report(name: str, as_json: bool) -> None:
    """Agreement of shadowing QA candidates with production, from inference.shadow."""
    from streams.model_ops import shadow_report

    report = _run(shadow_report(load_settings(), name))
    if as_json:
        echo_json(report)
        return
    if not report:
        click.echo(f"no shadow answers for {name} yet (promote a candidate with `--to qa --shadow`)")
    for version, figures in report.items():
        click.echo(
            f"{name}@{version[:12]}: {figures['answers']} shadow answers, agreement with production "
            f"{figures['agreement']:.3f}"
        )
