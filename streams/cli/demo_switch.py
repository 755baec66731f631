"""The index switch of ``llmops demo``: a second embedder built, evaluated, promoted and rolled back.

Why this exists:
    Changing the embedder is the most common model change, so ``make run`` shows the whole
    blue-green path on the corpus it just indexed: the fp32 MiniLM index version is registered,
    the worker builds it in the background from ``docs.raw`` (progress: records done / total,
    rate, ETA) while production keeps answering, production and candidate are evaluated side by
    side on the held-out labelled TEST questions, the candidate is promoted with an approval, a
    search is answered by it (the response names the index version), then a rollback switches
    back. Nothing here is a subset: the candidate holds every document the live index holds.
    Kept apart so demo.py only calls two functions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from streams.index.rebuild import BuildProgress, committed_progress
from streams.index.spec import INDEX_MODEL, IndexSpec
from streams.kafka.topics import Topics
from streams.settings import Settings

PROGRESS_EVERY_SECONDS = 10.0
SWITCH_QUESTION = "how do I delete a directory and everything in it"


def run_switch_demo(
    settings: Settings, log: Callable[[str], None], timeout: float, alive: Callable[[], bool]
) -> dict[str, Any]:
    """Register, build, evaluate, promote and roll back the fp32 index version; what happened, step by step."""
    from streams.cli.evaluation import index_evaluation
    from streams.evaluation.harness import packaged_questions, read_questions
    from streams.index.embed import version_for
    from streams.models.lifecycle import load_registry, promote, register_index, rollback
    from streams.models.registry import Stage

    live = asyncio.run(load_registry(settings)).production(INDEX_MODEL)
    if live is None:
        return {"skipped": "the worker registered no live index"}
    spec = IndexSpec("fp32", version_for(settings.model_copy(update={"embed_model": "fp32"})))
    candidate = asyncio.run(register_index(settings, spec, actor="demo"))
    log(
        f"INDEX SWITCH: registered index version {candidate.short} (embedder fp32 MiniLM, no quantization, "
        f"same chunker) beside production {live.short} (int8); the worker builds it from "
        f"{Topics(settings.namespace).docs_raw} in the background while production answers"
    )
    built = wait_for_build(settings, candidate.version, log, timeout, alive)
    summary: dict[str, Any] = {"live": live.short, "candidate": candidate.short, "build": built}
    if not built["caught_up"]:
        log(f"the build of {candidate.short} did not finish within {timeout:.0f}s (--switch-timeout); no switch shown")
        return summary
    asyncio.run(promote(settings, INDEX_MODEL, candidate.version, Stage.QA, actor="demo"))
    questions = read_questions(packaged_questions("test"))
    log(f"evaluating production {live.short} and candidate {candidate.short} on the held-out TEST questions...")
    summary["evaluation"] = index_evaluation(settings, questions, "hybrid", candidate.version, timeout=120.0)
    if not summary["evaluation"]["qa_passed"]:
        log(f"the gate refused {candidate.short}: {summary['evaluation']['qa_report']}")
        return summary
    asyncio.run(
        promote(settings, INDEX_MODEL, candidate.version, Stage.PRODUCTION, actor="demo", approved_by="demo (make run)")
    )
    summary["promoted"] = answer_from(settings, candidate.version)
    asyncio.run(rollback(settings, INDEX_MODEL, actor="demo"))
    summary["rolled_back"] = answer_from(settings, live.version)
    summary["as_expected"] = (
        index_of(summary["promoted"]) == candidate.version and index_of(summary["rolled_back"]) == live.version
    )
    return summary


def wait_for_build(
    settings: Settings, version: str, log: Callable[[str], None], timeout: float, alive: Callable[[], bool]
) -> dict[str, Any]:
    """Poll the build's committed offsets until it has read every ``docs.raw`` record; progress every 10 s."""
    progress = BuildProgress(version)
    started = last_shown = time.monotonic()
    while True:
        progress.update(*asyncio.run(committed_progress(settings, version)))
        caught_up = progress.total > 0 and progress.done >= progress.total
        now = time.monotonic()
        if caught_up or not alive() or now - started > timeout:
            return {**progress.as_dict(), "caught_up": caught_up, "seconds": round(now - started, 1)}
        if now - last_shown >= PROGRESS_EVERY_SECONDS:
            eta = progress.as_dict()["eta_s"]
            log(
                f"  building {version[:12]}: {progress.done}/{progress.total} docs.raw records, "
                f"{progress.rate:.1f}/s, ETA {'?' if eta is None else f'{eta:.0f} s'}"
            )
            last_shown = now
        time.sleep(1.0)


def answer_from(settings: Settings, version: str, wait_seconds: float = 120.0) -> dict[str, Any]:
    """A search answered by index ``version`` (workers switch when they read the event; asked until one has)."""
    from streams.inference.client import InferenceClient

    async def ask() -> dict[str, Any]:
        deadline = time.monotonic() + wait_seconds
        async with InferenceClient(settings) as client:
            while True:
                response = await client.ask(SWITCH_QUESTION, "search", timeout=60.0, top_k=3)
                if index_of(response) == version or time.monotonic() > deadline:
                    return response

    return asyncio.run(ask())


def index_of(response: dict[str, Any]) -> str | None:
    return next((m["version"] for m in response["models"] if m["name"] == INDEX_MODEL), None)


def print_switch(summary: dict[str, Any], alias: dict[str, Any] | None) -> None:
    """The switch, step by step: build, evaluation table, promotion, a search on each side, rollback, the alias."""
    from rich.console import Console
    from rich.table import Table

    from streams.cli.inference import print_response

    console = Console()
    console.print("[bold]Index switch (blue-green re-indexing)[/]")
    if "skipped" in summary:
        console.print(f"[yellow]not shown: {summary['skipped']}[/]")
        return
    build = summary["build"]
    console.print(
        f"built candidate {summary['candidate']} (fp32) beside production {summary['live']} (int8): "
        f"{build['done']}/{build['total']} docs.raw records in {build['seconds']} s"
        + ("" if build["caught_up"] else " [red](did not finish: no switch)[/]")
    )
    evaluation = summary.get("evaluation")
    if evaluation is None:
        return
    table = Table(title=f"Retrieval on {evaluation['questions']} held-out TEST questions (hybrid), mean [95% interval]")
    for column in ("index", "recall@1", "recall@5", "MRR", "nDCG@10", "p99 ms"):
        table.add_column(column)
    for row in evaluation["table"]:
        table.add_row(
            row["system"],
            f"{row['recall@1']['mean']:.3f}",
            *(
                f"{row[k]['mean']:.3f} [{row[k]['low']:.3f}, {row[k]['high']:.3f}]"
                for k in ("recall@5", "mrr", "ndcg@10")
            ),
            f"{row['latency_ms']['p99']:.0f}",
        )
    console.print(table)
    console.print(f"gate: {'passed' if evaluation['qa_passed'] else '[red]FAILED[/]'}: {evaluation['qa_report']}")
    for key, what in (("promoted", "after the promotion (approved)"), ("rolled_back", "after the rollback")):
        if key in summary:
            response = summary[key]
            console.print(
                f"\n> search {what}: {SWITCH_QUESTION}  [bold]answered by {INDEX_MODEL}@{index_of(response)}[/]"
            )
            print_response(response)
    if alias is not None and "rolled_back" in summary:
        console.print(f"Milvus alias {alias['alias']} -> {alias['collection']} (the live index's collection again)")
