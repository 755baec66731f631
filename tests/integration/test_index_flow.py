"""docs.raw -> docs.clean -> docs.embeddings -> Milvus Lite, with the real ONNX model, on the real broker."""

from __future__ import annotations

from typing import Any

from streams.admin import ensure_topics, offsets, read_topic
from streams.avro import AvroCodec, EmbeddedRegistry
from streams.corpus import stdlib_documents
from streams.demo import wait_for_stages
from streams.embed import OnnxEmbedder
from streams.publish import encode_document, publish_records
from streams.search import search_index
from streams.settings import Settings
from streams.topics import Topics
from streams.vectorstore import MilvusStore

from .conftest import WorkerProcess, run

AGENTS = ("embed", "index", "ingest")


async def _collect(messages: Any) -> list[Any]:
    return [message async for message in messages]


def run_pipeline(settings: Settings, records: list) -> None:
    """Publish, run a full worker until every stage committed, stop it (Milvus Lite has one owner)."""
    worker = WorkerProcess(settings, agents=",".join(AGENTS)).start()
    try:
        run(ensure_topics(settings))
        run(publish_records(settings, records))
        _, raw_end = run(offsets(settings, [Topics(settings.namespace).docs_raw]))
        ok, _ = wait_for_stages(settings, [AGENTS], raw_end, 240.0, alive=worker.alive)
        assert ok, f"the worker did not finish; log:\n{worker.log_tail()}"
    finally:
        assert worker.stop() == 0, worker.log_tail()


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
    expected = {c["chunk_id"] for c in clean if c["op"] == "UPSERT"}
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
