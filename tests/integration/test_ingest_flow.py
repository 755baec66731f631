"""docs.raw -> docs.clean on the real broker, with a real worker process."""

from __future__ import annotations

import io
import json
import struct

import fastavro
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.cli.demo import account
from streams.ingest.publish import encode_document, publish_records
from streams.kafka.admin import client_kwargs, ensure_topics, offsets, read_range
from streams.kafka.avro import SCHEMA_DIR, AvroCodec, EmbeddedRegistry
from streams.kafka.progress import wait_until_consumed
from streams.kafka.topics import Topics
from streams.settings import Settings

from .conftest import WorkerProcess, run, run_cli

CODEC = AvroCodec(EmbeddedRegistry.from_directory())
LONG = " ".join(f"Paragraph {i} explains how the module handles case {i % 9} in detail." for i in range(80))
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def _collect(settings: Settings, before: dict, names: list[str]) -> list:
    _, end = await offsets(settings, names)
    return [m async for m in read_range(settings, before, end)]


def process(settings: Settings, worker: WorkerProcess, records: list, headers: list | None = None) -> tuple:
    """Publish records, wait until the worker committed them, return (published ranges, outputs)."""
    topics = Topics(settings.namespace)
    outputs = [topics.docs_clean, topics.docs_duplicates, topics.deadletter]
    run(ensure_topics(settings))
    _, before = run(offsets(settings, [topics.docs_raw, *outputs]))
    run(publish_records(settings, records, headers=headers))
    _, raw_end = run(offsets(settings, [topics.docs_raw]))
    consumed = run(wait_until_consumed(settings, topics.app_id("ingest"), raw_end, 90.0, alive=worker.alive))
    assert consumed, f"the worker did not consume its input; log:\n{worker.log_tail()}"
    published = {tp: (before.get(tp, 0), end) for tp, end in raw_end.items()}
    return published, run(_collect(settings, before, outputs))


