"""The Avro codec: Confluent framing byte for byte, evolution, errors, registries."""

import io
import json
import struct

import fastavro
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.kafka.avro import AvroCodec, CodecError, ConfluentRegistry, EmbeddedRegistry, embedded_schema_id

RAW_V1 = {  # an older RawDocument: no tenant, metadata or deleted fields
    "type": "record",
    "name": "RawDocument",
    "namespace": "llmops.streams",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "text", "type": ["null", "string"], "default": None},
        {"name": "title", "type": ["null", "string"], "default": None},
        {"name": "source", "type": ["null", "string"], "default": None},
    ],
}


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
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(RAW_V1), {"id": "old", "text": "from v1"})
    decoded = AvroCodec(registry).decode(buffer.getvalue(), "RawDocument")
    assert decoded == {
        "id": "old",
        "text": "from v1",
        "title": None,
        "source": None,
        "tenant": None,
        "metadata": {},
        "deleted": False,
    }


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


def test_confluent_registry_registers_by_subject_and_fetches_by_id() -> None:
    schemas: dict[int, str] = {}
    calls: list[str] = []

    def registry_api(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.method == "POST":
            schemas[41] = json.loads(request.content)["schema"]
            return httpx.Response(200, json={"id": 41})
        schema_id = int(request.url.path.rsplit("/", 1)[1])
        if schema_id in schemas:
            return httpx.Response(200, json={"schema": schemas[schema_id]})
        return httpx.Response(404, json={"error_code": 40403})

    registry = ConfluentRegistry("http://registry:8081")
    registry._client = httpx.Client(base_url="http://registry:8081", transport=httpx.MockTransport(registry_api))
    codec = AvroCodec(registry)
    data = codec.encode("RawDocument", {"id": "d", "text": "t"}, topic="docs.raw")
    assert data[:5] == struct.pack(">bI", 0, 41)
    codec.encode("RawDocument", {"id": "e", "text": "u"}, topic="docs.raw")  # cached: no second POST
    fresh = AvroCodec(registry)
    registry._schemas.clear()
    assert fresh.decode(data, "RawDocument")["text"] == "t"
    assert calls == ["POST /subjects/docs.raw-value/versions", "GET /schemas/ids/41"]
    with pytest.raises(CodecError) as caught:
        fresh.decode(struct.pack(">bI", 0, 99) + b"\x02d", "RawDocument")
    assert caught.value.reason == "UNKNOWN_SCHEMA_ID"
