"""Upstream documents: JSON and Avro accepted alike, every malformed record gets a reason code."""

import json

import pytest

from streams.ingest.validate import Rejection, parse_raw_document
from streams.kafka.avro import AvroCodec, EmbeddedRegistry
from streams.records import RawDocument

CODEC = AvroCodec(EmbeddedRegistry.from_directory())


def parse(key: bytes | None, value: bytes | None, limit: int = 1000) -> RawDocument | Rejection:
    return parse_raw_document(key, value, CODEC, limit)


def test_json_and_avro_give_the_same_document() -> None:
    fields = {"id": "d1", "text": "hello", "title": "T", "source": "s", "tenant": "acme", "metadata": {"k": "v"}}
    from_json = parse(b"d1", json.dumps(fields).encode())
    from_avro = parse(b"d1", CODEC.encode("RawDocument", fields, topic="docs.raw"))
    assert from_json == from_avro == RawDocument(**fields)


def test_tombstone_and_deleted_flag_are_deletions() -> None:
    assert parse(b"d1", None) == RawDocument(id="d1", deleted=True)
    assert parse(None, b'{"id": "d1", "deleted": true}') == RawDocument(id="d1", deleted=True)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, None, "NULL_KEY_TOMBSTONE"),
        (b"\xff", b'{"id": "x", "text": "t"}', "BAD_ENCODING"),
        (None, b"\xff\xfe{}", "BAD_ENCODING"),
        (None, b'{"id": "x", "text": "\\ud800"}', "BAD_ENCODING"),
        (None, b'{"id": "x", "text": ', "BAD_JSON"),
        (None, b"[" * 5_000, "BAD_JSON"),
        (None, b'["id", "text"]', "NOT_AN_OBJECT"),
        (None, b'{"text": "no id"}', "MISSING_FIELD"),
        (None, b'{"id": "x"}', "MISSING_FIELD"),
        (None, b'{"id": 7, "text": "t"}', "WRONG_TYPE"),
        (None, b'{"id": "x", "text": 7}', "WRONG_TYPE"),
        (None, b'{"id": "x", "text": "t", "title": ["a"]}', "WRONG_TYPE"),
        (None, b'{"id": "x", "text": "t", "metadata": {"a": {"b": "c"}}}', "WRONG_TYPE"),
        (None, b'{"id": "x", "text": "t", "deleted": "yes"}', "WRONG_TYPE"),
        (None, b'{"id": "  ", "text": "t"}', "INVALID_ID"),
        (None, b'{"id": "a\\u0000b", "text": "t"}', "INVALID_ID"),
        (b"other", b'{"id": "x", "text": "t"}', "KEY_MISMATCH"),
        (None, json.dumps({"id": "x", "text": "é" * 600}).encode(), "TEXT_TOO_LARGE"),
        (None, b" " * 70_000, "VALUE_TOO_LARGE"),
        (None, b"\x00\x00\x00\x00\x01abc", "UNKNOWN_SCHEMA_ID"),
    ],
)
def test_bad_records_are_rejected_with_a_reason(key: bytes | None, value: bytes | None, reason: str) -> None:
    result = parse(key, value)
    assert isinstance(result, Rejection), result
    assert result.reason == reason
    assert result.detail


def test_missing_text_hints_at_misspelt_fields() -> None:
    result = parse(None, b'{"id": "x", "txt": "typo"}')
    assert isinstance(result, Rejection) and "txt" in result.detail


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"tenant": "t" * 300}, "INVALID_TENANT"),  # would overflow the store's tenant column
        ({"tenant": 'acme" || tenant != "'}, "INVALID_TENANT"),  # an expression, not an identifier
        ({"tenant": "acme corp"}, "INVALID_TENANT"),
        ({"tenant": "ácme"}, "INVALID_TENANT"),
        ({"tenant": "org:eu@prod"}, "INVALID_TENANT"),  # not legal in a Kafka topic name
        ({"tenant": "acme.eu"}, "INVALID_TENANT"),  # its topic would collide with acme_eu's
        ({"title": "é" * 600}, "FIELD_TOO_LONG"),  # 1,200 UTF-8 bytes for a 1,024-byte column
        ({"source": "s" * 1025}, "FIELD_TOO_LONG"),
    ],
)
def test_fields_that_would_not_fit_the_index_are_refused_at_the_edge(fields: dict, reason: str) -> None:
    doc = {"id": "d1", "text": "some text", **fields}
    result = parse(b"d1", json.dumps(doc).encode())
    assert isinstance(result, Rejection) and result.reason == reason, result
    avro = parse(b"d1", CODEC.encode("RawDocument", {"title": None, "source": None, "tenant": None, **doc}, "docs.raw"))
    assert isinstance(avro, Rejection) and avro.reason == reason  # the Avro path checks the same limits


def test_ids_are_limited_in_bytes_not_characters() -> None:
    ascii_id, cjk_id = "a" * 512, "文" * 200  # 512 and 600 UTF-8 bytes
    assert isinstance(parse(ascii_id.encode(), json.dumps({"id": ascii_id, "text": "x"}).encode()), RawDocument)
    result = parse(cjk_id.encode(), json.dumps({"id": cjk_id, "text": "x"}).encode())
    assert isinstance(result, Rejection) and result.reason == "INVALID_ID" and "600 bytes" in result.detail


@pytest.mark.parametrize("tenant", ["acme", "team-7", "org-eu-west_prod", "a" * 128, "", None])
def test_identifier_tenants_and_no_tenant_pass(tenant: str | None) -> None:
    assert isinstance(parse(b"d1", json.dumps({"id": "d1", "text": "x", "tenant": tenant}).encode()), RawDocument)


def test_a_deletion_gets_through_whatever_fields_it_carries() -> None:
    # A document indexed under older, looser limits must still be deletable by its id.
    doc = {"id": "d1", "deleted": True, "tenant": "Acme Corp", "title": "t" * 2000}
    result = parse(b"d1", json.dumps(doc).encode())
    assert isinstance(result, RawDocument) and result.deleted
