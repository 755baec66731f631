"""``llmops eval retrieval|rag`` and ``llmops models train-ranker``: judge and train on labelled questions.

Why this exists:
    Users judge the platform by its answers, and the ranker's QA gate is a retrieval evaluation.
    These commands ask the running worker over Kafka, exactly as applications do, so what they
    report (quality and client send -> reply latency) is what the deployment delivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path
from typing import Any

import click

from streams.cli.support import NotReady, echo_json, kafka_options, load_settings

FILE_HELP = """FILE is JSONL, one question per line:

\b
  {"question": "...", "relevant": ["doc-id", ...], "answer_pattern": "regex", "tenant": null}
  {"question": "...", "relevant": [], "unanswerable": true}

Without FILE the project's own labelled TEST split of the stdlib corpus is used
(streams/evaluation/data/; index it first: `llmops publish --corpus stdlib`)."""


def _questions(file: Path | None, split: str) -> Any:
    from streams.evaluation.harness import packaged_questions, read_questions

    try:
        return read_questions(file or packaged_questions(split))
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None


def _kafka_asker(client: Any, timeout: float, model: str | None = None) -> Any:
    async def ask(question: Any, mode: str, top_k: int, explain: bool, task: str) -> dict[str, Any]:
        response: dict[str, Any] = await client.ask(
            question.question, task, timeout=timeout, top_k=top_k, explain=explain, retrieval=mode, model=model
        )
        return response

    return ask


def _progress(label: str) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
    )
    task = progress.add_task(label, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    return progress, update


def _run_with_client(tenant: str | None, work: Any, settings: Any = None) -> Any:
    from streams.inference.client import InferenceClient, InferenceTimeout

    settings = settings or load_settings()

    async def run() -> Any:
        async with InferenceClient(settings, tenant=tenant) as client:
            return await work(client)

    try:
        return asyncio.run(run())
    except (TimeoutError, InferenceTimeout):
        raise NotReady(
            "no answer in time (--timeout): is a worker with the infer agent running (`llmops worker`)?"
        ) from None
    except RuntimeError as error:
        raise click.ClickException(str(error)) from None


@click.group("eval")
def eval_group() -> None:
    """Measure retrieval and answers on labelled questions, through the running worker."""


@eval_group.command("retrieval", epilog=FILE_HELP)
@kafka_options
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--modes",
    default="bm25,dense,hybrid,ranked",
    show_default=True,
    help="Systems side by side: bm25, dense, hybrid (Milvus RRF), ranked (hybrid + the production ranker).",
)
@click.option("--tenant", default=None, help="Ask as this tenant (the questions' tenant field is not used).")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for each answer.")
@click.option(
    "--index",
    "index_version",
    default=None,
    help="An index version (chunks@VERSION or VERSION): production and it side by side, its QA gate recorded.",
)
@click.option("--gate-metric", default="recall@5", show_default=True, help="--index: the metric the gate compares.")
@click.option("--max-drop", type=float, default=0.0, show_default=True, help="--index: allowed drop below production.")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
def eval_retrieval(
    file: Path | None,
    modes: str,
    tenant: str | None,
    timeout: float,
    index_version: str | None,
    gate_metric: str,
    max_drop: float,
    as_json: bool,
) -> None:
    """Recall@1/5/10, MRR and nDCG@10 with 95% bootstrap intervals, one row per retrieval system.

    With --index, one row for the production index and one for the candidate (the first of
    --modes, on the same questions), and the candidate's QA gate against production is recorded
    on models.control (exit 1 when it fails). Latency is the client's send -> reply over Kafka.
    """
    from streams.evaluation.harness import evaluate_retrieval, retrieval_table

    questions = _questions(file, "test")
    wanted = [m.strip() for m in modes.split(",") if m.strip()]
    unknown = sorted(set(wanted) - {"bm25", "dense", "hybrid", "ranked"})
    if unknown:
        raise click.BadParameter(
            f"unknown mode(s) {unknown}; choose from bm25, dense, hybrid, ranked", param_hint="--modes"
        )
    if index_version is not None:
        _eval_index(questions, wanted[0], index_version, tenant, timeout, gate_metric, max_drop, as_json)
        return
    progress, update = _progress("asking")

    async def work(client: Any) -> Any:
        with progress:
            return await evaluate_retrieval(questions, _kafka_asker(client, timeout), wanted, progress=update)

    table = retrieval_table(_run_with_client(tenant, work))
    if as_json:
        echo_json(table)
        return
    click.echo(f"{sum(not q.unanswerable for q in questions)} answerable questions; mean [95% interval]")
    columns = (("recall@1", 8), ("recall@5", 21), ("recall@10", 9), ("MRR@5", 21), ("nDCG@10", 8), ("p50 ms", 7))
    click.echo(f"{'system':<18} " + " ".join(f"{name:>{width}}" for name, width in columns) + f" {'p99 ms':>7}")
    for row in table:
        click.echo(
            f"{row['system']:<18} {row['recall@1']['mean']:>8.3f} {_interval(row['recall@5']):>21} "
            f"{row['recall@10']['mean']:>9.3f} {_interval(row['mrr@5']):>21} {row['ndcg@10']['mean']:>8.3f} "
            f"{row['latency_ms']['p50']:>7.1f} {row['latency_ms']['p99']:>7.1f}"
        )


def _eval_index(
    questions: Any,
    mode: str,
    index_version: str,
    tenant: str | None,
    timeout: float,
    gate_metric: str,
    max_drop: float,
    as_json: bool,
) -> None:
    """Production and a candidate index on the same questions; the gate's verdict recorded."""
    progress, update = _progress("asking")
    result = index_evaluation(
        load_settings(), questions, mode, index_version, timeout, gate_metric, max_drop, tenant, update, progress
    )
    if as_json:
        echo_json({k: result[k] for k in ("table", "qa_passed", "qa_report")})
    else:
        click.echo(f"{result['questions']} answerable questions, mode {mode}; mean [95% interval]")
        for row in result["table"]:
            click.echo(
                f"{row['system']:<36} recall@5 {_interval(row['recall@5'])}  MRR {_interval(row['mrr'])}  "
                f"nDCG@10 {_interval(row['ndcg@10'])}  p99 {row['latency_ms']['p99']:.1f} ms"
            )
        click.echo(f"gate: {'passed' if result['qa_passed'] else 'FAILED'}: {result['qa_report']}")
    if not result["qa_passed"]:
        sys.exit(1)


