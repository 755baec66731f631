"""``llmops monitor ...``: set the drift reference, watch the monitor, and plot its history.

Why this exists:
    People need one place to see whether the stream is healthy (lag, rates, drift, SLOs, open
    alerts) and to fix what "normal" means (the reference); scripts need the same as JSON.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import click

from streams.cli.support import echo_json, kafka_options, load_settings


@click.group()
def monitor() -> None:
    """Online monitoring: drift, quality, fairness, latency, cost and alerts (agent group "monitor")."""


@monitor.command("set-reference")
@kafka_options
@click.option("--corpus", type=click.Choice(["stdlib"]), help="Docstring chunks of the standard library.")
@click.option(
    "--split",
    type=click.Choice(["reference", "holdout", "all"]),
    default="reference",
    show_default=True,
    help="Which half of the corpus (documents are split by a hash of their id).",
)
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="JSONL or text.")
@click.option("--topic", default=None, help="A topic range: docs.embeddings, docs.raw, inference.requests/responses.")
@click.option("--from-offset", type=int, default=0, show_default=True, help="First offset per partition.")
@click.option("--to-offset", type=int, default=None, help="Stop before this offset per partition.")
@click.option("--size", type=int, default=None, help="Rows to sample (default LLMOPS_MONITOR_REFERENCE_SIZE).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the stored reference as JSON.")
def set_reference(
    corpus: str | None,
    split: str,
    file: Path | None,
    topic: str | None,
    from_offset: int,
    to_offset: int | None,
    size: int | None,
    seed: int,
    as_json: bool,
) -> None:
    """Fix the sample that drift is measured against, on the compacted topic monitor.reference.

    Setting the documents reference keeps the requests and responses ones (and vice versa).
    Running monitors switch to it at once; restarted ones read it back.
    """
    from streams.kafka.topics import Topics
    from streams.monitor.config import MonitorConfig
    from streams.monitor.reference import (
        corpus_blocks,
        documents_from_blocks,
        documents_from_texts,
        read_texts_file,
        samples_from_topic,
        store_reference,
        summary,
    )

    if sum(x is not None for x in (corpus, file, topic)) != 1:
        raise click.UsageError("give exactly one of --corpus stdlib, --file PATH or --topic NAME")
    settings = load_settings()
    rows = size or settings.monitor_reference_size
    try:
        if corpus is not None:
            samples = documents_from_blocks(settings, corpus_blocks(split), rows, seed)
            description = f"stdlib corpus, {split} half, {rows} chunks of whole documents of every package, seed {seed}"
        elif file is not None:
            samples = documents_from_texts(settings, read_texts_file(file), rows, seed)
            description = f"file {file}, {rows} chunks, seed {seed}"
        else:
            prefixed = settings.namespace and not str(topic).startswith(settings.namespace + ".")
            name = Topics(settings.namespace).name(str(topic)) if prefixed else str(topic)
            samples = asyncio.run(samples_from_topic(settings, name, from_offset, to_offset, rows, seed))
            description = f"topic {name} offsets [{from_offset}, {to_offset or 'end'}), {rows} rows, seed {seed}"
        if not samples:
            raise ValueError("nothing usable in that source (no OK responses with hits or labels?)")
        reference = asyncio.run(store_reference(settings, samples, description))
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    config = MonitorConfig.from_settings(settings)
    data = summary(reference)
    data["thresholds"] = {
        stream: dict(t.values) if (t := reference.thresholds(stream, config.window_events, config)) else None
        for stream in samples
    }
    if as_json:
        echo_json(data)
        return
    click.echo(f"reference {reference.reference_id} stored on {Topics(settings.namespace).monitor_reference}")
    for stream, values in data["thresholds"].items():
        line = ", ".join(f"{k} {v:.4g}" for k, v in (values or {}).items()) or "window larger than the sample"
        click.echo(f"  {stream}: {reference.samples[stream].size} rows; thresholds at {config.window_events}: {line}")


KEY_METRICS = (
    "per_second",
    "drift.embedding.mmd",
    "drift.length_chars.ks",
    "latency.total.p95",
    "responses.error_share",
    "quality.accuracy",
    "quality.confidence_mean",
    "cost.cpu_seconds_per_1000_chunks",
    "cost.compute_ms_per_request",
)


def render_status(status: dict[str, Any]) -> Any:
    """A rich renderable of :func:`streams.monitor.status.monitor_status` (fits 80 columns)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    reference = status["reference"]
    parts: list[Any] = [
        Text(
            f"namespace {status['namespace'] or '(live)'}; reference "
            + (f"{reference['reference_id']} ({', '.join(reference['samples'])})" if reference else "NOT SET")
            + "; lag "
            + (", ".join(f"{k} {v}" for k, v in status["lag"].items()) or "unknown (no monitor group)")
        )
    ]
    for stream, snapshot in sorted(status["streams"].items()):
        table = Table(
            title=f"{stream}: window {snapshot['seq']} ({snapshot['events']} events, by {snapshot['closed_by']})",
            title_justify="left",
        )
        table.add_column("statistic", overflow="fold")
        table.add_column("slice", overflow="fold")
        table.add_column("value", justify="right", no_wrap=True)
        table.add_column("threshold", justify="right", no_wrap=True)
        table.add_column("", no_wrap=True)
        for metric in snapshot["metrics"]:
            shown = metric["threshold"] is not None or metric["name"].endswith(KEY_METRICS)
            if not shown or (metric["slice"] and not metric["breached"]):
                continue
            threshold = "" if metric["threshold"] is None else f"{metric['threshold']:.4g}"
            verdict = "[red]BREACH[/]" if metric["breached"] else ("[green]ok[/]" if threshold else "")
            value = f"{metric['value']:.4g}"
            if metric.get("p_value") is not None:  # drift: how rare under the reference's null
                value += f" (p {metric['p_value']:.3g})"
            table.add_row(metric["name"], metric["slice"] or "", value, threshold, verdict)
        parts.append(table)
    parts.append(Text(f"Open alerts: {len(status['open_alerts'])}", style="bold"))
    for alert in status["open_alerts"]:
        side = ">" if alert["direction"] == "above" else "<"
        where = f" [{alert['slice']}]" if alert["slice"] else ""
        parts.append(
            Text(
                f"  {alert['severity'].upper()} {alert['metric']}{where}"
                f" = {alert['value']:.4g} {side} {alert['threshold']:.4g} (window {alert['window_id']})\n"
                f"    {alert['hint']}",
                style="red" if alert["severity"] == "critical" else "yellow",
            )
        )
    return Group(*parts)


