"""Records that would not fit the index: refused at the edge, or set aside by the index stage.

Issue 18, finding 6: a 300-character tenant passed validation, violated Milvus's VARCHAR(256)
column, and the index stage took every store error for an outage, retrying the batch forever.
On the real broker and Milvus Lite: such a document is dead-lettered by ingest (INVALID_TENANT);
a record that reaches ``docs.embeddings`` some other way is dead-lettered by the index stage
(STORE_REJECTED) while the records around it are written; the pipeline never stalls.
"""

from __future__ import annotations

from typing import Any

from streams.index.embed import OnnxEmbedder
from streams.index.indexing import embed_chunks
from streams.index.vectorstore import MilvusStore
from streams.ingest.publish import encode_document
from streams.kafka.admin import ensure_topics, producer, read_topic
from streams.kafka.avro import AvroCodec, EmbeddedRegistry
from streams.kafka.topics import Topics
from streams.settings import Settings

from .conftest import run, run_pipeline

CODEC = AvroCodec(EmbeddedRegistry.from_directory())


def chunk(doc_id: str, text: str, tenant: str) -> dict[str, Any]:
    return {
        "op": "UPSERT",
        "chunk_id": f"{doc_id}#0",
        "doc_id": doc_id,
        "chunk_index": 0,
        "chunk_count": 1,
        "content_hash": "h-" + doc_id,
        "text": text,
        "title": None,
        "source": None,
        "tenant": tenant,
        "raw_timestamp_ms": 1,
        "traceparent": None,
    }


async def publish_embeddings(settings: Settings, records: list[dict[str, Any]]) -> None:
    topic = Topics(settings.namespace).docs_embeddings
    kafka = producer(settings)
    await kafka.start()
    try:
        for record in records:
            value = CODEC.encode("ChunkEmbedding", record, topic)
            await kafka.send_and_wait(topic, value, key=record["doc_id"].encode())
    finally:
        await kafka.stop()


async def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    topic = Topics(settings.namespace).deadletter
    return [CODEC.decode(m.value, "DeadLetter") async for m in read_topic(settings, topic)]


def test_records_over_the_store_limits_are_dead_lettered_and_the_pipeline_goes_on(settings: Settings) -> None:
    embedder = OnnxEmbedder.from_settings(settings)
    # Straight onto docs.embeddings, as a producer bypassing ingest would: one bad row between good ones.
    direct = embed_chunks(
        [
            chunk("direct-before", "A record written before the bad one.", "acme"),
            chunk("direct-bad", "A record whose tenant overflows the column.", "t" * 300),
            chunk("direct-after", "A record written after the bad one.", "acme"),
        ],
        embedder,
    )
    run(ensure_topics(settings))
    run(publish_embeddings(settings, direct))
    run_pipeline(  # fails (times out) if any stage stalls on a bad record
        settings,
        [
            encode_document({"id": "good", "text": "An ordinary document about gzip compression."}),
            encode_document({"id": "long-tenant", "text": "A document for a tenant too long.", "tenant": "t" * 300}),
            encode_document({"id": "odd-tenant", "text": "A tenant that is an expression.", "tenant": 'a" or "b'}),
            encode_document({"id": "good-acme", "text": "Acme's document about zipfile archives.", "tenant": "acme"}),
        ],
    )
    letters = {(d["stage"], d["reason"], (d["key"] or b"").decode()) for d in run(dead_letters(settings))}
    assert ("ingest", "INVALID_TENANT", "long-tenant") in letters
    assert ("ingest", "INVALID_TENANT", "odd-tenant") in letters
    assert ("index", "STORE_REJECTED", "direct-bad") in letters
    store = MilvusStore.from_settings(settings, embedder.version)
    try:
        indexed = {
            doc: store.chunk_ids(doc) for doc in ["good", "good-acme", "direct-before", "direct-after", "direct-bad"]
        }
    finally:
        store.close()
    assert indexed == {
        "good": ["good#0"],
        "good-acme": ["good-acme#0"],
        "direct-before": ["direct-before#0"],
        "direct-after": ["direct-after#0"],
        "direct-bad": [],
    }
