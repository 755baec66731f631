"""Parse and validate upstream documents from ``docs.raw``: framed Avro or plain JSON.

Why this exists:
    Upstream systems publish with any Kafka client, in JSON or Avro, and some of what arrives
    is broken. Parsing returns either a :class:`RawDocument` or a :class:`Rejection` with a
    reason code (errors are data), so the agent can dead-letter the record and go on.

Reason codes:
    VALUE_TOO_LARGE, BAD_ENCODING, BAD_JSON, NOT_AN_OBJECT, MISSING_FIELD, WRONG_TYPE,
    INVALID_ID, INVALID_TENANT, FIELD_TOO_LONG, KEY_MISMATCH, NULL_KEY_TOMBSTONE, TEXT_TOO_LARGE,
    EMPTY_TEXT, and from the Avro codec NOT_AVRO, UNKNOWN_SCHEMA_ID, BAD_AVRO. INVALID_TENANT and
    FIELD_TOO_LONG come from the store's limits (``streams.records``): refused here, a record
    that would not fit the index never reaches it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from streams.kafka.avro import MAGIC_BYTE, AvroCodec, CodecError
from streams.records import (
    MAX_DOC_ID_BYTES,
    MAX_SOURCE_BYTES,
    MAX_TITLE_BYTES,
    RawDocument,
    field_too_long,
    tenant_problem,
    utf8_length,
)

_OPTIONAL_STRINGS = ("title", "source", "tenant")
_KNOWN_FIELDS = frozenset({"id", "text", "title", "source", "tenant", "metadata", "deleted"})
# \ud800-\udfff escapes; valid pairs (emoji) match too, so a hit is only a reason to look closer.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _encodable(obj: Any) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Rejection:
    """Why a record was refused; ``reason`` is a stable code, ``detail`` says what to fix."""

    reason: str
    detail: str


def _check_id(doc_id: Any) -> Rejection | None:
    if not isinstance(doc_id, str):
        return Rejection("WRONG_TYPE", f"'id' must be a string, got {type(doc_id).__name__}")
    if not doc_id.strip():
        return Rejection("INVALID_ID", "'id' must not be empty")
    if utf8_length(doc_id) > MAX_DOC_ID_BYTES:
        return Rejection(
            "INVALID_ID", f"'id' is {utf8_length(doc_id)} bytes (UTF-8); at most {MAX_DOC_ID_BYTES} allowed"
        )
    if any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in doc_id):
        return Rejection("INVALID_ID", "'id' contains control characters or lone surrogates")
    return None


def _check_store_limits(obj: dict[str, Any]) -> Rejection | None:
    """Fields that would not fit the index's columns, refused here rather than failing every write."""
    tenant = obj.get("tenant")
    if tenant:  # "" and null both mean: no tenant
        why = tenant_problem(tenant)
        if why:
            return Rejection("INVALID_TENANT", why)
    for name, limit in (("title", MAX_TITLE_BYTES), ("source", MAX_SOURCE_BYTES)):
        why = field_too_long(name, obj.get(name), limit)
        if why:
            return Rejection("FIELD_TOO_LONG", why)
    return None


def _from_json_object(obj: dict[str, Any]) -> RawDocument | Rejection:
    if "id" not in obj:
        return Rejection("MISSING_FIELD", "required field 'id' is missing")
    problem = _check_id(obj["id"])
    if problem:
        return problem
    text = obj.get("text")
    if text is not None and not isinstance(text, str):
        return Rejection("WRONG_TYPE", f"'text' must be a string, got {type(text).__name__}")
    for name in _OPTIONAL_STRINGS:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            return Rejection("WRONG_TYPE", f"'{name}' must be a string or null, got {type(value).__name__}")
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        return Rejection("WRONG_TYPE", "'metadata' must be an object of string values (no nesting)")
    deleted = obj.get("deleted", False)
    if not isinstance(deleted, bool):
        return Rejection("WRONG_TYPE", f"'deleted' must be true or false, got {deleted!r:.40}")
    problem = None if deleted else _check_store_limits(obj)  # a deletion must get through, whatever it holds
    if problem:
        return problem
    if text is None and not deleted:
        unknown = sorted(set(obj) - _KNOWN_FIELDS)
        hint = f" (unknown fields present: {unknown[:5]})" if unknown else ""
        return Rejection("MISSING_FIELD", f"required field 'text' is missing{hint}")
    return RawDocument(
        id=obj["id"],
        text=text,
        title=obj.get("title"),
        source=obj.get("source"),
        tenant=obj.get("tenant"),
        metadata=dict(metadata),
        deleted=deleted,
    )


def parse_raw_document(
    key: bytes | None, value: bytes | None, codec: AvroCodec, max_text_bytes: int
) -> RawDocument | Rejection:
    """Decode one ``docs.raw`` record into a validated document, or say why not.

    A null value (tombstone) deletes the document named by the key. A value starting with
    byte 0 is Confluent-framed Avro; anything else must be a UTF-8 JSON object.
    """
    key_text: str | None = None
    if key is not None:
        try:
            key_text = key.decode("utf-8")
        except UnicodeDecodeError:
            return Rejection("BAD_ENCODING", "the record key is not valid UTF-8; the key must be the document id")
    if value is None:
        if not key_text:
            return Rejection("NULL_KEY_TOMBSTONE", "a tombstone (null value) needs the document id as its key")
        problem = _check_id(key_text)
        return problem or RawDocument(id=key_text, deleted=True)
    # Refuse before parsing: a JSON/Avro envelope is at most a few KiB beyond its text.
    if len(value) > max_text_bytes * 2 + 65_536:
        return Rejection("VALUE_TOO_LARGE", f"value is {len(value)} bytes; text is limited to {max_text_bytes} bytes")
    if value[:1] == bytes([MAGIC_BYTE]):
        try:
            document: RawDocument | Rejection = _from_json_object(codec.decode(value, "RawDocument"))
        except CodecError as error:
            return Rejection(error.reason, error.detail)
    else:
        try:
            decoded = value.decode("utf-8")
        except UnicodeDecodeError as error:
            return Rejection("BAD_ENCODING", f"value is neither Avro (magic byte 0) nor UTF-8 JSON: {error}")
        try:
            obj = json.loads(decoded)
        except json.JSONDecodeError as error:
            return Rejection("BAD_JSON", f"value is not valid JSON: {error}")
        except RecursionError:
            return Rejection("BAD_JSON", "value is nested too deeply to be a document")
        if not isinstance(obj, dict):
            return Rejection("NOT_AN_OBJECT", f"JSON value must be an object, got {type(obj).__name__}")
        if _SURROGATE_ESCAPE.search(decoded) and not _encodable(obj):
            return Rejection("BAD_ENCODING", "a string holds a lone surrogate (an invalid \\u escape)")
        document = _from_json_object(obj)
    if isinstance(document, Rejection):
        return document
    if key_text is not None and key_text != document.id:
        return Rejection(
            "KEY_MISMATCH", f"record key {key_text[:80]!r} differs from id {document.id[:80]!r}; key must equal id"
        )
    if document.text is not None:
        try:
            size = len(document.text.encode("utf-8"))
        except UnicodeEncodeError:
            return Rejection("BAD_ENCODING", "'text' contains lone surrogates (invalid Unicode escapes)")
        if size > max_text_bytes:
            return Rejection("TEXT_TOO_LARGE", f"'text' is {size} bytes; the limit is {max_text_bytes}")
    return document
