"""``llmops models ...``: the model lifecycle from a terminal (train, register, evaluate, promote, roll back).

Why this exists:
    People manage model versions from a terminal and scripts do the same with ``--json``. Every
    registry change is an event on ``models.control`` that running workers pick up without a
    restart.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from streams.cli.support import EXIT_FAILURE, echo_json, kafka_options, load_settings
from streams.models.registry import Kind, RegistryError, Stage

INDEX_TYPE_NAMES = [
    "HNSW",
    "HNSW_SQ",
    "IVF_FLAT",
    "IVF_SQ8",
]  # streams.index.vectorstore.INDEX_TYPES (not imported: slow)
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


# --- models --------------------------------------------------------------------------------
@click.group()
def models() -> None:
    """The model registry on models.control: train, register, evaluate, promote, roll back.

    Lifecycle: registered -> qa -> production -> archived. Production needs a passed QA
    evaluation (gate: LLMOPS_QA_MIN_ACCURACY, LLMOPS_QA_MAX_DROP) and --approved-by.
    Running workers switch models on each event, without a restart.
    """


def _dataset(data: Path | None, corpus: str | None, classes: int, per_class: int) -> Any:
    from streams.models.classifier import read_labelled_jsonl, stdlib_topic_dataset

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
@kafka_options
@click.option("--name", default=None, help="Only this model.")
@click.option("--json", "as_json", is_flag=True, help="Print the versions as JSON.")
def models_list(name: str | None, as_json: bool) -> None:
    """Every registered version with its stage, metrics and approvals."""
    from rich.console import Console
    from rich.table import Table

    from streams.models.lifecycle import load_registry

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
        if v.kind is Kind.INDEX:  # an index version: its spec and collection instead of training metrics
            metrics = ", ".join(label for label in v.labels if not label.startswith("index_params")) + f" -> {v.uri}"
        qa = "-" if v.qa_passed is None else ("passed " if v.qa_passed else "FAILED ") + (v.qa_report or "")
        colour = STAGE_COLOURS.get(v.stage.value, "white")
        table.add_row(
            v.short, v.kind.value, f"[{colour}]{v.stage.value}[/]", metrics, qa, v.approved_by or "", v.note or ""
        )
    Console().print(table)


@models.command("show")
@kafka_options
@click.argument("spec", metavar="NAME@VERSION")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
def models_show(spec: str, as_json: bool) -> None:
    """One version's whole record (an index version: its spec in labels, its collection in uri)."""
    from streams.models.lifecycle import load_registry

    name, version = _spec(spec)
    registry = _run(load_registry(load_settings()))
    try:
        summary = registry.get(name, version).summary()
    except RegistryError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        echo_json(summary)
        return
    for key, value in summary.items():
        click.echo(f"{key}: {value}")


@models.command("register-index")
@kafka_options
@click.option("--embedder", type=click.Choice(["int8", "fp32", "shipped"]), required=True, help="The embedder graph.")
@click.option("--chunk-tokens", type=int, default=128, show_default=True, help="Max tokens per chunk.")
@click.option("--chunk-overlap", type=int, default=16, show_default=True, help="Tokens shared by neighbours.")
@click.option(
    "--max-chunks", type=int, default=0, show_default=True, help="Index each document's first N chunks (0: all)."
)
@click.option("--index-type", type=click.Choice(INDEX_TYPE_NAMES), default="HNSW", help="Milvus dense index.")
@click.option("--json", "as_json", is_flag=True, help="Print the registered version as JSON.")
def models_register_index(
    embedder: str, chunk_tokens: int, chunk_overlap: int, max_chunks: int, index_type: str, as_json: bool
) -> None:
    """Register a candidate index version; the worker that owns Milvus builds it from docs.raw.

    Follow the build with `llmops index status`, then `llmops eval retrieval --index VERSION`,
    `llmops models promote chunks@VERSION --to production --approved-by NAME`.
    """
    from streams.index.embed import version_for
    from streams.index.spec import IndexSpec
    from streams.models.lifecycle import default_actor, register_index

    settings = load_settings()
    try:
        spec = IndexSpec(
            embedder=embedder,
            embedder_version=version_for(settings.model_copy(update={"embed_model": embedder})),
            chunk_tokens=chunk_tokens,
            chunk_overlap=chunk_overlap,
            index_type=index_type,
            max_chunks=max_chunks,
        )
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    _echo_events([_run(register_index(settings, spec, actor=default_actor()))], as_json)


