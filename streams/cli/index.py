"""``llmops index migrate``: move an index of the dense-only schema (v1) into the hybrid schema (v2).

Why this exists:
    Hybrid retrieval needs a text field and its BM25 sparse vector in every row, so indexes
    written before it live in a collection of the old schema that search no longer reads. This
    one-off command copies their rows (ids, vectors, timestamps: nothing is re-embedded) into the
    new collection, computing the lexical side on the way. Re-running it is safe (upserts).
"""

from __future__ import annotations

import click

from streams.cli.support import echo_json, load_settings


@click.group("index")
def index() -> None:
    """Maintain the vector index (Milvus collections)."""


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
