"""The monitoring half of ``llmops demo``: a reference, a shifted batch on purpose, and what the monitor saw.

Why this exists:
    ``make run`` should end by showing what the monitor saw of the demo's documents and
    questions (rates, drift against the stdlib reference, latency SLOs, alerts), the view
    ``llmops monitor status --once`` gives, and that its drift alarms can be trusted: the demo's
    own corpus, published in order, must raise no drift alert, and a batch of other text
    published on purpose afterwards (installed packages' long descriptions, labelled as such)
    must raise one. Kept apart so demo.py only calls a few functions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from streams.ingest.publish import encode_document, publish_records
from streams.kafka.progress import end_offsets, wait_for_stages
from streams.kafka.topics import Topics
from streams.monitor.reference import load_reference, package_description_texts, set_stdlib_reference
from streams.monitor.status import monitor_status, read_records
from streams.records import now_ms
from streams.settings import Settings

SHIFTED_SOURCE = "demo-shifted-batch"


def prepare_monitor(settings: Settings, log: Callable[[str], None]) -> int:
    """Store a stdlib reference (the whole corpus, which the demo publishes) unless one is set; now, in epoch ms."""
    since_ms = now_ms()
    reference = asyncio.run(load_reference(settings))
    documents = reference.samples.get("documents") if reference is not None else None
    stale_stdlib = (
        reference is not None
        and documents is not None
        and documents.drawn_from == 0
        and "stdlib corpus" in reference.description
    )
    if reference is None or documents is None or documents.groups is None or stale_stdlib:
        # A reference stored before thresholds were calibrated by blocks has no blocks: its
        # row-by-row thresholds fire on a corpus published in order, so it is replaced. So is a
        # stdlib reference of whole packages drawn at random: it missed packages (tkinter, turtle)
        # whose windows then alarmed; the current one holds a share of every package.
        log("setting the monitor's drift reference from the stdlib corpus...")
        reference = set_stdlib_reference(settings, split="all")
    log(f"monitor reference {reference.reference_id} ({reference.description})")
    return since_ms


def shifted_documents(settings: Settings) -> list[dict[str, Any]]:
    """Package descriptions (not stdlib docstrings) worth ``alert_after + 1`` documents windows of chunks."""
    from streams.ingest.chunk import default_tokenizer
    from streams.monitor.reference import document_chunks

    tokenizer = default_tokenizer()
    wanted = (settings.monitor_alert_after + 1) * settings.monitor_window_events
    documents: list[dict[str, Any]] = []
    chunks = 0
    for number, text in enumerate(package_description_texts()):
        if chunks >= wanted:
            break
        chunks += len(document_chunks([text], tokenizer, settings))
        # A tenant of its own: the monitor sees every tenant's embeddings, while searches without a
        # tenant (the demo's questions, on a later `make run` too) never retrieve this batch.
        documents.append(
            {"id": f"{SHIFTED_SOURCE}:{number}", "text": text, "source": SHIFTED_SOURCE, "tenant": SHIFTED_SOURCE}
        )
    return documents


def publish_shifted_batch(
    settings: Settings, log: Callable[[str], None], timeout: float, alive: Callable[[], bool]
) -> dict[str, Any] | None:
    """Publish the shifted batch on purpose and wait until the worker has indexed and monitored it."""
    documents = shifted_documents(settings)
    log(
        f"SHIFTED BATCH, ON PURPOSE: publishing {len(documents)} installed packages' long descriptions "
        f"(source {SHIFTED_SOURCE}, not stdlib docstrings) to show a real drift alert..."
    )
    started_ms = now_ms()
    asyncio.run(publish_records(settings, [encode_document(d) for d in documents]))
    raw_end = asyncio.run(end_offsets(settings, [Topics(settings.namespace).docs_raw]))
    from streams.worker_process import ALL_AGENTS

    ok, _ = wait_for_stages(settings, [ALL_AGENTS], raw_end, timeout, alive=alive, log=log)
    return {"documents": len(documents), "source": SHIFTED_SOURCE, "published_at_ms": started_ms, "processed": ok}


def monitor_summary(settings: Settings, shifted: dict[str, Any] | None = None, since_ms: int = 0) -> dict[str, Any]:
    """What ``llmops monitor status --json`` prints, and this run's drift alerts before and after the shifted batch."""
    status = asyncio.run(monitor_status(settings))
    alerts = asyncio.run(read_records(settings, Topics(settings.namespace).monitor_alerts, "Alert"))
    drift = [
        a
        for a in alerts
        if a["metric"].startswith("drift.") and a["state"] == "FIRING" and a["created_at_ms"] >= since_ms
    ]
    shift_ms = shifted["published_at_ms"] if shifted else None
    status["drift_check"] = {
        "own_corpus_alerts": [a for a in drift if shift_ms is None or a["window_end_ms"] < shift_ms],
        "shifted_batch": shifted,
        "shifted_batch_alerts": [a for a in drift if shift_ms is not None and a["window_end_ms"] >= shift_ms],
    }
    return status


def print_monitor(status: dict[str, Any]) -> None:
    from rich.console import Console

    from streams.cli.monitor import render_status

    console = Console()
    console.print(render_status(status))
    check = status.get("drift_check")
    if check is None:
        return

    def line(alert: dict[str, Any]) -> str:
        return (
            f"{alert['metric']} = {alert['value']:.4g} > {alert['threshold']:.4g} "
            f"(window {alert['window_id']}, {alert['breaches']} breaching windows in a row)"
        )

    own = check["own_corpus_alerts"]
    verdict = "[green]none, as expected[/]" if not own else "[red]" + "; ".join(map(line, own)) + "[/]"
    console.print(f"[bold]drift alerts on the demo's own corpus (stdlib, published in order):[/] {verdict}")
    shifted = check["shifted_batch"]
    if shifted is None:
        console.print("[yellow]no shifted batch published (the worker did not catch up with the corpus)[/]")
        return
    raised = check["shifted_batch_alerts"]
    console.print(
        f"[bold]SHIFTED BATCH, published on purpose[/] ({shifted['documents']} installed packages' long "
        f"descriptions, source {shifted['source']}): "
        + (
            "[yellow]" + "; ".join(map(line, raised)) + "[/] (a real drift alert, as expected)"
            if raised
            else "[red]no drift alert[/]"
        )
    )
