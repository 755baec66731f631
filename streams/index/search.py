"""Semantic search over the index: embed the query with the indexing model, search its collection.

Why this exists:
    ``llmops search`` and the demo ask the index questions directly. The query is embedded by the
    same model version that indexed the chunks (the collection name carries the version), and the
    tenant filter is built by code, so a search never crosses tenants.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from streams.index.embed import Embedder, OnnxEmbedder
from streams.index.vectorstore import Hit, MilvusStore
from streams.settings import Settings


def search_index(
    settings: Settings,
    text: str,
    top_k: int = 5,
    tenant: str | None = None,
    embedder: Embedder | None = None,
    store: MilvusStore | None = None,
) -> list[Hit]:
    """Top-k chunks for ``text`` within ``tenant`` (None = documents without a tenant)."""
    embedder = embedder or OnnxEmbedder.from_settings(settings)
    owned = store is None
    store = store or MilvusStore.from_settings(settings, embedder.version, embedder.dimension)
    try:
        return store.search(embedder.embed([text])[0].tolist(), top_k, tenant)
    finally:
        if owned:
            store.close()


def hits_as_dicts(hits: list[Hit]) -> list[dict[str, Any]]:
    """JSON-ready hits."""
    return [asdict(hit) for hit in hits]
