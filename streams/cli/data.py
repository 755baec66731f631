"""``llmops publish`` and ``llmops profile``: send documents to ``docs.raw`` and explore data first."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from streams.cli.support import EXIT_FAILURE, kafka_options
from streams.cli.support import echo_json as _echo_json
from streams.cli.support import load_settings as _settings


# --- publish -------------------------------------------------------------------------------
@click.command()
@kafka_options
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--corpus", type=click.Choice(["stdlib"]), help="Publish a built-in corpus instead of a file.")
@click.option("--limit", type=int, default=None, help="Publish at most this many documents.")
@click.option("--topic", default=None, help="Target topic (default: docs.raw of the namespace).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def publish(file: Path | None, corpus: str | None, limit: int | None, topic: str | None, as_json: bool) -> None:
    """Publish FILE.jsonl, JSONL on stdin (FILE is -) or --corpus stdlib to docs.raw; key = each id.

    A line that is not a JSON object is reported with its line number and not sent; the others
    are sent unchanged (the ingest agent validates them and dead-letters bad documents). Exit 1
    when any line was skipped, after the valid ones are published.
    """
    from rich.progress import Progress

    from streams.ingest.corpus import document_key, jsonl_lines, line_problem, stdlib_documents
    from streams.ingest.publish import encode_document, publish_records

    if (file is None) == (corpus is None):
        raise click.UsageError("give either FILE.jsonl (- for stdin) or --corpus stdlib")
    settings = _settings()
    skipped: list[dict[str, Any]] = []
    if file is not None:
        lines: list[bytes] = []
        with click.open_file(str(file), "rb") as handle:
            for number, raw in jsonl_lines(handle):
                problem = line_problem(raw)
                if problem:
                    skipped.append({"line": number, "error": problem})
                    click.echo(f"{'stdin' if str(file) == '-' else file}: line {number}: {problem}; skipped", err=True)
                else:
                    lines.append(raw)
        records = [(document_key(raw), raw) for raw in lines[:limit]]
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
                "skipped": skipped,
            }
        )
    else:
        click.echo(
            f"published {report.records} records ({report.bytes / 1e6:.1f} MB) to {report.topic} "
            f"in {report.seconds:.1f}s ({rate:.0f}/s)" + (f"; {len(skipped)} bad line(s) skipped" if skipped else "")
        )
    if skipped:
        sys.exit(EXIT_FAILURE)


# --- profile -------------------------------------------------------------------------------
@click.command()
@kafka_options
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
    from streams.ingest.corpus import document_key, read_jsonl, stdlib_documents
    from streams.ingest.pipeline import IngestConfig
    from streams.ingest.profile import profile_records, write_histogram
    from streams.ingest.publish import encode_document
    from streams.kafka.avro import codec_from_settings

    if sum(x is not None for x in (file, topic, corpus)) != 1:
        raise click.UsageError("give exactly one of FILE.jsonl, --topic NAME or --corpus stdlib")
    settings = _settings()
    if file is not None:
        records: list[tuple[bytes | None, bytes | None]] = [(document_key(r), r) for _, r in read_jsonl(file)]
    elif corpus is not None:
        records = [encode_document(doc) for doc in stdlib_documents()]
    else:
        from streams.kafka.admin import read_topic

        async def fetch() -> list[tuple[bytes | None, bytes | None]]:
            return [
                (m.key, m.value)
                async for m in read_topic(settings, str(topic))
                if m.offset >= from_offset and (to_offset is None or m.offset < to_offset)
            ]

        records = asyncio.run(fetch())
    codec = codec_from_settings(settings)
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
