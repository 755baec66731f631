"""Frozen dataclasses for the records on our topics, one per Avro schema in ``schemas/``.

Why this exists:
    The pure core (cleaning, dedup, chunking) works on plain, immutable values that a test can
    build by hand; only the codec knows about bytes. ``to_avro`` gives the dict that the
    schema of the same name encodes, field for field.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# Half the default producer request (and broker message) limit of 1 MiB: a dead letter always fits.
MAX_DEAD_LETTER_BYTES = 512 * 1024
MAX_DETAIL_CHARS = 4000

# --- field limits: the store's columns, validated at every edge -----------------------------------
# The vector store's VARCHAR columns are sized from these, and ingest, requests and feedback check
# them where records enter, so a record that passes validation always fits the store (a record
# that did not would fail every write and look like an outage). Lengths are UTF-8 bytes: Milvus
# Lite counts characters, a Milvus server may count bytes, and bytes bound both.
MAX_DOC_ID_BYTES = 512
MAX_CHUNK_ID_BYTES = 1100  # '<doc id>#<chunk index>' with headroom (the column's size since v0.1)
MAX_TENANT_CHARS = 128  # ASCII only (TENANT_PATTERN), so characters are bytes
TENANT_COLUMN_BYTES = 256  # the column keeps the width it had; tenants now fit in half of it
MAX_TITLE_BYTES = 1024
MAX_SOURCE_BYTES = 1024
MAX_CHUNK_TEXT_BYTES = 65_535
# A tenant is an identifier, not text: it scopes searches and names its own reply topic, so it
# uses only characters that are legal in a Kafka topic name, and no '.': Kafka refuses a topic
# whose name differs from another's only by '.' against '_' ("acme.eu" and "acme_eu" collide).
TENANT_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{MAX_TENANT_CHARS - 1}}}")


def utf8_length(text: str) -> int:
    """The UTF-8 size of ``text`` (lone surrogates count 3 bytes, as their escapes would)."""
    return len(text.encode("utf-8", "surrogatepass"))


def tenant_problem(tenant: str) -> str | None:
    """Why ``tenant`` cannot name a tenant (what to send instead), or None when it can."""
    if TENANT_PATTERN.fullmatch(tenant):
        return None
    if len(tenant) > MAX_TENANT_CHARS:
        return f"'tenant' is {len(tenant)} characters; at most {MAX_TENANT_CHARS} allowed"
    return (
        f"'tenant' {tenant[:40]!r} is not an identifier: use 1-{MAX_TENANT_CHARS} ASCII letters, digits, "
        "_ and - (starting with a letter or digit)"
    )


def field_too_long(name: str, value: str | None, limit: int) -> str | None:
    """Why ``value`` of field ``name`` does not fit its store column of ``limit`` bytes, or None."""
    if value is None:
        return None
    size = utf8_length(value)
    return f"'{name}' is {size} bytes (UTF-8); at most {limit} fit the index" if size > limit else None


def now_ms() -> int:
    """Wall-clock epoch milliseconds, the unit of every timestamp field in our records."""
    return time.time_ns() // 1_000_000


class ChunkOp(StrEnum):
    """What a CleanChunk asks downstream stages to do."""

    UPSERT = "UPSERT"
    DELETE = "DELETE"


class DuplicateKind(StrEnum):
    """How a skipped document matched an earlier one."""

    EXACT = "EXACT"
    NEAR = "NEAR"


# Header on every record a stage writes, naming the input record it came from, so that every
# input can be accounted for with any Kafka tool (kcat -f '%h').
SOURCE_HEADER = "llmops.source"


@dataclass(frozen=True)
class SourceCoordinates:
    """Where a record came from: enough to find it again with any Kafka tool."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int

    @property
    def header(self) -> tuple[str, bytes]:
        """The ``llmops.source`` header value, ``topic:partition:offset``."""
        return SOURCE_HEADER, f"{self.topic}:{self.partition}:{self.offset}".encode()


@dataclass(frozen=True)
class RawDocument:
    """A validated upstream document (schema ``RawDocument``)."""

    id: str
    text: str | None = None
    title: str | None = None
    source: str | None = None
    tenant: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    deleted: bool = False

    def to_avro(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CleanChunk:
    """A cleaned chunk, or a deletion (schema ``CleanChunk``)."""

    op: ChunkOp
    chunk_id: str
    doc_id: str
    chunk_index: int
    chunk_count: int
    text: str
    token_count: int
    content_hash: str
    doc_hash: str
    raw_timestamp_ms: int
    title: str | None = None
    source: str | None = None
    tenant: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    pii_redacted: dict[str, int] = field(default_factory=dict)
    traceparent: str | None = None

    def to_avro(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["op"] = self.op.value
        return record


@dataclass(frozen=True)
class DeadLetter:
    """A rejected record with its original bytes (schema ``DeadLetter``).

    Key and value are kept whole up to :data:`MAX_DEAD_LETTER_BYTES` together; beyond that the
    value (then the key) is cut and ``detail`` says so and where the whole record is. Without the
    cut, a rejected record close to the 1 MiB producer limit would make a dead letter larger than
    the limit, and its stage would fail to send it.
    """

    reason: str
    detail: str
    stage: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp_ms: int
    key: bytes | None
    value: bytes | None
    rejected_at_ms: int

    def to_avro(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def of(
        cls,
        source: SourceCoordinates,
        key: bytes | None,
        value: bytes | None,
        *,
        stage: str,
        reason: str,
        detail: str,
        now_ms: int,
    ) -> DeadLetter:
        """The dead letter of one input record: its original bytes, where it was, and why."""
        detail = detail[:MAX_DETAIL_CHARS]
        size = len(key or b"") + len(value or b"")
        if size > MAX_DEAD_LETTER_BYTES:
            key = key[:MAX_DEAD_LETTER_BYTES] if key is not None else None
            room = MAX_DEAD_LETTER_BYTES - len(key or b"")
            value = value[:room] if value is not None else None
            detail += (
                f" [key and value cut to their first {MAX_DEAD_LETTER_BYTES} of {size} bytes; the whole record "
                f"is at {source.topic}:{source.partition}:{source.offset}]"
            )
        return cls(
            reason,
            detail,
            stage,
            source.topic,
            source.partition,
            source.offset,
            source.timestamp_ms,
            key,
            value,
            now_ms,
        )

    @property
    def source(self) -> SourceCoordinates:
        return SourceCoordinates(self.source_topic, self.source_partition, self.source_offset, self.source_timestamp_ms)


@dataclass(frozen=True)
class DuplicateNotice:
    """A document skipped as a duplicate (schema ``DuplicateNotice``)."""

    doc_id: str
    duplicate_of: str
    kind: DuplicateKind
    distance: int
    doc_hash: str
    source_topic: str
    source_partition: int
    source_offset: int

    def to_avro(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["kind"] = self.kind.value
        return record