@monitor.command("status")
@kafka_options
@click.option(
    "--once", is_flag=True, help="Print once and exit (default on a terminal: refresh until Ctrl-C; elsewhere: once)."
)
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between refreshes.")
@click.option("--json", "as_json", is_flag=True, help="Print once as JSON.")
def status(once: bool, interval: float, as_json: bool) -> None:
    """Lag, rates, drift, SLOs and open alerts from monitor.metrics and monitor.alerts."""
    from rich.console import Console
    from rich.live import Live

    from streams.monitor.status import monitor_status

    settings = load_settings()
    if as_json:
        echo_json(asyncio.run(monitor_status(settings)))
        return
    console = Console()
    if once or not sys.stdout.isatty():  # piped or in a script: one report, then exit
        console.print(render_status(asyncio.run(monitor_status(settings))))
        return
    with Live(console=console, refresh_per_second=1) as live:
        while True:
            live.update(render_status(asyncio.run(monitor_status(settings))))
            time.sleep(interval)


@monitor.command("report")
@kafka_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="FILE.png or FILE.html")
@click.option("--json", "as_json", is_flag=True, help="Print what was plotted as JSON.")
def report(out: Path, as_json: bool) -> None:
    """Plot every statistic over time with its threshold and alert marks."""
    from streams.kafka.topics import Topics
    from streams.monitor.report import write_report
    from streams.monitor.status import read_records

    settings = load_settings()
    topics = Topics(settings.namespace)
    snapshots = asyncio.run(read_records(settings, topics.monitor_metrics, "MetricSnapshot"))
    alerts = asyncio.run(read_records(settings, topics.monitor_alerts, "Alert"))
    write_report(out, snapshots, alerts)
    if as_json:
        echo_json({"out": str(out), "snapshots": len(snapshots), "alerts": len(alerts)})
    else:
        click.echo(f"{len(snapshots)} snapshots and {len(alerts)} alert events plotted to {out}")
