"""The Avro path against a real Confluent-compatible schema registry and confluent-kafka's own serde.

The registry is Apicurio Registry (its Confluent API, /apis/ccompat/v7), started from Maven
Central like the broker; records cross the real broker; a real worker reads what confluent-kafka's
``AvroSerializer`` wrote, and confluent-kafka's ``AvroDeserializer`` reads what we wrote.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from structlog.testing import capture_logs

from streams.index.embed import OnnxEmbedder
from streams.index.search import search_index
from streams.index.vectorstore import MilvusStore
from streams.ingest.publish import publish_records
from streams.kafka.admin import ensure_topics
from streams.kafka.avro import SCHEMA_DIR, AvroCodec, CodecError, ConfluentRegistry, RegistryError, codec_from_settings
from streams.kafka.registry_server import EmbeddedSchemaRegistry
from streams.kafka.topics import Topics
from streams.settings import Settings
from tests.avro_samples import RAW_V1, RAW_V1_AS_CURRENT, RAW_V1_BODY

from .conftest import PIPELINE_AGENTS, ROOT, TEST_PORT, run, run_pipeline, start_or_fail

# The broker takes TEST_PORT and the port after it (its controller).
REGISTRY_PORT = int(os.environ.get("LLMOPS_TEST_REGISTRY_PORT", str(TEST_PORT + 2)))
RAW_DOCUMENT_AVSC = (SCHEMA_DIR / "RawDocument.avsc").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def registry_server() -> Iterator[EmbeddedSchemaRegistry]:
    server = EmbeddedSchemaRegistry(ROOT / ".llmops" / "registry", port=REGISTRY_PORT)
    server.stop()
    start_or_fail(lambda: server.start(timeout=300), "the real schema registry")
    yield server
    server.stop()


@pytest.fixture
def registry_settings(settings: Settings, registry_server: EmbeddedSchemaRegistry) -> Settings:
    return settings.model_copy(update={"schema_registry_url": registry_server.url})


def consume_values(settings: Settings, topic: str, count: int, timeout: float = 120.0) -> list[Any]:
    """The first ``count`` records of ``topic``, read by confluent-kafka's consumer from the start."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"confluent-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    messages: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                messages.append(message)
    finally:
        consumer.close()
    assert len(messages) == count, f"read {len(messages)} of {count} records from {topic}"
    return messages


def wait_for_request(server: EmbeddedSchemaRegistry, path: str, method: str = "GET") -> None:
    """Wait until the registry's access log shows a request (the log is written after the answer)."""
    deadline = time.monotonic() + 120.0  # an upper bound for a shared, busy machine; it returns when seen
    while server.requests(path, method) == 0:
        assert time.monotonic() < deadline, f"{method} {path} never reached the access log"
        time.sleep(0.1)


def test_schemas_are_registered_and_evolved_under_the_registry_rules(registry_server: EmbeddedSchemaRegistry) -> None:
    registry = ConfluentRegistry(registry_server.url)
    subject = f"t{uuid.uuid4().hex[:12]}.docs.raw-value"
    v1_id = registry.id_for(subject, RAW_V1)
    registry.client.set_compatibility(subject, "BACKWARD")
    assert registry.client.get_compatibility(subject) == "BACKWARD"
    current = AvroCodec(registry).schema("RawDocument")
    v2_id = registry.id_for(subject, current)  # adds fields, each with a default: backward compatible
    assert v2_id != v1_id
    assert registry.client.get_versions(subject) == [1, 2]

    incompatible = {**current, "fields": [*current["fields"], {"name": "lang", "type": "string"}]}  # no default
    with pytest.raises(RegistryError, match="incompatible") as refused:
        registry.id_for(subject, incompatible)
    assert subject in str(refused.value)
    assert "default" in str(refused.value)  # says what to change
    assert registry.client.get_versions(subject) == [1, 2]

    # Our encoder frames with the id the registry gave the current version; a v1 record, framed
    # with v1's id, reads as the current RawDocument (the writer's schema fetched by id).
    ours = AvroCodec(registry).encode("RawDocument", {"id": "new"}, topic=subject.removesuffix("-value"))
    assert ours[:5] == b"\x00" + v2_id.to_bytes(4, "big")
    framed_v1 = b"\x00" + v1_id.to_bytes(4, "big") + RAW_V1_BODY
    fresh = ConfluentRegistry(registry_server.url)
    assert AvroCodec(fresh).decode(framed_v1, "RawDocument") == RAW_V1_AS_CURRENT


def test_records_we_produce_are_read_by_confluent_avro_deserializer(registry_settings: Settings) -> None:
    topic = Topics(registry_settings.namespace).docs_raw
    codec = codec_from_settings(registry_settings)
    documents = [
        {"id": "a1", "text": "framed by llmops", "title": "A", "tenant": "acme", "metadata": {"k": "v"}},
        {"id": "a2", "text": "second", "deleted": False},
    ]
    run(
        publish_records(
            registry_settings, [(d["id"].encode(), codec.encode("RawDocument", d, topic)) for d in documents]
        )
    )
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_settings.schema_registry_url}))
    read = [
        deserializer(m.value(), SerializationContext(topic, MessageField.VALUE))
        for m in consume_values(registry_settings, topic, len(documents))
    ]
    assert sorted(read, key=lambda r: r["id"]) == [
        {
            "id": "a1",
            "text": "framed by llmops",
            "title": "A",
            "source": None,
            "tenant": "acme",
            "metadata": {"k": "v"},
            "deleted": False,
        },
        {"id": "a2", "text": "second", "title": None, "source": None, "tenant": None, "metadata": {}, "deleted": False},
    ]


