"""Build a candidate index from ``docs.raw`` in the background, resumable, while production answers.

Why this exists:
    A new embedder, chunker or Milvus index means new rows for every document. The builder reads
    the retained ``docs.raw`` from its start in a consumer group of its own
    (``llmops-<ns>-index-build-<version16>``), runs each record through the same ingest stage as
    the live pipeline (with the candidate's chunker), embeds with the candidate's embedder and
    upserts into the candidate's collection. It keeps following the topic after catching up, so
    new documents flow into the candidate as into production until the version is archived.

Resuming:
    Offsets are committed only after a batch is in Milvus, and upserts are keyed by chunk id, so
    a builder killed mid-batch re-reads at most that batch. The ingest stage's dedup state lives
    in memory, so a restarted build first replays ``docs.raw`` up to its committed offsets
    through the ingest stage alone (no embedding, nothing written): a near-duplicate of a
    document read before the crash is then recognised as one, and the build ends with the same
    rows as an uninterrupted one (tests/integration/test_index_versions.py).

Usage:
    >>> build = IndexBuild(settings, version, spec, embedder, store)
    >>> await build.run()                              # until cancelled
    >>> build.progress.as_dict()                       # done / total records, rate, ETA
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.index.embed import Embedder
from streams.index.indexing import IndexReport, SealPolicy, apply_isolating, embed_chunks
from streams.index.spec import IndexSpec
from streams.index.vectorstore import VectorStore
from streams.ingest.chunk import default_tokenizer
from streams.ingest.pipeline import IngestPipeline, IngestRecord
from streams.kafka.avro import AvroCodec
from streams.kafka.topics import INDEX_BUILD_GROUP, Topics
from streams.logs import get_logger
from streams.records import SourceCoordinates
from streams.settings import Settings

log = get_logger(__name__)
BATCH_RECORDS = 64
IDLE_MEASURE_SECONDS = 2.0  # a caught-up build asks the broker for offsets this often, not every poll
SEAL_POLICY = SealPolicy()  # the index agent's: seal after a pause, or once many rows piled up


def build_group(topics: Topics, version: str) -> str:
    """The consumer group of one index version's build."""
    return topics.group(f"{INDEX_BUILD_GROUP}{version[:16]}")


@dataclass
class BuildProgress:
    """Records of ``docs.raw`` read into the candidate, against the topic's end, with a rate and an ETA."""

    version: str
    done: int = 0
    total: int = 0
    started_at: float = field(default_factory=time.monotonic)
    done_at_start: int | None = None

    def update(self, done: int, total: int) -> None:
        if self.done_at_start is None:
            self.done_at_start, self.started_at = done, time.monotonic()
        self.done, self.total = done, max(total, done)

    @property
    def rate(self) -> float:
        """Records per second since this process started building."""
        elapsed = time.monotonic() - self.started_at
        return (self.done - (self.done_at_start or 0)) / elapsed if elapsed > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        remaining = self.total - self.done
        if remaining <= 0:
            return 0.0
        return remaining / self.rate if self.rate > 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "done": self.done,
            "total": self.total,
            "caught_up": self.done >= self.total,
            "rate_per_s": round(self.rate, 2),
            "eta_s": None if self.eta_seconds is None else round(self.eta_seconds, 1),
        }


def build_batch(
    records: Sequence[IngestRecord],
    pipeline: IngestPipeline,
    dedup: dict[str, Any],
    embedder: Embedder,
    store: VectorStore,
) -> IndexReport:
    """One batch of raw records into the candidate's store (what the live ingest -> embed -> index stages do).

    Records the ingest stage rejects are skipped here: the live pipeline dead-letters them already.
    """
    chunks = [chunk.to_avro() for result in pipeline.process_batch(records, dedup) for chunk in result.chunks]
    return apply_isolating(embed_chunks(chunks, embedder), store, embedder.version)


async def committed_progress(settings: Settings, version: str) -> tuple[int, int]:
    """(records of ``docs.raw`` the build of ``version`` has committed, records retained): from Kafka alone."""
    from streams.kafka.admin import committed_offsets, offsets

    topics = Topics(settings.namespace)
    beginnings, ends = await offsets(settings, [topics.docs_raw])
    committed = await committed_offsets(settings, build_group(topics, version))
    done = sum(max(0, committed.get(tp, beginnings[tp]) - beginnings[tp]) for tp in beginnings)
    return done, sum(ends[tp] - beginnings[tp] for tp in beginnings)


