"""Avro codec with the Confluent wire framing, and the schema registries that number schemas.

Why this exists:
    Avro on our topics must be readable by standard tools (kcat -s avro, Kafka Connect, ksqlDB,
    any Confluent deserializer): each value is ``0x00`` + 4-byte big-endian schema id + Avro
    binary. The id comes from a Confluent-compatible schema registry when
    ``LLMOPS_SCHEMA_REGISTRY_URL`` is set, and otherwise from a deterministic embedded registry
    (the id is derived from the schema's Parsing Canonical Form, so every process agrees on it
    without coordination).

Usage:
    >>> codec = AvroCodec(EmbeddedRegistry.from_directory())
    >>> data = codec.encode("RawDocument", {"id": "d1", "text": "hi"}, topic="docs.raw")
    >>> codec.decode(data, "RawDocument")["text"]
    'hi'

Notes:
    Decoding uses the writer's schema (looked up by id) and the reader's current schema, so a
    reader with a newer schema reads older records (Avro schema resolution). Every failure is a
    ``CodecError`` with a reason code that the dead-letter topic records.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import fastavro
from fastavro.schema import to_parsing_canonical_form

from streams.settings import Settings

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"

Schema = dict[str, Any]


class CodecError(ValueError):
    """A value could not be decoded; ``reason`` is the dead-letter reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SchemaRegistry(Protocol):
    """Numbers schemas for the wire and finds a writer's schema by number."""

    def id_for(self, subject: str, schema: Schema) -> int:
        """Register ``schema`` under ``subject`` if needed and return its id."""
        ...

    def schema_for(self, schema_id: int) -> Schema:
        """Return the schema with this id; raise ``KeyError`` when unknown."""
        ...


def canonical_form(schema: Schema) -> str:
    """Avro Parsing Canonical Form of a schema (what two equal schemas share)."""
    return str(to_parsing_canonical_form(schema))


def embedded_schema_id(schema: Schema) -> int:
    """Deterministic id: the first 31 bits of sha256 of the canonical form, never 0."""
    digest = hashlib.sha256(canonical_form(schema).encode()).digest()
    return (int.from_bytes(digest[:4], "big") & 0x7FFFFFFF) or 1


def load_schema_file(path: Path) -> Schema:
    """Read one ``.avsc`` file."""
    schema: Schema = json.loads(path.read_text(encoding="utf-8"))
    return schema


class EmbeddedRegistry:
    """In-process registry: ids from canonical-form hashes, schemas from ``schemas/``.

    ``schemas/*.avsc`` are the current versions; ``schemas/history/*.avsc`` keep older versions
    so that records written with them still decode.
    """

    def __init__(self, schemas: Mapping[int, Schema] | None = None) -> None:
        self._by_id: dict[int, Schema] = dict(schemas or {})
        self._lock = threading.Lock()

    @classmethod
    def from_directory(cls, directory: Path = SCHEMA_DIR) -> EmbeddedRegistry:
        registry = cls()
        for path in sorted(directory.glob("*.avsc")) + sorted(directory.glob("history/*.avsc")):
            registry.register(load_schema_file(path))
        return registry

    def register(self, schema: Schema) -> int:
        schema_id = embedded_schema_id(schema)
        with self._lock:
            known = self._by_id.get(schema_id)
            if known is not None and canonical_form(known) != canonical_form(schema):
                raise ValueError(f"schema id collision on {schema_id}")
            self._by_id[schema_id] = schema
        return schema_id

    def id_for(self, subject: str, schema: Schema) -> int:
        return self.register(schema)

    def schema_for(self, schema_id: int) -> Schema:
        return self._by_id[schema_id]


class ConfluentRegistry:
    """Client of a Confluent-compatible schema registry (REST API), with caches.

    Subjects follow the TopicNameStrategy (``<topic>-value``), what Confluent serializers use.
    """

    def __init__(self, url: str, username: str | None = None, password: str | None = None) -> None:
        import httpx

        base = httpx.URL(url.rstrip("/"))
        auth = (username, password or "") if username else None
        if base.userinfo:
            # Credentials in the URL become basic auth; the URL kept (and shown in every HTTP
            # error) has none.
            auth = auth or (base.username, base.password)
            base = base.copy_with(username=None, password=None)
        self._client = httpx.Client(base_url=base, auth=auth, timeout=10.0)
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, Schema] = {}

    def id_for(self, subject: str, schema: Schema) -> int:
        key = (subject, canonical_form(schema))
        if key not in self._ids:
            response = self._client.post(
                f"/subjects/{subject}/versions",
                json={"schema": json.dumps(schema)},
                headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
            )
            response.raise_for_status()
            schema_id = int(response.json()["id"])
            self._ids[key] = schema_id
            self._schemas[schema_id] = schema
        return self._ids[key]

    def schema_for(self, schema_id: int) -> Schema:
        if schema_id not in self._schemas:
            response = self._client.get(f"/schemas/ids/{schema_id}")
            if response.status_code == 404:
                raise KeyError(schema_id)
            response.raise_for_status()
            self._schemas[schema_id] = json.loads(response.json()["schema"])
        return self._schemas[schema_id]


