"""An index of a corpus built in this process, through the same ingest and index code as the worker.

Why this exists:
    Benchmarks and the ranker's training need an index of a known corpus without a broker: the
    documents go through :class:`streams.ingest.pipeline.IngestPipeline` (validate, clean,
    redact, dedup, chunk), the embedder and :func:`streams.index.indexing.apply_embeddings`, just
    as in ``llmops worker``, into a Milvus Lite file of their own. The file is kept and reused
    while the corpus, the embedder and the chunking settings stay the same.

Usage:
    >>> store = local_index(settings, documents, embedder, folder)   # a MilvusStore
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from streams.index.embed import Embedder
from streams.index.indexing import apply_embeddings, embed_chunks
from streams.index.vectorstore import SCHEMA_VERSION, MilvusStore, collection_name
from streams.ingest.chunk import default_tokenizer
from streams.ingest.pipeline import IngestConfig, IngestPipeline, IngestRecord
from streams.kafka.avro import AvroCodec, EmbeddedRegistry
from streams.records import SourceCoordinates, now_ms
from streams.settings import Settings

BATCH = 64


def local_index(
    settings: Settings,
    documents: Sequence[dict[str, Any]],
    embedder: Embedder,
    folder: Path,
    progress: Callable[[int, int], None] | None = None,
) -> MilvusStore:
    """A store holding ``documents``, built under ``folder`` unless an identical one is there."""
    config = IngestConfig.from_settings(settings)
    digest = hashlib.sha256()
    for document in documents:
        digest.update(json.dumps(document, sort_keys=True).encode())
    digest.update(f"{embedder.version} {config} {SCHEMA_VERSION}".encode())
    key = digest.hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    done = folder / f"{key}.done"
    store = MilvusStore(
        str((folder / f"{key}.db").resolve()),
        collection_name("eval", embedder.version),
        embedder.dimension,
        index_type=settings.milvus_index_type,
        metric=settings.milvus_metric,
    )
    if done.exists():
        return store
    pipeline = IngestPipeline(config, AvroCodec(EmbeddedRegistry.from_directory()), default_tokenizer())
    dedup_state: dict[str, Any] = {}
    for start in range(0, len(documents), BATCH):
        batch = documents[start : start + BATCH]
        records = [
            IngestRecord(
                doc["id"].encode(), json.dumps(doc).encode(), SourceCoordinates("local", 0, start + i, now_ms())
            )
            for i, doc in enumerate(batch)
        ]
        chunks = [chunk.to_avro() for result in pipeline.process_batch(records, dedup_state) for chunk in result.chunks]
        if chunks:
            apply_embeddings(embed_chunks(chunks, embedder), store, embedder.version)
        if progress:
            progress(min(start + BATCH, len(documents)), len(documents))
    store.flush()
    done.write_text(f"{len(documents)} documents\n")
    return store