class IndexBuild:
    """The background build of one index version (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        version: str,
        spec: IndexSpec,
        embedder: Embedder,
        store: VectorStore,
        codec: AvroCodec,
    ) -> None:
        if embedder.version != spec.embedder_version:
            raise ValueError(
                f"index {version[:12]} was registered for embedder {spec.embedder_version[:12]}, but "
                f"LLMOPS_EMBED_MODEL={spec.embedder} here is {embedder.version[:12]}: install the same model files"
            )
        self.settings, self.version, self.spec = settings, version, spec
        self.embedder, self.store = embedder, store
        self.topics = Topics(settings.namespace)
        self.group = build_group(self.topics, version)
        self.pipeline = IngestPipeline(spec.ingest_config(settings), codec, default_tokenizer())
        self.dedup: dict[str, Any] = {}
        self.progress = BuildProgress(version)

    async def run(self) -> None:
        """Build, then keep following ``docs.raw``; retries after broker or store errors; stops when cancelled."""
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the build must outlive broker and store hiccups
                log.warning("index_build_error", version=self.version[:12], error=repr(error), retry_in_s=2.0)
                await asyncio.sleep(2.0)

    async def _consume(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from streams.kafka.admin import client_kwargs

        if not self.dedup:
            await self._recover_dedup()
        consumer = AIOKafkaConsumer(
            self.topics.docs_raw,
            **client_kwargs(self.settings),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=BATCH_RECORDS,
        )
        await consumer.start()
        loop = asyncio.get_running_loop()
        unsealed, last_write = 0, time.monotonic()
        measured = 0.0
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=BATCH_RECORDS)
                records = [_ingest_record(message) for messages in batch.values() for message in messages]
                if records:
                    report = await loop.run_in_executor(
                        None, build_batch, records, self.pipeline, self.dedup, self.embedder, self.store
                    )
                    await consumer.commit()  # only after the rows are in the store
                    unsealed, last_write = unsealed + report.upserted + report.deleted_chunks, time.monotonic()
                    log.debug(
                        "index_build_batch", version=self.version[:12], records=len(records), rows=report.upserted
                    )
                if records or time.monotonic() - measured >= IDLE_MEASURE_SECONDS:
                    await self._measure(consumer)
                    measured = time.monotonic()
                if SEAL_POLICY.should_seal(unsealed, time.monotonic() - last_write):
                    # Sealed segments get their index: an evaluation of the candidate searches what production would.
                    flush = getattr(self.store, "flush", None)
                    if flush is not None:
                        await loop.run_in_executor(None, flush)
                    unsealed = 0
        finally:
            await consumer.stop()

    async def _recover_dedup(self) -> None:
        """Rebuild the dedup state from what the build committed before this process started."""
        from streams.kafka.admin import committed_offsets, offsets, read_range

        committed = await committed_offsets(self.settings, self.group)
        if not committed:
            return
        beginnings, _ = await offsets(self.settings, [self.topics.docs_raw])
        records = [_ingest_record(message) async for message in read_range(self.settings, beginnings, committed)]
        loop = asyncio.get_running_loop()
        for start in range(0, len(records), 512):
            await loop.run_in_executor(None, self.pipeline.process_batch, records[start : start + 512], self.dedup)
        log.info("index_build_dedup_recovered", version=self.version[:12], records=len(records), docs=len(self.dedup))

    async def _measure(self, consumer: Any) -> None:
        partitions = consumer.assignment()
        if not partitions:
            return
        ends = await consumer.end_offsets(list(partitions))
        beginnings = await consumer.beginning_offsets(list(partitions))
        positions = {tp: await consumer.position(tp) for tp in partitions}
        done = sum(max(0, positions[tp] - beginnings[tp]) for tp in partitions)
        total = sum(ends[tp] - beginnings[tp] for tp in partitions)
        self.progress.update(done, total)


def _ingest_record(message: Any) -> IngestRecord:
    source = SourceCoordinates(message.topic, message.partition, message.offset, message.timestamp or 0)
    return IngestRecord(message.key, message.value, source)