def _echo_events(events: Any, as_json: bool) -> None:
    if as_json:
        echo_json([event.summary() for event in events])
        return
    for event in events:
        click.echo(f"{event.short}: {event.stage.value} ({event.note})")


@models.command("train-classifier")
@kafka_options
@click.option("--name", default="stdlib-topic", show_default=True, help="Model name to register the version under.")
@data_options
@click.option("--json", "as_json", is_flag=True, help="Print the registered version as JSON.")
def models_train(name: str, data: Path | None, corpus: str | None, classes: int, per_class: int, as_json: bool) -> None:
    """Train a logistic-regression head on embeddings, export it with skl2onnx, register it.

    One record in five (by a hash of its id) is held out: its accuracy is recorded with the
    version, and `llmops models evaluate` scores the same held-out records later.
    """
    from streams.models.lifecycle import default_actor, train_and_register

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
@kafka_options
@click.argument("name")
@click.argument("graph", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--labels", required=True, help="Comma-separated labels in the graph's output order.")
@click.option("--json", "as_json", is_flag=True, help="Print the registered version as JSON.")
def models_register(name: str, graph: Path, labels: str, as_json: bool) -> None:
    """Register an ONNX classifier head (input: embedding vectors; output 'probabilities')."""
    from streams.index.embed import version_for
    from streams.models.lifecycle import default_actor, register_file

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


@models.command("register-embedder")
@kafka_options
@click.option("--json", "as_json", is_flag=True, help="Print the registered version as JSON.")
def models_register_embedder(as_json: bool) -> None:
    """Record the embedder this deployment runs and its live index (workers do it when they may sign events)."""
    from streams.index.embed import OnnxEmbedder
    from streams.models.lifecycle import register_embedder

    settings = load_settings()
    events = _run(register_embedder(settings, OnnxEmbedder.from_settings(settings)))
    if not events:
        click.echo("the embedder and its live index are registered already")
        return
    _echo_events(events, as_json)


@models.command("evaluate")
@kafka_options
@click.argument("spec", metavar="NAME@VERSION")
@data_options
@click.option("--json", "as_json", is_flag=True, help="Print the evaluated version as JSON.")
def models_evaluate(
    spec: str, data: Path | None, corpus: str | None, classes: int, per_class: int, as_json: bool
) -> None:
    """QA evaluation on the held-out records; records whether the version passes the gate."""
    from streams.models.lifecycle import default_actor, evaluate_version

    name, version = _spec(spec)
    records = _dataset(data, corpus, classes, per_class)
    result = _run(evaluate_version(load_settings(), name, version, records, actor=default_actor()))
    if as_json:
        echo_json(result.summary())
    else:
        verdict = "passed" if result.qa_passed else "FAILED"
        click.echo(f"{result.short}: QA {verdict}: {result.qa_report}")
    if not result.qa_passed:
        sys.exit(EXIT_FAILURE)


@models.command("promote")
@kafka_options
@click.argument("spec", metavar="NAME@VERSION")
@click.option("--to", "stage", type=click.Choice(["qa", "production"]), required=True, help="Target stage.")
@click.option("--approved-by", default=None, help="Who approves (required for production).")
@click.option("--shadow", is_flag=True, help="qa: also answer a copy of production traffic (to inference.shadow).")
@click.option("--json", "as_json", is_flag=True, help="Print the changed versions as JSON.")
def models_promote(spec: str, stage: str, approved_by: str | None, shadow: bool, as_json: bool) -> None:
    """Move a version to qa, or (after a passed QA evaluation, with approval) to production."""
    from streams.models.lifecycle import default_actor, promote

    name, version = _spec(spec)
    events = _run(
        promote(
            load_settings(), name, version, Stage(stage), actor=default_actor(), approved_by=approved_by, shadow=shadow
        )
    )
    _echo_events(events, as_json)


@models.command("rollback")
@kafka_options
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the changed versions as JSON.")
def models_rollback(name: str, as_json: bool) -> None:
    """Archive the production version of NAME and restore the one before it."""
    from streams.models.lifecycle import default_actor, rollback

    _echo_events(_run(rollback(load_settings(), name, actor=default_actor())), as_json)


@models.command("shadow-report")
@kafka_options
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def models_shadow_report(name: str, as_json: bool) -> None:
    """Agreement of shadowing QA candidates with production, from inference.shadow."""
    from streams.models.lifecycle import shadow_report

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
