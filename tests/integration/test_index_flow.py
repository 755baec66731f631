"""docs.raw -> docs.clean -> docs.embeddings -> Milvus Lite, with the real ONNX model, on the real broker."""

from __future__ import annotations

from typing import Any

from streams.index.embed import OnnxEmbedder
from streams.index.search import search_index
from streams.index.vectorstore import MilvusStore
from streams.ingest.corpus import stdlib_documents
from streams.ingest.publish import encode_document
from streams.kafka.admin import read_topic
from streams.kafka.avro import AvroCodec, EmbeddedRegistry
from streams.kafka.topics import Topics
from streams.settings import Settings

from .conftest import final_chunks, run, run_pipeline


async def _collect(messages: Any) -> list[Any]:
    return [message async for message in messages]


def test_documents_become_searchable_once_and_the_index_follows_updates_and_deletes(settings: Settings) -> None:
    documents = list(stdlib_documents(limit=40))
    tenant_doc = {"id": "acme-secret-plan", "text": "Acme's plan: compress every report with gzip.", "tenant": "acme"}
    records = [encode_document(d) for d in [*documents, tenant_doc]]
    run_pipeline(settings, records)
    codec = AvroCodec(EmbeddedRegistry.from_directory())
    clean = [
        codec.decode(m.value, "CleanChunk")
        for m in run(_collect(read_topic(settings, Topics(settings.namespace).docs_clean)))
    ]
    expected = final_chunks(clean)
    embedder = OnnxEmbedder.from_settings(settings)
    store = MilvusStore.from_settings(settings, embedder.version)
    try:
        first_count = store.count()
        assert first_count == len(expected) > len(documents), "every chunk is indexed exactly once"
        target = documents[7]
        hits = search_index(settings, target["text"][:300], 3, None, embedder, store)
        assert hits[0].doc_id == target["id"], hits
        assert all(h.tenant == "" for h in hits)
        acme = search_index(settings, "compress reports", 3, "acme", embedder, store)
        assert [h.doc_id for h in acme] == ["acme-secret-plan"]
        row = store.get([f"{target['id']}#0"])[0]
        assert row["indexed_at_ms"] >= row["raw_timestamp_ms"]
    finally:
        store.close()

    # Republishing the same documents (a redelivery or replay) changes nothing.
    run_pipeline(settings, records)
    store = MilvusStore.from_settings(settings, embedder.version)
    try:
        assert store.count() == first_count
    finally:
        store.close()

    # An update that shrinks a document drops its extra chunks; a tombstone deletes one.
    longest = max(documents[1:], key=lambda d: len(d["text"]))
    run_pipeline(
        settings,
        [encode_document({**longest, "text": "Now a single short chunk."}), (documents[0]["id"].encode(), None)],
    )
    store = MilvusStore.from_settings(settings, embedder.version)
    try:
        assert store.chunk_ids(longest["id"]) == [f"{longest['id']}#0"]
        assert store.chunk_ids(documents[0]["id"]) == []
        assert store.get([f"{longest['id']}#0"])[0]["text"] == "Now a single short chunk."
        assert store.count() < first_count
    finally:
        store.close()