def test_a_worker_indexes_what_confluent_avro_serializer_wrote(registry_settings: Settings) -> None:
    settings = registry_settings
    topics = Topics(settings.namespace)
    run(ensure_topics(settings))
    client = SchemaRegistryClient({"url": settings.schema_registry_url})
    serializer = AvroSerializer(client, RAW_DOCUMENT_AVSC)
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "acks": "all"})
    documents = [
        {"id": "c1", "text": "Written by confluent-kafka with its Avro serializer.", "source": "confluent"},
        {"id": "c2", "text": "Gzip compresses the quarterly report for the acme tenant.", "tenant": "acme"},
    ]
    for document in documents:
        value = serializer(document, SerializationContext(topics.docs_raw, MessageField.VALUE))
        producer.produce(topics.docs_raw, key=document["id"].encode(), value=value)
    assert producer.flush(30) == 0

    run_pipeline(settings, [])  # a real worker: ingest, embed and index, until every stage committed
    log = (settings.data_dir / f"worker-{','.join(PIPELINE_AGENTS)}.log").read_text(errors="replace")
    assert "schema_registry_call_on_event_loop" not in log, "a registry request blocked the worker's event loop"
    assert "dead_letter" not in log

    # The worker's outputs, framed with ids from the same registry, read with confluent-kafka too.
    deserializer = AvroDeserializer(client)
    chunks = [
        deserializer(m.value(), SerializationContext(topics.docs_clean, MessageField.VALUE))
        for m in consume_values(settings, topics.docs_clean, len(documents))
    ]
    assert {c["doc_id"]: c["text"] for c in chunks} == {d["id"]: d["text"] for d in documents}
    assert {c["doc_id"]: c["tenant"] for c in chunks} == {"c1": None, "c2": "acme"}
    embeddings = [
        deserializer(m.value(), SerializationContext(topics.docs_embeddings, MessageField.VALUE))
        for m in consume_values(settings, topics.docs_embeddings, len(documents))
    ]
    assert {e["doc_id"] for e in embeddings} == {"c1", "c2"}
    assert client.get_versions(f"{topics.docs_clean}-value") == [1]
    assert client.get_versions(f"{topics.docs_embeddings}-value") == [1]

    embedder = OnnxEmbedder.from_settings(settings)
    store = MilvusStore.from_settings(settings, embedder.version)
    try:
        assert sorted(store.chunk_ids("c1") + store.chunk_ids("c2")) == ["c1#0", "c2#0"]
        hits = search_index(settings, "compress the report", 1, "acme", embedder, store)
        assert [h.doc_id for h in hits] == ["c2"]
    finally:
        store.close()


def test_missing_ids_and_subjects_are_asked_for_once(registry_server: EmbeddedSchemaRegistry) -> None:
    missing_id = 900_000 + uuid.uuid4().int % 90_000
    codec = AvroCodec(ConfluentRegistry(registry_server.url))
    record = b"\x00" + missing_id.to_bytes(4, "big") + b"\x02d"
    for _ in range(3):
        with pytest.raises(CodecError) as caught:
            codec.decode(record, "RawDocument")
        assert caught.value.reason == "UNKNOWN_SCHEMA_ID"
    run(codec.prefetch([record] * 5))

    subject = f"t{uuid.uuid4().hex[:12]}.docs.raw-value"
    lookup_only = ConfluentRegistry(registry_server.url, auto_register=False)
    for _ in range(3):
        with pytest.raises(RegistryError, match="LLMOPS_SCHEMA_REGISTRY_AUTO_REGISTER"):
            lookup_only.id_for(subject, RAW_V1)

    # A last request, after all of the above: once it is in the access log, so are they.
    with pytest.raises(KeyError):
        ConfluentRegistry(registry_server.url).schema_for(missing_id + 1)
    wait_for_request(registry_server, f"/schemas/ids/{missing_id + 1}")
    assert registry_server.requests(f"/schemas/ids/{missing_id}") == 1
    assert registry_server.requests(f"/subjects/{subject}", method="POST") == 1


def test_prefetch_keeps_registry_requests_off_the_event_loop(registry_server: EmbeddedSchemaRegistry) -> None:
    topic = f"t{uuid.uuid4().hex[:12]}.docs.raw"
    data = AvroCodec(ConfluentRegistry(registry_server.url)).encode("RawDocument", {"id": "p", "text": "t"}, topic)

    async def decode(prefetch: bool) -> list[dict[str, Any]]:
        codec = AvroCodec(ConfluentRegistry(registry_server.url))  # nothing cached
        if prefetch:
            await codec.prefetch([data], writes=[("CleanChunk", topic)])
        with capture_logs() as logs:
            assert codec.decode(data, "RawDocument")["text"] == "t"
        return [entry for entry in logs if entry["event"] == "schema_registry_call_on_event_loop"]

    assert asyncio.run(decode(prefetch=True)) == []
    blocked = asyncio.run(decode(prefetch=False))
    assert [entry["action"] for entry in blocked] == [f"fetch schema id {int.from_bytes(data[1:5], 'big')}"]


def test_registry_errors_name_the_setting_and_hide_credentials(registry_server: EmbeddedSchemaRegistry) -> None:
    port = registry_server.port + 1  # nothing listens there
    registry = ConfluentRegistry(f"http://svc:hunter2@127.0.0.1:{port}/apis/ccompat/v7")
    with pytest.raises(RegistryError) as caught:
        registry.id_for("x-value", RAW_V1)
    message = str(caught.value)
    assert "LLMOPS_SCHEMA_REGISTRY_URL" in message
    assert "hunter2" not in message
    assert json.dumps(RAW_V1) not in message
