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
