"""The Avro codec: Confluent framing byte for byte, evolution, errors, registries."""

import asyncio
import io
import json
import struct

import fastavro
import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError
from hypothesis import given
from hypothesis import strategies as st

from streams.kafka.avro import (
    AvroCodec,
    CodecError,
    ConfluentRegistry,
    EmbeddedRegistry,
    RegistryError,
    embedded_schema_id,
)
from tests.avro_samples import RAW_V1, RAW_V1_AS_CURRENT, RAW_V1_BODY, RAW_V1_RECORD


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(EmbeddedRegistry.from_directory())


def test_framing_is_magic_byte_schema_id_then_avro_binary(codec: AvroCodec) -> None:
    data = codec.encode("RawDocument", {"id": "d1", "text": "hi"}, topic="docs.raw")
    schema_id = embedded_schema_id(codec.schema("RawDocument"))
    # id "d1": len 2 zigzag=4 then bytes; text union branch 1 (=2) len 2 (=4) "hi";
    # title, source, tenant: branch 0; metadata: empty map (0); deleted: false (0)
    body = b"\x04d1" + b"\x02\x04hi" + b"\x00\x00\x00" + b"\x00" + b"\x00"
    assert data == struct.pack(">bI", 0, schema_id) + body


def test_embedded_ids_are_deterministic_and_positive(codec: AvroCodec) -> None:
    first = embedded_schema_id(codec.schema("CleanChunk"))
    assert first == embedded_schema_id(json.loads(json.dumps(codec.schema("CleanChunk"))))
    assert 0 < first < 2**31


@given(
    st.text(min_size=1),
    st.one_of(st.none(), st.text()),
    st.dictionaries(st.text(), st.text(), max_size=5),
    st.booleans(),
)
def test_round_trip(doc_id: str, text: str | None, metadata: dict[str, str], deleted: bool) -> None:
    codec = AvroCodec(EmbeddedRegistry.from_directory())
    record = {"id": doc_id, "text": text, "metadata": metadata, "deleted": deleted}
    try:
        data = codec.encode("RawDocument", record, topic="docs.raw")
    except UnicodeEncodeError:
        return  # lone surrogates cannot be written as Avro strings; validation refuses them first
    decoded = codec.decode(data, "RawDocument")
    assert {k: decoded[k] for k in record} == record


def test_a_reader_with_the_newer_schema_reads_older_records(codec: AvroCodec) -> None:
    registry = EmbeddedRegistry.from_directory()
    old_id = registry.register(RAW_V1)
    buffer = io.BytesIO()
    buffer.write(struct.pack(">bI", 0, old_id))
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(RAW_V1), RAW_V1_RECORD)
    assert buffer.getvalue()[5:] == RAW_V1_BODY
    assert AvroCodec(registry).decode(buffer.getvalue(), "RawDocument") == RAW_V1_AS_CURRENT


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "NOT_AVRO"),
        (b"{}", "NOT_AVRO"),
        (b"\x00\x00\x00", "NOT_AVRO"),
        (b"\x00\x00\x00\x00\x07\x04d1", "UNKNOWN_SCHEMA_ID"),
    ],
)
def test_undecodable_values_say_why(codec: AvroCodec, data: bytes, reason: str) -> None:
    with pytest.raises(CodecError) as caught:
        codec.decode(data, "RawDocument")
    assert caught.value.reason == reason


def test_truncated_and_trailing_bytes_are_bad_avro(codec: AvroCodec) -> None:
    data = codec.encode("RawDocument", {"id": "d1", "text": "hello"}, topic="docs.raw")
    for broken in (data[:-3], data + b"\x00\x01"):
        with pytest.raises(CodecError) as caught:
            codec.decode(broken, "RawDocument")
        assert caught.value.reason == "BAD_AVRO"


def test_a_record_of_another_schema_does_not_resolve(codec: AvroCodec) -> None:
    letter = codec.encode(
        "DeadLetter",
        {
            "reason": "X",
            "detail": "",
            "stage": "s",
            "source_topic": "t",
            "source_partition": 0,
            "source_offset": 0,
            "source_timestamp_ms": 0,
            "key": None,
            "value": None,
            "rejected_at_ms": 0,
        },
        topic="deadletter",
    )
    with pytest.raises(CodecError) as caught:
        codec.decode(letter, "RawDocument")
    assert caught.value.reason == "BAD_AVRO"


class CountingClient:
    """Stands in for confluent-kafka's SchemaRegistryClient: every schema is missing (HTTP 404)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def get_schema(self, schema_id: int) -> None:
        self.calls.append(f"get {schema_id}")
        raise SchemaRegistryError(404, 40403, "Schema not found")

    def lookup_schema(self, subject: str, schema: object) -> None:
        self.calls.append(f"lookup {subject}")
        raise SchemaRegistryError(404, 40401, "Subject not found")


def test_confluent_registry_keeps_credentials_out_of_its_url() -> None:
    registry = ConfluentRegistry("http://svc:p%40ss@registry:8081/apis/ccompat/v7/")
    assert registry.url == "http://registry:8081/apis/ccompat/v7"
    assert registry.client._rest_client.auth == ("svc", "p@ss")


def test_confluent_registry_remembers_misses_until_they_expire() -> None:
    now = [0.0]
    registry = ConfluentRegistry("http://registry:8081", auto_register=False, miss_ttl=60.0, clock=lambda: now[0])
    client = CountingClient()
    registry.client = client  # type: ignore[assignment]  # a counting stand-in; the real one is tested in integration
    codec = AvroCodec(registry)
    framed = struct.pack(">bI", 0, 99) + b"\x02d"
    for _ in range(3):
        with pytest.raises(CodecError) as caught:
            codec.decode(framed, "RawDocument")
        assert caught.value.reason == "UNKNOWN_SCHEMA_ID"
        with pytest.raises(RegistryError, match="LLMOPS_SCHEMA_REGISTRY_AUTO_REGISTER"):
            registry.id_for("docs.raw-value", RAW_V1)
    assert client.calls == ["get 99", "lookup docs.raw-value"]
    assert registry.cached_schema(99)
    now[0] = 61.0
    assert not registry.cached_schema(99)
    with pytest.raises(KeyError):
        registry.schema_for(99)
    assert client.calls[-1] == "get 99"


def test_prefetch_with_the_embedded_registry_needs_no_thread(codec: AvroCodec) -> None:
    data = codec.encode("RawDocument", {"id": "d1"}, topic="docs.raw")
    asyncio.run(codec.prefetch([data, None, b"{}"], writes=[("CleanChunk", "docs.clean")]))
    assert codec.decode(data, "RawDocument")["id"] == "d1"
