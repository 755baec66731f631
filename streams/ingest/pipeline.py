"""The ingest stage as a pure function: raw record in, clean chunks (or a dead letter) out.

Why this exists:
    The ingest agent, the plain-aiokafka baseline in ``bench/`` and the tests all run exactly
    this code, so that what is measured and tested is what runs. It touches no Kafka: the
    caller passes the record's bytes, its coordinates and a key-value store for dedup state
    (a Faust table in the worker, a dict in tests).

What one record becomes (exactly one outcome, so every input is accounted for):
    INDEXED   -> UPSERT chunks, plus DELETEs of chunks that an update no longer has
    DUPLICATE -> a DuplicateNotice (plus DELETEs of the document's previous chunks, if any)

    Of a group of duplicates the smallest id is the indexed copy, whatever the arrival order:
    when it arrives after a larger-id copy was indexed, that copy steps down (a DuplicateNotice
    and DELETEs of its chunks travel with the INDEXED result). So the final index depends only
    on the documents, not on how partitions interleave, and a replay reproduces it. Copies that
    two workers indexed at the same moment step down the same way once either sees the other's
    write (:meth:`IngestPipeline.retractions`, run by the owner of the copy's partition).
    DELETED   -> DELETE events for every chunk the document had
    REJECTED  -> a DeadLetter with the original bytes and a reason code
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from streams.ingest.chunk import TextChunk, Tokenizer, TokenSpan, chunk_spans
from streams.ingest.clean import clean_text
from streams.ingest.dedup import (
    MIN_SHINGLES_FOR_NEAR,
    DedupIndex,
    DocState,
    Duplicate,
    LookupIndex,
    content_hash,
    shingles,
    simhash64,
)
from streams.ingest.redact import PLACEHOLDERS, redact_pii
from streams.ingest.validate import Rejection, parse_raw_document
from streams.kafka.avro import AvroCodec
from streams.kafka.topics import Topics
from streams.records import (
    ChunkOp,
    CleanChunk,
    DeadLetter,
    DuplicateNotice,
    RawDocument,
    SourceCoordinates,
    now_ms,
)
from streams.settings import Settings

STAGE = "ingest"


class Outcome(StrEnum):
    """What happened to one input record."""

    INDEXED = "indexed"
    DUPLICATE = "duplicate"
    DELETED = "deleted"
    REJECTED = "rejected"


@dataclass(frozen=True)
class IngestConfig:
    """The settings the ingest stage reads."""

    chunk_tokens: int = 128
    chunk_overlap: int = 16
    max_text_bytes: int = 1_000_000
    min_text_chars: int = 1
    redact_pii: tuple[str, ...] = ("email", "phone", "card", "ip", "secret")
    near_dup_max_hamming: int = 3
    near_dup_enabled: bool = True
    max_chunks: int = 0  # keep only a document's first chunks (0 = all); an index version's chunker may cap them

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestConfig:
        return cls(
            chunk_tokens=settings.chunk_tokens,
            chunk_overlap=settings.chunk_overlap,
            max_text_bytes=settings.max_text_bytes,
            min_text_chars=settings.min_text_chars,
            redact_pii=settings.redact_pii,
            near_dup_max_hamming=settings.near_dup_max_hamming,
            near_dup_enabled=settings.near_dup_enabled,
        )


@dataclass(frozen=True)
class IngestRecord:
    """One record as read from ``docs.raw``."""

    key: bytes | None
    value: bytes | None
    source: SourceCoordinates
    traceparent: str | None = None


@dataclass(frozen=True)
class IngestResult:
    """The outcome of one record and everything to publish for it."""

    outcome: Outcome
    doc_id: str | None
    chunks: tuple[CleanChunk, ...] = ()
    duplicate: DuplicateNotice | None = None
    dead_letter: DeadLetter | None = None
    pii_counts: dict[str, int] = field(default_factory=dict)
    demoted: tuple[DuplicateNotice, ...] = ()  # earlier documents this one replaces as the canonical copy


@dataclass(frozen=True)
class Retraction:
    """A copy indexed concurrently with a smaller-id one, and how it steps down.

    The caller publishes ``result`` (its notice and the DELETEs of the copy's chunks) first and
    writes ``state`` into the dedup store after the broker acknowledged them, so that a crash in
    between leaves the copy contested and retracted again, never a copy marked but still indexed.
    """

    doc_id: str
    state: DocState
    result: IngestResult
    record: IngestRecord


@dataclass(frozen=True)
class _Prepared:
    """A document after the stateless steps: cleaned, redacted, chunked, hashed."""

    document: RawDocument
    text: str
    doc_hash: str
    simhash: int
    near_eligible: bool
    pii_counts: dict[str, int]


def _notice(doc_id: str, duplicate_of: str, match: Duplicate, doc_hash: str, record: IngestRecord) -> DuplicateNotice:
    """The notice that ``doc_id`` is skipped as a copy of ``duplicate_of``, naming the record that decided it."""
    return DuplicateNotice(
        doc_id=doc_id,
        duplicate_of=duplicate_of,
        kind=match.kind,
        distance=match.distance,
        doc_hash=doc_hash,
        source_topic=record.source.topic,
        source_partition=record.source.partition,
        source_offset=record.source.offset,
    )


def _dead_letter(record: IngestRecord, rejection: Rejection, now_ms: int) -> DeadLetter:
    return DeadLetter.of(
        record.source,
        record.key,
        record.value,
        stage=STAGE,
        reason=rejection.reason,
        detail=rejection.detail,
        now_ms=now_ms,
    )


class IngestPipeline:
    """validate -> clean -> redact -> dedup -> chunk, one record or a batch at a time."""

    def __init__(
        self,
        config: IngestConfig,
        codec: AvroCodec,
        tokenizer: Tokenizer,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.config = config
        self.codec = codec
        self.tokenizer = tokenizer
        self.clock_ms = clock_ms

    # --- stateless steps (safe to run for a whole batch before touching state) -----------
    def prepare(self, record: IngestRecord) -> RawDocument | _Prepared | Rejection:
        """Validate, clean and redact; a deletion comes back as the bare document."""
        parsed = parse_raw_document(record.key, record.value, self.codec, self.config.max_text_bytes)
        if isinstance(parsed, Rejection) or parsed.deleted:
            return parsed
        text = clean_text(parsed.text or "")
        if len(text) < self.config.min_text_chars:
            return Rejection(
                "EMPTY_TEXT",
                f"text is empty after cleaning (HTML, control characters and whitespace removed); "
                f"at least {self.config.min_text_chars} characters needed",
            )
        redaction = redact_pii(text, self.config.redact_pii)
        text = redaction.text
        features = shingles(text)
        return _Prepared(
            document=parsed,
            text=text,
            doc_hash=content_hash(text),
            simhash=simhash64(features),
            near_eligible=sum(features.values()) >= MIN_SHINGLES_FOR_NEAR,
            pii_counts=redaction.counts,
        )

    def _chunk(self, prepared: _Prepared, spans: Sequence[TokenSpan]) -> list[TextChunk]:
        chunks = chunk_spans(prepared.text, spans, self.config.chunk_tokens, self.config.chunk_overlap)
        return chunks[: self.config.max_chunks] if self.config.max_chunks > 0 else chunks

    # --- stateful step ------------------------------------------------------------------
    def process(
        self, record: IngestRecord, store: MutableMapping[str, Any], lookups: LookupIndex | None = None
    ) -> IngestResult:
        """Run one record through every step (see :meth:`process_batch` for many)."""
        return self.process_batch([record], store, lookups)[0]

    def process_batch(
        self, records: Sequence[IngestRecord], store: MutableMapping[str, Any], lookups: LookupIndex | None = None
    ) -> list[IngestResult]:
        """Run records in order; state updates of one are seen by the next.

        Tokenization of every document in the batch happens in one call, which lets the Rust
        tokenizer use all cores; everything else is per record, in input order. ``lookups`` is
        the in-memory index derived from ``store``; pass the same one on every call (it is rebuilt
        from ``store`` when omitted, which costs a pass over the store).
        """
        prepared = [self._prepare_safely(record) for record in records]
        texts = [p.text for p in prepared if isinstance(p, _Prepared)]
        spans_batch = getattr(self.tokenizer, "spans_batch", None)
        all_spans: list[Sequence[TokenSpan]] = (
            list(spans_batch(texts)) if spans_batch and texts else [self.tokenizer.spans(t) for t in texts]
        )
        dedup = DedupIndex(store, self.config.near_dup_max_hamming, self.config.near_dup_enabled, lookups)
        results: list[IngestResult] = []
        span_iter = iter(all_spans)
        for record, item in zip(records, prepared, strict=True):
            if isinstance(item, Rejection):
                results.append(
                    IngestResult(Outcome.REJECTED, None, dead_letter=_dead_letter(record, item, self.clock_ms()))
                )
            elif isinstance(item, RawDocument):
                results.append(self._delete(record, item, dedup))
            else:
                spans = next(span_iter)
                try:
                    results.append(self._index(record, item, self._chunk(item, spans), dedup))
                except Exception as error:  # noqa: BLE001 - one bad record must not stop the stream
                    rejection = Rejection("INTERNAL_ERROR", f"ingest failed on this record: {error!r}")
                    results.append(
                        IngestResult(
                            Outcome.REJECTED, None, dead_letter=_dead_letter(record, rejection, self.clock_ms())
                        )
                    )
        return results

    def _prepare_safely(self, record: IngestRecord) -> RawDocument | _Prepared | Rejection:
        try:
            return self.prepare(record)
        except Exception as error:  # noqa: BLE001 - a bug on one record becomes its dead letter
            return Rejection("INTERNAL_ERROR", f"ingest failed on this record: {error!r}")

    def _delete(self, record: IngestRecord, document: RawDocument, dedup: DedupIndex) -> IngestResult:
        previous = dedup.forget(document.id)
        # Unknown here (state lost, or indexed before dedup existed) or a skipped duplicate with no
        # chunks: one whole-document delete, so every input still has an output that names it.
        indices: Sequence[int] = range(previous.chunk_count) if previous and previous.chunk_count else (-1,)
        chunks = tuple(self._deletion(document, index, record) for index in indices)
        return IngestResult(Outcome.DELETED, document.id, chunks=chunks)

    def _index(self, record: IngestRecord, item: _Prepared, pieces: list[TextChunk], dedup: DedupIndex) -> IngestResult:
        document = item.document
        duplicate = dedup.find_duplicate(document.id, item.doc_hash, item.simhash if item.near_eligible else None)
        demoted: list[DuplicateNotice] = []
        retired: list[CleanChunk] = []
        if duplicate is not None and document.id < duplicate.of:
            # The canonical copy of a duplicate group is the smallest id, whatever the arrival
            # order: the earlier document steps down, so a replay (other partitions, other
            # interleaving) ends with the same index.
            notice, chunks = self._demote(duplicate, document, record, dedup)
            demoted.append(notice)
            retired.extend(chunks)
            duplicate = None
        state = DocState(
            item.doc_hash,
            item.simhash,
            0 if duplicate else len(pieces),
            duplicate_of=duplicate.of if duplicate else None,
            near_eligible=item.near_eligible,
            offset=record.source.offset,
            partition=record.source.partition,
        )
        previous = dedup.replace(document.id, state)
        old_count = previous.chunk_count if previous else 0
        if duplicate is not None:
            notice = _notice(document.id, duplicate.of, duplicate, item.doc_hash, record)
            obsolete = tuple(self._deletion(document, index, record) for index in range(old_count))
            return IngestResult(Outcome.DUPLICATE, document.id, chunks=obsolete, duplicate=notice)
        upserts = [self._upsert(document, item, piece, len(pieces), record) for piece in pieces]
        stale = [self._deletion(document, index, record) for index in range(len(pieces), old_count)]
        return IngestResult(
            Outcome.INDEXED,
            document.id,
            chunks=(*retired, *upserts, *stale),
            pii_counts=item.pii_counts,
            demoted=tuple(demoted),
        )

    def _demote(
        self, duplicate: Duplicate, winner: RawDocument, record: IngestRecord, dedup: DedupIndex
    ) -> tuple[DuplicateNotice, list[CleanChunk]]:
        """Make the indexed document ``duplicate.of`` a duplicate of ``winner``: state, notice, deletes."""
        old = dedup.state(duplicate.of)
        assert old is not None  # lookups only hold documents they know
        state, notice, deletes = self._step_down(duplicate.of, old, winner.id, duplicate, record)
        dedup.replace(duplicate.of, state)
        return notice, deletes

    def _step_down(
        self, loser_id: str, old: DocState, winner_id: str, match: Duplicate, record: IngestRecord
    ) -> tuple[DocState, DuplicateNotice, list[CleanChunk]]:
        """The state, notice and chunk deletions of an indexed document becoming a copy of ``winner_id``."""
        state = replace(old, chunk_count=0, duplicate_of=winner_id)
        notice = _notice(loser_id, winner_id, match, old.doc_hash, record)
        loser = RawDocument(id=loser_id, deleted=True)
        return state, notice, [self._deletion(loser, index, record) for index in range(old.chunk_count)]

    def retractions(self, lookups: LookupIndex, owns: Callable[[int], bool], source_topic: str) -> list[Retraction]:
        """Copies indexed beside a smaller-id one (exact, then near), for the partitions ``owns`` accepts.

        Each copy is retracted by one worker, the owner of the docs.raw partition its last record
        came from (a state written before partitions were stored, -1, falls to partition 0's owner),
        so it is ordered with that document's own updates. Nothing is changed here: see :class:`Retraction`.
        """
        out: list[Retraction] = []
        stepping_down: set[str] = set()
        for conflict in lookups.contested():
            # One step per document and pass; a copy of a document stepping down waits for the next pass.
            if conflict.loser in stepping_down or conflict.winner in stepping_down:
                continue
            old = lookups.states[conflict.loser]
            if not owns(max(old.partition, 0)):
                continue
            coordinates = SourceCoordinates(source_topic, old.partition, old.offset, self.clock_ms())
            record = IngestRecord(conflict.loser.encode(), None, coordinates)
            match = Duplicate(of=conflict.winner, kind=conflict.kind, distance=conflict.distance)
            state, notice, deletes = self._step_down(conflict.loser, old, conflict.winner, match, record)
            result = IngestResult(Outcome.DUPLICATE, conflict.loser, chunks=tuple(deletes), duplicate=notice)
            out.append(Retraction(conflict.loser, state, result, record))
            stepping_down.add(conflict.loser)
        return out

    def _upsert(
        self, document: RawDocument, item: _Prepared, piece: TextChunk, count: int, record: IngestRecord
    ) -> CleanChunk:
        return CleanChunk(
            op=ChunkOp.UPSERT,
            chunk_id=f"{document.id}#{piece.index}",
            doc_id=document.id,
            chunk_index=piece.index,
            chunk_count=count,
            text=piece.text,
            token_count=piece.token_count,
            content_hash=content_hash(piece.text),
            doc_hash=item.doc_hash,
            raw_timestamp_ms=record.source.timestamp_ms,
            title=document.title,
            source=document.source,
            tenant=document.tenant,
            metadata=dict(document.metadata),
            pii_redacted=redact_pii_counts_in(piece.text),
            traceparent=record.traceparent,
        )

    @staticmethod
    def _deletion(document: RawDocument, index: int, record: IngestRecord) -> CleanChunk:
        chunk_id = f"{document.id}#{index}" if index >= 0 else f"{document.id}#*"
        return CleanChunk(
            op=ChunkOp.DELETE,
            chunk_id=chunk_id,
            doc_id=document.id,
            chunk_index=index,
            chunk_count=0,
            text="",
            token_count=0,
            content_hash="",
            doc_hash="",
            raw_timestamp_ms=record.source.timestamp_ms,
            tenant=document.tenant,
            traceparent=record.traceparent,
        )


@dataclass(frozen=True)
class Outgoing:
    """One record to produce: what every implementation of the stage sends for a result."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def encode_outputs(result: IngestResult, record: IngestRecord, codec: AvroCodec, topics: Topics) -> list[Outgoing]:
    """The Kafka records of one result, each with the ``llmops.source`` header of its input.

    Trace context headers are the agent's to add (streams.telemetry.tracing): they name its span.
    """
    source = [record.source.header]
    out = []
    for chunk in result.chunks:
        value = codec.encode("CleanChunk", chunk.to_avro(), topics.docs_clean)
        out.append(Outgoing(topics.docs_clean, chunk.doc_id.encode(), value, source))
    notices = (result.duplicate, *result.demoted) if result.duplicate else result.demoted
    for notice in notices:
        value = codec.encode("DuplicateNotice", notice.to_avro(), topics.docs_duplicates)
        out.append(Outgoing(topics.docs_duplicates, notice.doc_id.encode(), value, source))
    if result.dead_letter is not None:
        value = codec.encode("DeadLetter", result.dead_letter.to_avro(), topics.deadletter)
        out.append(Outgoing(topics.deadletter, result.dead_letter.key, value, source))
    return out


def redact_pii_counts_in(chunk_text: str) -> dict[str, int]:
    """Count the placeholders a chunk carries, by kind (the chunk text is already redacted)."""
    counts = {kind: chunk_text.count(placeholder) for kind, placeholder in PLACEHOLDERS.items()}
    return {kind: n for kind, n in counts.items() if n}
