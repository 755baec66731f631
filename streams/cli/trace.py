"""``llmops trace``: one document's or request's path through every hop, read back from ``telemetry.spans``."""

from __future__ import annotations

import click

from streams.cli.support import echo_json as _echo_json
from streams.cli.support import kafka_options
from streams.cli.support import load_settings as _settings


# --- trace ---------------------------------------------------------------------------------
@click.command("trace")
@kafka_options
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

    from streams.kafka.topics import Topics
    from streams.telemetry.traceview import load_trace, print_trace

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