def index_evaluation(
    settings: Any,
    questions: Any,
    mode: str,
    index_version: str,
    timeout: float = 30.0,
    gate_metric: str = "recall@5",
    max_drop: float = 0.0,
    tenant: str | None = None,
    update: Any = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Ask production and candidate index ``index_version`` the same questions; record the gate's verdict.

    Returns the table (one row each), ``qa_passed``, ``qa_report`` and the number of questions
    (also what ``llmops demo`` shows).

    Raises:
        click.ClickException: an unknown version or metric, or a verdict the registry refused.
    """
    from streams.evaluation.harness import evaluate_retrieval, index_gate_metrics, retrieval_table
    from streams.index.spec import INDEX_MODEL
    from streams.models.indexes import IndexGate
    from streams.models.lifecycle import default_actor, load_registry, record_index_evaluation
    from streams.models.registry import RegistryError

    version = index_version.removeprefix(f"{INDEX_MODEL}@")
    try:
        registry = asyncio.run(load_registry(settings))
        candidate = registry.get(INDEX_MODEL, version)
    except RegistryError as error:
        raise click.ClickException(str(error)) from None
    production = registry.production(INDEX_MODEL)

    async def work(client: Any) -> Any:
        # The progress bar only while asking: a failure before or after prints nothing on stdout.
        with progress or contextlib.nullcontext():
            theirs = await evaluate_retrieval(questions, _kafka_asker(client, timeout), [mode], progress=update)
            ours = await evaluate_retrieval(
                questions, _kafka_asker(client, timeout, candidate.key), [mode], progress=update
            )
        return theirs[mode], ours[mode]

    theirs, ours = _run_with_client(tenant, work, settings)
    names = {
        f"production {production.short if production else 'live'}": theirs,
        f"candidate {candidate.short}": ours,
    }
    table = retrieval_table(names)
    if gate_metric not in table[0]:
        raise click.BadParameter(f"{gate_metric!r} is not a reported metric", param_hint="--gate-metric")
    metrics, against = index_gate_metrics(ours, theirs, gate_metric)
    comparable = production is not None and production.key != candidate.key
    gate = IndexGate(metric=gate_metric, max_drop=max_drop)
    try:
        recorded = asyncio.run(
            record_index_evaluation(
                settings, candidate.version, metrics, against if comparable else None, gate, actor=default_actor()
            )
        )
    except (RegistryError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    return {
        "table": table,
        "qa_passed": recorded.qa_passed,
        "qa_report": recorded.qa_report,
        "questions": len(theirs.rows),
    }


def _interval(estimate: dict[str, float]) -> str:
    return f"{estimate['mean']:.3f} [{estimate['low']:.3f},{estimate['high']:.3f}]"


@eval_group.command("rag", epilog=FILE_HELP)
@kafka_options
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tenant", default=None, help="Ask as this tenant.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for each answer.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary (and each answer with --verbose) as JSON.")
@click.option("--verbose", is_flag=True, help="Also print every question with its answer and verdict.")
def eval_rag(file: Path | None, tenant: str | None, timeout: float, as_json: bool, verbose: bool) -> None:
    """Answer correctness, citation precision, groundedness, abstention and latency of rag answers.

    Correct = not abstained and the answer matches the question's answer_pattern; a citation is
    precise when the cited passage is from a relevant document or holds the pattern.
    """
    from streams.evaluation.harness import evaluate_rag, rag_summary

    questions = _questions(file, "test")
    progress, update = _progress("asking")

    async def work(client: Any) -> Any:
        with progress:
            return await evaluate_rag(questions, _kafka_asker(client, timeout), progress=update)

    results = _run_with_client(tenant, work)
    summary = rag_summary(results)
    rows = [
        {
            "id": r.question.id,
            "question": r.question.question,
            "answer": r.answer,
            "abstained": r.abstained,
            "grounded": r.grounded,
            "correct": r.correct,
            "citation_precision": r.citation_precision,
            "latency_ms": round(r.latency_ms, 1),
        }
        for r in results
    ]
    if as_json:
        echo_json({"summary": summary, "answers": rows} if verbose else summary)
        return
    if verbose:
        for row in rows:
            verdict = "abstained" if row["abstained"] else ("correct" if row["correct"] else "wrong")
            click.echo(f"{row['id']}: {row['question']}\n    -> {row['answer']}  [{verdict}]")
    for name, value in summary.items():
        click.echo(f"{name:<22} {value}")


@click.command("train-ranker", epilog=FILE_HELP.replace("TEST split", "DEV split"))
@kafka_options
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", default=None, help="Ranker name (default: LLMOPS_RANKER_NAME, the one search uses).")
@click.option("--tenant", default=None, help="Ask as this tenant.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for each answer.")
@click.option("--json", "as_json", is_flag=True, help="Print the evaluated version and metrics as JSON.")
def train_ranker_command(
    file: Path | None, name: str | None, tenant: str | None, timeout: float, as_json: bool
) -> None:
    """Train a ranker on labelled DEV questions, register it, and record its QA gate.

    Candidates and their features come from the running worker (its own retrieval), so the
    ranker learns what production sees. Metrics and the abstention threshold are 5-fold
    cross-validated on the questions; the gate compares them with production on the same
    questions. Promote with `llmops models promote NAME@VERSION --to production --approved-by WHO`.
    """
    from streams.evaluation.harness import collect_candidates
    from streams.evaluation.ranker_training import train_and_register_ranker
    from streams.models.lifecycle import default_actor

    settings = load_settings()
    questions = _questions(file, "dev")
    progress, update = _progress("collecting candidates")
    embedder_version: list[str] = []

    async def work(client: Any) -> Any:
        ask = _kafka_asker(client, timeout)

        async def asking(question: Any, mode: str, top_k: int, explain: bool, task: str) -> dict[str, Any]:
            response: dict[str, Any] = await ask(question, mode, top_k, explain, task)
            embedder_version[:] = [m["version"] for m in response.get("models", []) if m["stage"] == "production"][:1]
            return response

        with progress:
            sets = await collect_candidates(questions, asking, progress=update)
        if not embedder_version:
            raise RuntimeError("the worker's answers name no embedder version; is the worker up to date?")
        return await train_and_register_ranker(
            settings,
            sets,
            name=name or settings.ranker_name,
            embedder_version=embedder_version[0],
            actor=default_actor(),
            source=str(file or "the packaged dev split"),
        )

    version, training, against = _run_with_client(tenant, work)
    report = {
        "version": version.short,
        "stage": version.stage.value,
        "qa_passed": version.qa_passed,
        "qa_report": version.qa_report,
        "metrics": training.metrics,
        "production_on_same_questions": against,
        "coefficients": training.trained.coefficients,
    }
    if as_json:
        echo_json(report)
    else:
        for key, value in report.items():
            click.echo(f"{key:<30} {value}")
        if version.qa_passed:
            click.echo(f"next: llmops models promote {version.short} --to production --approved-by NAME")
    if not version.qa_passed:
        sys.exit(1)