class AvroCodec:
    """Encodes and decodes framed Avro; parses each schema once."""

    def __init__(self, registry: SchemaRegistry, schema_dir: Path = SCHEMA_DIR) -> None:
        self._registry = registry
        self._current: dict[str, Schema] = {
            path.stem: load_schema_file(path) for path in sorted(schema_dir.glob("*.avsc"))
        }
        self._parsed: dict[str, Any] = {}
        self._parsed_by_id: dict[int, Any] = {}
        self._ids: dict[tuple[str, str], int] = {}
        self._readers: dict[tuple[int, str], Any] = {}

    def schema(self, name: str) -> Schema:
        """The current schema of a record type, by name (``RawDocument``...)."""
        return self._current[name]

    def _parsed_current(self, name: str) -> Any:
        if name not in self._parsed:
            self._parsed[name] = fastavro.parse_schema(self._current[name])
        return self._parsed[name]

    def _writer_schema(self, schema_id: int) -> Any:
        if schema_id not in self._parsed_by_id:
            self._parsed_by_id[schema_id] = fastavro.parse_schema(self._registry.schema_for(schema_id))
        return self._parsed_by_id[schema_id]

    def _reader_schema(self, schema_id: int, name: str) -> Any:
        """The schema to resolve ``schema_id``'s records to ``name``, or None when they are the same.

        fastavro resolves writer to reader field by field on every record when given a reader
        schema, which costs about 40% more per decode; equal canonical forms need no resolution.
        """
        key = (schema_id, name)
        if key not in self._readers:
            same = canonical_form(self._registry.schema_for(schema_id)) == canonical_form(self._current[name])
            self._readers[key] = None if same else self._parsed_current(name)
        return self._readers[key]

    def schema_id(self, name: str, topic: str) -> int:
        """The wire id of the current schema ``name`` for values of ``topic``."""
        key = (name, topic)
        if key not in self._ids:
            self._ids[key] = self._registry.id_for(f"{topic}-value", self._current[name])
        return self._ids[key]

    def encode(self, name: str, record: Mapping[str, Any], topic: str) -> bytes:
        """Framed Avro bytes of ``record`` written with the current schema ``name``."""
        buffer = io.BytesIO()
        buffer.write(HEADER.pack(MAGIC_BYTE, self.schema_id(name, topic)))
        fastavro.schemaless_writer(buffer, self._parsed_current(name), dict(record))
        return buffer.getvalue()

    def decode(self, data: bytes, name: str) -> dict[str, Any]:
        """Decode framed Avro into a dict shaped by the current schema ``name``.

        Raises:
            CodecError: NOT_AVRO (no magic byte / too short), UNKNOWN_SCHEMA_ID, or BAD_AVRO
                (truncated, trailing bytes, or a writer schema that cannot resolve to ``name``).
        """
        if len(data) < HEADER.size or data[0] != MAGIC_BYTE:
            raise CodecError("NOT_AVRO", "value does not start with the Confluent magic byte 0 + schema id")
        _, schema_id = HEADER.unpack_from(data)
        try:
            writer = self._writer_schema(schema_id)
            reader = self._reader_schema(schema_id, name)
        except KeyError:
            raise CodecError(
                "UNKNOWN_SCHEMA_ID",
                f"schema id {schema_id} is not known to the registry; register the writer's schema "
                "or set LLMOPS_SCHEMA_REGISTRY_URL to the registry the producer used",
            ) from None
        buffer = io.BytesIO(data)
        buffer.seek(HEADER.size)
        try:
            record = fastavro.schemaless_reader(buffer, writer, reader)
        except Exception as error:  # noqa: BLE001 - fastavro raises many types on bad bytes
            raise CodecError("BAD_AVRO", f"cannot decode as {name} (schema id {schema_id}): {error!r}") from None
        if buffer.tell() != len(data):
            raise CodecError("BAD_AVRO", f"{len(data) - buffer.tell()} trailing bytes after the {name} record")
        if not isinstance(record, dict):
            raise CodecError("BAD_AVRO", f"decoded value is not a {name} record")
        return record


def registry_from_settings(url: str | None, username: str | None, password: str | None) -> SchemaRegistry:
    """The Confluent registry when a URL is configured, else the embedded one."""
    if url:
        return ConfluentRegistry(url, username, password)
    return EmbeddedRegistry.from_directory()


def codec_from_settings(settings: Settings) -> AvroCodec:
    """The Avro codec with the schema registry that ``settings`` configure."""
    password = settings.schema_registry_password
    return AvroCodec(
        registry_from_settings(
            settings.schema_registry_url,
            settings.schema_registry_username,
            password.get_secret_value() if password else None,
        )
    )