def test_every_record_is_indexed_skipped_deleted_or_dead_lettered(settings: Settings, worker: WorkerProcess) -> None:
    worker.start()
    topics = Topics(settings.namespace)
    records = [
        encode_document({"id": "long", "text": LONG, "tenant": "acme", "source": "manual"}),
        encode_document({"id": "html", "text": "<p>Contact <b>ops@example.com</b> or 192.168.0.7</p>"}),
        encode_document({"id": "long-copy", "text": LONG}),  # the smallest id of a group stays indexed
        encode_document({"id": "long-near", "text": LONG + " One more sentence."}),
        (b"avro", CODEC.encode("RawDocument", {"id": "avro", "text": "sent as Avro"}, topics.docs_raw)),
        (b"bad-json", b'{"id": "bad-json", '),
        (b"latin1", '{"id": "latin1", "text": "caf\xe9"}'.encode("latin-1")),
        (b"no-text", b'{"id": "no-text"}'),
        (b"bad-avro", b"\x00\x00\x00\x00\x05\x01\x02"),
    ]
    published, outputs = process(settings, worker, records, headers=[("traceparent", TRACEPARENT.encode())])
    summary = account(published, outputs, CODEC, topics)
    assert summary["accounted"], summary
    assert summary["published"] == len(records)
    assert summary["duplicates"] == {"EXACT": 1, "NEAR": 1}
    assert summary["dead_letters"] == {"BAD_JSON": 1, "BAD_ENCODING": 1, "MISSING_FIELD": 1, "UNKNOWN_SCHEMA_ID": 1}

    chunks = [CODEC.decode(m.value, "CleanChunk") for m in outputs if m.topic == topics.docs_clean]
    by_doc: dict[str, list] = {}
    for chunk in chunks:
        by_doc.setdefault(chunk["doc_id"], []).append(chunk)
    assert set(by_doc) == {"long", "html", "avro"}
    assert [c["chunk_index"] for c in by_doc["long"]] == list(range(len(by_doc["long"])))
    assert len(by_doc["long"]) > 3 and all(c["token_count"] <= 128 for c in by_doc["long"])
    assert by_doc["html"][0]["text"] == "Contact [EMAIL] or [IP]"
    assert all(c["tenant"] in (None, "acme") for c in chunks)
    # Chunks continue the upstream trace under the ingest span (a new span id, same trace id).
    assert all(c["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1] != c["traceparent"] for c in chunks)
    letters = [CODEC.decode(m.value, "DeadLetter") for m in outputs if m.topic == topics.deadletter]
    assert {letter["value"] for letter in letters} == {r[1] for r in records[5:]}, "original bytes are kept"


def test_updates_and_deletes_follow_the_document(settings: Settings, worker: WorkerProcess) -> None:
    worker.start()
    topics = Topics(settings.namespace)
    process(settings, worker, [encode_document({"id": "doc", "text": LONG})])
    _, outputs = process(settings, worker, [encode_document({"id": "doc", "text": "Now it is short."})])
    update = [CODEC.decode(m.value, "CleanChunk") for m in outputs if m.topic == topics.docs_clean]
    assert update[0]["op"] == "UPSERT" and update[0]["text"] == "Now it is short."
    assert {c["op"] for c in update[1:]} == {"DELETE"} and len(update) > 2
    _, outputs = process(settings, worker, [(b"doc", None)])
    deletes = [CODEC.decode(m.value, "CleanChunk") for m in outputs if m.topic == topics.docs_clean]
    assert [(c["op"], c["chunk_id"]) for c in deletes] == [("DELETE", "doc#0")]


def test_dedup_state_survives_a_worker_restart(settings: Settings, worker: WorkerProcess) -> None:
    worker.start()
    process(settings, worker, [encode_document({"id": "first", "text": LONG})])
    assert worker.stop() == 0, worker.log_tail()
    restarted = WorkerProcess(settings).start()
    try:
        topics = Topics(settings.namespace)
        _, outputs = process(settings, restarted, [encode_document({"id": "second", "text": LONG})])
        notices = [CODEC.decode(m.value, "DuplicateNotice") for m in outputs if m.topic == topics.docs_duplicates]
        assert [(n["doc_id"], n["duplicate_of"]) for n in notices] == [("second", "first")]
    finally:
        restarted.stop()


def test_clean_chunks_are_readable_by_any_avro_consumer(settings: Settings, worker: WorkerProcess) -> None:
    """What kcat -s avro or a Confluent deserializer does: strip 5 bytes, read with the .avsc."""
    worker.start()
    topics = Topics(settings.namespace)
    _, outputs = process(settings, worker, [encode_document({"id": "x", "text": "plain words"})])
    message = next(m for m in outputs if m.topic == topics.docs_clean)
    magic, _schema_id = struct.unpack(">bI", message.value[:5])
    schema = fastavro.parse_schema(json.loads((SCHEMA_DIR / "CleanChunk.avsc").read_text()))
    record = fastavro.schemaless_reader(io.BytesIO(message.value[5:]), schema, schema)
    assert (magic, record["chunk_id"], record["text"]) == (0, "x#0", "plain words")
    assert message.key == b"x"


def test_kafka_cli_reports_topics_with_explicit_partitions_and_a_compacted_control_topic(settings: Settings) -> None:
    run(ensure_topics(settings))
    result = run_cli(settings, "kafka", "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    topics = Topics(settings.namespace)
    assert status["running"] is True and topics.docs_raw in status["topics"]

    async def configs() -> tuple:
        admin = AIOKafkaAdminClient(**client_kwargs(settings))
        await admin.start()
        try:
            described = await admin.describe_topics([topics.docs_raw])
            response = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topics.models_control)])
        finally:
            await admin.close()
        return described, response

    described, response = run(configs())
    assert len(described[0]["partitions"]) == settings.partitions
    entries = {entry[0]: entry[1] for entry in response[0].resources[0][4]}
    assert entries["cleanup.policy"] == "compact"
