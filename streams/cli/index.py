"""``llmops index status`` (index versions and their builds) and ``llmops index migrate`` (schema v1 -> v2).

Why this exists:
    ``status`` shows each index version, its collection and how far its background build has
    read ``docs.raw`` (from the build's committed offsets, so it works from any machine), with a
    rate and an ETA measured over ``--sample-seconds``.

    ``migrate``: hybrid retrieval needs
    a text field and its BM25 sparse vector in every row, so indexes
    written before it live in a collection of the old schema that search no longer reads. This
    one-off command copies their rows (ids, vectors, timestamps: nothing is re-embedded) into the
    new collection, computing the lexical side on the way. Re-running it is safe (upserts).
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from streams.cli.support import echo_json, kafka_options, load_settings


@click.group("index")
def index() -> None:
    """Maintain the vector index (Milvus collections)."""


@index.command("status")
@kafka_options
@click.option("--sample-seconds", type=float, default=2.0, show_default=True, help="Measure the rate over this.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(sample_seconds: float, as_json: bool) -> None:
    """Index versions, their collections, and their builds' progress (records done / total, ETA)."""
    from streams.index.rebuild import BuildProgress, committed_progress
    from streams.index.spec import INDEX_MODEL, IndexSpec
    from streams.models.lifecycle import load_registry

    settings = load_settings()

    async def measure() -> list[dict[str, Any]]:
        registry = await load_registry(settings)
        rows = []
        for version in registry.all(INDEX_MODEL):
            spec = IndexSpec.from_labels(version.labels, version.embedder_version)
            row: dict[str, Any] = {
                "version": version.short,
                "stage": version.stage.value,
                "embedder": spec.embedder,
                "chunk_tokens": spec.chunk_tokens,
                "index_type": spec.index_type,
                "collection": version.uri,
                "built_by": "live pipeline" if spec.live else "index builder",
                "qa_passed": version.qa_passed,
            }
            if not spec.live:
                progress = BuildProgress(version.version)  # the rate and ETA the worker's /metrics report
                progress.update(*await committed_progress(settings, version.version))
                await asyncio.sleep(sample_seconds)
                progress.update(*await committed_progress(settings, version.version))
                row.update({k: v for k, v in progress.as_dict().items() if k != "version"})
            rows.append(row)
        return rows

    try:
        rows = asyncio.run(measure())
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no index versions (a worker registers its live index; add one: `llmops models register-index`)")
    for row in rows:
        line = f"{row['version']:<22} {row['stage']:<10} {row['embedder']:<6} {row['collection']} ({row['built_by']})"
        if "done" in row:
            eta = (
                "caught up" if row["caught_up"] else f"ETA {row['eta_s']} s" if row["eta_s"] is not None else "stalled"
            )
            line += f"  {row['done']}/{row['total']} records, {row['rate_per_s']}/s, {eta}"
        click.echo(line)


@index.command("migrate")
@click.option("--drop", is_flag=True, help="Drop the old collection once every row is copied.")
@click.option("--json", "as_json", is_flag=True, help="Print what was copied as JSON.")
def migrate(drop: bool, as_json: bool) -> None:
    """Copy the v1 (dense-only) collection of this namespace and embedder into the hybrid v2 collection.

    With Milvus Lite (the default) stop the worker first: one process may open the file.
    """
    from streams.index.embed import version_for
    from streams.index.vectorstore import MilvusStore, StoreUnavailable, legacy_collection_name

    settings = load_settings()
    model_version = version_for(settings)
    try:
        store = MilvusStore.from_settings(settings, model_version)
    except StoreUnavailable as error:
        raise click.ClickException(str(error)) from None
    legacy = legacy_collection_name(settings.namespace, model_version)
    try:
        with click.progressbar(length=0, label=f"copying {legacy}", show_pos=True) as bar:
            copied = store.migrate_from(legacy, progress=lambda done: bar.update(done - bar.pos))
        if drop:
            store.drop_collection(legacy)
    except ValueError as error:
        raise click.ClickException(f"{error} (LLMOPS_NAMESPACE and LLMOPS_EMBED_MODEL select it)") from None
    finally:
        store.close()
    result = {"from": legacy, "to": store.collection, "rows": copied, "dropped": drop}
    if as_json:
        echo_json(result)
    else:
        click.echo(
            f"copied {copied} rows from {legacy} to {store.collection}" + ("; dropped the old one" if drop else "")
        )
