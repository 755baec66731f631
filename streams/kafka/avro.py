"""Avro codec with the Confluent wire framing, and the schema registries that number schemas.

Why this exists:
    Avro on our topics must be readable by standard tools (kcat -s avro, Kafka Connect, ksqlDB,
    any Confluent deserializer): each value is ``0x00`` + 4-byte big-endian schema id + Avro
    binary. The id comes from a Confluent-compatible schema registry when
    ``LLMOPS_SCHEMA_REGISTRY_URL`` is set (through confluent-kafka's ``SchemaRegistryClient``, so
    bytes written by its ``AvroSerializer`` read here and ours read with its ``AvroDeserializer``),
    and otherwise from a deterministic embedded registry (the id is derived from the schema's
    Parsing Canonical Form, so every process agrees on it without coordination).

Usage:
    >>> codec = AvroCodec(EmbeddedRegistry.from_directory())
    >>> data = codec.encode("RawDocument", {"id": "d1", "text": "hi"}, topic="docs.raw")
    >>> codec.decode(data, "RawDocument")["text"]
    'hi'
    >>> await codec.prefetch(values, writes=[("CleanChunk", "docs.clean")])   # in an agent, per batch

Notes:
    Decoding uses the writer's schema (looked up by id) and the reader's current schema, so a
    reader with a newer schema reads older records (Avro schema resolution). Every failure is a
    ``CodecError`` with a reason code that the dead-letter topic records. ``encode``/``decode``
    are synchronous; with a remote registry a cache miss is an HTTP request, so async code awaits
    ``prefetch`` first and the request runs in a thread (a miss on the event loop is logged as
    ``schema_registry_call_on_event_loop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import fastavro
from fastavro.schema import to_parsing_canonical_form

from streams.logs import get_logger
from streams.settings import Settings, mask_url_credentials

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
log = get_logger(__name__)

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

    def cached_schema(self, schema_id: int) -> bool:
        """Whether ``schema_for(schema_id)`` answers (or raises) without a network request."""
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

    def cached_schema(self, schema_id: int) -> bool:
        return True


class RegistryError(RuntimeError):
    """The schema registry refused a schema or could not be asked; the message says what to change."""


class ConfluentRegistry:
    """A Confluent-compatible schema registry through confluent-kafka's ``SchemaRegistryClient``.

    Subjects follow the TopicNameStrategy (``<topic>-value``), what Confluent serializers use.
    Ids found and ids or subjects missing are both cached: a record that names an unknown id
    costs one HTTP request per ``miss_ttl`` seconds, not one per record. Calls block; agents
    reach them through :meth:`AvroCodec.prefetch`, which runs them in a thread.
    """

    def __init__(
        self,
        url: str,
        username: str | None = None,
        password: str | None = None,
        *,
        auto_register: bool = True,
        miss_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        parts = urlsplit(url)
        if parts.username:
            # Credentials in the URL become basic auth; the URL kept (and shown in errors) has none.
            username, password = username or unquote(parts.username), password or unquote(parts.password or "")
            url = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
        conf: dict[str, Any] = {"url": url.rstrip("/"), "timeout": 10}
        if username:
            conf["basic.auth.user.info"] = f"{username}:{password or ''}"
        self.url = conf["url"]
        self.client = SchemaRegistryClient(conf)
        self.auto_register = auto_register
        self._miss_ttl, self._clock = miss_ttl, clock
        self._ids: dict[tuple[str, str], int] = {}
        self._schemas: dict[int, Schema] = {}
        self._missing: dict[object, float] = {}  # an id or (subject, form) -> when it was found missing
        self._lock = threading.Lock()

    def cached_id(self, subject: str, schema: Schema) -> int | None:
        """The id of ``schema`` under ``subject`` if known without asking the registry."""
        return self._ids.get((subject, canonical_form(schema)))

    def cached_schema(self, schema_id: int) -> bool:
        """Whether ``schema_for(schema_id)`` answers without asking the registry."""
        return schema_id in self._schemas or self._missed(schema_id)

    def _missed(self, key: object) -> bool:
        found = self._missing.get(key)
        return found is not None and self._clock() - found < self._miss_ttl

    def id_for(self, subject: str, schema: Schema) -> int:
        from confluent_kafka.schema_registry import Schema as RegistrySchema
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        key = (subject, canonical_form(schema))
        known = self._ids.get(key)
        if known is not None:
            return known
        if self._missed(key):
            raise RegistryError(self._not_registered(subject))
        wire = RegistrySchema(json.dumps(schema), "AVRO")
        _note_event_loop_call(f"register {subject}")
        try:
            if self.auto_register:
                schema_id = int(self.client.register_schema(subject, wire))
            else:
                schema_id = int(self.client.lookup_schema(subject, wire).schema_id or 0)
        except SchemaRegistryError as error:
            if error.http_status_code == 404:
                with self._lock:
                    self._missing[key] = self._clock()
                raise RegistryError(self._not_registered(subject)) from None
            if error.http_status_code == 409:
                raise RegistryError(
                    f"the schema registry at {self.url} refused this version of {schema.get('name')} under subject "
                    f"{subject} as incompatible with the versions before it ({error.error_message}); make the "
                    "change compatible (e.g. new fields need a default) or change the subject's compatibility "
                    "level in the registry"
                ) from None
            raise RegistryError(self._failed(f"register {subject}", error)) from None
        except Exception as error:  # noqa: BLE001 - httpx raises many transport errors
            raise RegistryError(self._failed(f"register {subject}", error)) from None
        with self._lock:
            self._ids[key] = schema_id
            self._schemas.setdefault(schema_id, schema)
        return schema_id

    def schema_for(self, schema_id: int) -> Schema:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        known = self._schemas.get(schema_id)
        if known is not None:
            return known
        if self._missed(schema_id):
            raise KeyError(schema_id)
        _note_event_loop_call(f"fetch schema id {schema_id}")
        try:
            found = self.client.get_schema(schema_id)
        except SchemaRegistryError as error:
            if error.http_status_code == 404:
                with self._lock:
                    self._missing[schema_id] = self._clock()
                raise KeyError(schema_id) from None
            raise RegistryError(self._failed(f"fetch schema id {schema_id}", error)) from None
        except Exception as error:  # noqa: BLE001 - httpx raises many transport errors
            raise RegistryError(self._failed(f"fetch schema id {schema_id}", error)) from None
        schema: Schema = json.loads(found.schema_str or "null")
        with self._lock:
            self._schemas[schema_id] = schema
        return schema

    def _not_registered(self, subject: str) -> str:
        return (
            f"no version of this schema is registered under subject {subject} at {self.url}; register it "
            "there or set LLMOPS_SCHEMA_REGISTRY_AUTO_REGISTER=true"
        )

    def _failed(self, action: str, error: Exception) -> str:
        return mask_url_credentials(
            f"could not {action} at the schema registry {self.url} ({error}); check LLMOPS_SCHEMA_REGISTRY_URL "
            "and, if it needs them, LLMOPS_SCHEMA_REGISTRY_USERNAME / LLMOPS_SCHEMA_REGISTRY_PASSWORD"
        )


def _note_event_loop_call(action: str) -> None:
    """Warn when a registry request is about to block a running event loop (a missed prefetch)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    log.warning("schema_registry_call_on_event_loop", action=action, fix="await AvroCodec.prefetch(...) first")


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

    async def prefetch(self, values: Iterable[bytes | None] = (), writes: Iterable[tuple[str, str]] = ()) -> None:
        """Ask the registry, in a thread, for what decoding ``values`` and encoding ``writes`` needs.

        Agents await this once per batch before the synchronous ``decode``/``encode``: with a
        remote registry a cache miss is an HTTP request, which must not stall the event loop (and
        with it every agent of the worker). ``writes`` are ``(record name, topic)`` pairs. Once
        everything is cached (always, with the embedded registry) it returns without a thread.

        Raises:
            RegistryError: a schema to write was refused or the registry could not be reached
                (the batch fails and is read again; records are not dead-lettered for it).
        """
        ids = {HEADER.unpack_from(v)[1] for v in values if v and len(v) >= HEADER.size and v[0] == MAGIC_BYTE}
        unknown = [i for i in ids if i not in self._parsed_by_id and not self._registry.cached_schema(i)]
        unwritten = [(name, topic) for name, topic in dict.fromkeys(writes) if (name, topic) not in self._ids]
        if unknown or unwritten:
            await asyncio.to_thread(self._warm, unknown, unwritten)

    def _warm(self, ids: list[int], writes: list[tuple[str, str]]) -> None:
        for schema_id in ids:
            with contextlib.suppress(KeyError):  # a missing id is cached as missing; decode says so
                self._registry.schema_for(schema_id)
        for name, topic in writes:
            self.schema_id(name, topic)

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


def registry_from_settings(
    url: str | None, username: str | None, password: str | None, *, auto_register: bool = True
) -> SchemaRegistry:
    """The Confluent registry when a URL is configured, else the embedded one."""
    if url:
        return ConfluentRegistry(url, username, password, auto_register=auto_register)
    return EmbeddedRegistry.from_directory()


def codec_from_settings(settings: Settings) -> AvroCodec:
    """The Avro codec with the schema registry that ``settings`` configure."""
    password = settings.schema_registry_password
    return AvroCodec(
        registry_from_settings(
            settings.schema_registry_url,
            settings.schema_registry_username,
            password.get_secret_value() if password else None,
            auto_register=settings.schema_registry_auto_register,
        )
    )
