"""``llmops query`` and ``llmops search``: ask the running infer agent over Kafka, or search the index directly.

Why this exists:
    People ask the running infer agent questions from a terminal, scripts do the same with
    ``--json``; ``search`` reads the local index without a worker (Milvus Lite: stop the worker first).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from streams.cli.support import EXIT_FAILURE, NotReady, echo_json, kafka_options, load_settings


def print_response(response: dict[str, Any], answer_shown: bool = False) -> None:
    """A response as people read it: status, answer, evidence, models, latency.

    ``answer_shown``: the answer was already printed as it streamed; only its citations follow.
    """
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
    if response.get("retrieval"):
        console.print(f"  [dim]retrieval: {response['retrieval']}[/]")
    for rank, hit in enumerate(response.get("hits", []), 1):
        title = f"{hit['title']}  " if hit.get("title") and hit["title"] != hit["doc_id"] else ""
        console.print(f"  [{rank}] {hit['score']:.3f} {hit['doc_id']}  {title}[dim]({hit['chunk_id']})[/]")
        console.print(f"      {hit['snippet'][:110]}")
        more = [e["chunk_id"] for e in hit.get("evidence", [])[1:]]
        if more:
            console.print(f"      [dim]also: {', '.join(more)}[/]")
        if hit.get("attributions"):
            top = sorted(hit["attributions"].items(), key=lambda kv: -abs(kv[1]))[:4]
            console.print("      [dim]why: " + ", ".join(f"{name} {value:+.2f}" for name, value in top) + "[/]")
    if response.get("answer"):
        if not answer_shown:
            console.print(f"  [bold]answer:[/] {response['answer']}")
        for citation in response.get("citations", []):
            console.print(f"    [{citation['n']}] {citation['doc_id']} ({citation['chunk_id']})")
        if response.get("grounded"):
            console.print(f"  grounded: {response['grounded']}")
        for sentence in response.get("unsupported", []):
            console.print(f"  [yellow]unsupported:[/] {sentence}")
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
@kafka_options
@click.argument("text")
@click.option("--task", type=click.Choice(["search", "classify", "rag"]), default="search", show_default=True)
@click.option("--tenant", default=None, help="Retrieve only this tenant's chunks (default: documents without one).")
@click.option(
    "--top-k", type=click.IntRange(1, 50), default=5, show_default=True, help="Documents (or chunks) to retrieve."
)
@click.option(
    "--retrieval",
    type=click.Choice(["ranked", "hybrid", "dense", "bm25"]),
    default="ranked",
    show_default=True,
    help="search/rag: ranked = dense + BM25 candidates ordered by the production ranker; hybrid = Milvus RRF.",
)
@click.option("--chunks", is_flag=True, help="search: chunk-level hits instead of top-k distinct documents.")
@click.option("--model", default=None, help="Pin a classifier: NAME (its production version) or NAME@VERSION.")
@click.option(
    "--explain",
    is_flag=True,
    help="classify: the words that moved the prediction most; search: each document's ranking features "
    "and attributions.",
)
@click.option(
    "--stream",
    is_flag=True,
    help="rag with a generator: print the answer's tokens as they are generated "
    "(with --json: each partial reply as one JSON line, then the final reply).",
)
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for the answer (with --stream: for each next reply).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the whole response as JSON.")
def query(
    text: str,
    task: str,
    tenant: str | None,
    top_k: int,
    retrieval: str,
    chunks: bool,
    model: str | None,
    explain: bool,
    stream: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Ask the running infer agent over Kafka and print its answer.

    A worker running the infer agent must be up (`llmops worker`, the default agents include it).
    The response says which model versions answered and where the time went.
    """
    from streams.inference.client import InferenceClient, InferenceTimeout
    from streams.kafka.rdkafka import KafkaUnreachable
    from streams.logs import configure_logging
    from streams.telemetry.tracing import Telemetry

    settings = load_settings()
    configure_logging(settings)  # log lines (span export's too) to stderr: stdout holds the answer
    telemetry = Telemetry.from_settings(settings, role="cli")  # the request's trace starts here

    options: dict[str, Any] = {
        "tenant": tenant,
        "top_k": top_k,
        "model": model,
        "explain": explain,
        "retrieval": retrieval,
        "chunks": chunks,
    }

    async def ask() -> dict[str, Any]:
        async with InferenceClient(settings, tracer=telemetry.agent_tracer("query", group="")) as client:
            request = client.request(text, task, **options)
            future = await client.send(request)
            response = await asyncio.wait_for(future, timeout)
            response["sent_at_ms"] = request.sent_at_ms
            return response

    async def ask_streaming() -> dict[str, Any]:
        """Print each partial reply's text as it arrives; the final reply is returned."""
        async with InferenceClient(settings, tracer=telemetry.agent_tracer("query", group="")) as client:
            last: dict[str, Any] = {}
            async for reply in client.stream(text, task, timeout=timeout, **options):
                if as_json and not reply["final"]:
                    click.echo(json.dumps(reply, default=str))
                elif not reply["final"]:
                    click.echo(("answer: " if reply["sequence"] == 0 else "") + (reply["delta"] or ""), nl=False)
                elif reply["sequence"] and not as_json:
                    click.echo()  # end the streamed answer's line
                last = reply
            return last

    try:
        response = asyncio.run(ask_streaming() if stream else ask())
    except (InferenceTimeout, KafkaUnreachable) as error:
        raise NotReady(str(error)) from None
    except TimeoutError:
        raise NotReady(
            f"no answer within {timeout:.0f}s (--timeout): is a worker with the infer agent running (`llmops worker`)?"
        ) from None
    except RuntimeError as error:
        raise click.ClickException(str(error)) from None
    finally:
        telemetry.shutdown()  # the request's span reaches its exporters before the command exits
    if as_json:
        echo_json(response)
    else:
        print_response(response, answer_shown=stream and response["sequence"] > 0)
    if response["status"] != "OK":
        sys.exit(EXIT_FAILURE)


# --- search --------------------------------------------------------------------------------
@click.command()
@click.argument("text")
@click.option("--top-k", type=click.IntRange(1, 100), default=5, show_default=True, help="Results to return.")
@click.option("--tenant", default=None, help="Search this tenant's documents (default: documents without one).")
@click.option("--json", "as_json", is_flag=True, help="Print the hits as JSON.")
def search(text: str, top_k: int, tenant: str | None, as_json: bool) -> None:
    """Semantic search over the index: chunk ids, document ids, scores and snippets.

    With Milvus Lite (the default) the index file can be open in one process only: stop the
    worker first, or run Milvus as a server and set LLMOPS_MILVUS_URI.
    """
    from streams.index.search import hits_as_dicts, search_index
    from streams.index.vectorstore import StoreUnavailable

    try:
        hits = search_index(load_settings(), text, top_k, tenant)
    except StoreUnavailable as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        echo_json(hits_as_dicts(hits))
        return
    if not hits:
        click.echo("no results (is anything indexed in this namespace and tenant?)")
    for rank, hit in enumerate(hits, start=1):
        click.echo(f"{rank:>2}. {hit.score:.3f}  {hit.chunk_id}\n    {hit.snippet}")
