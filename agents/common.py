"""Wiring shared by the agents: byte topics, the codec, dead letters, tracing deliveries."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, NoReturn

import faust

from streams.kafka.avro import AvroCodec
from streams.kafka.topics import Topics
from streams.logs import get_logger
from streams.records import DeadLetter, SourceCoordinates, now_ms
from streams.settings import Settings
from streams.telemetry.metrics import count_dead_letter
from streams.telemetry.tracing import Delivery

log = get_logger(__name__)
# Exit codes of a worker that stopped without acknowledging a batch (see stop_without_acking).
EXIT_BATCH_FAILED = 70  # EX_SOFTWARE: a batch raised; restart the worker to read it again
EXIT_HANDED_BACK = 0  # asked to stop while a batch could not finish; it is read again on restart


def raw_topic(app: faust.App, name: str, settings: Settings) -> Any:
    """A topic read as bytes: our codec decodes, so that a bad record becomes a dead letter."""
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )


def source_of(event: Any) -> SourceCoordinates:
    """Where a Faust event was read: topic, partition, offset, Kafka timestamp (ms)."""
    message = event.message
    return SourceCoordinates(message.topic, message.partition, message.offset, int((message.timestamp or 0) * 1000))


def delivery_of(event: Any) -> Delivery:
    """A Faust event as tracing sees it: coordinates, key and headers."""
    message = event.message
    return Delivery(message.topic, message.partition, message.offset, message.headers, message.key)


def dead_letter_for(event: Any, stage: str, reason: str, detail: str) -> DeadLetter:
    """A dead letter for a Faust event, with its original bytes and coordinates."""
    return _dead_letter(source_of(event), event.message, stage, reason, detail)


def record_source(record: Any) -> SourceCoordinates:
    """Where an aiokafka ``ConsumerRecord`` was read (its timestamp is already in ms)."""
    return SourceCoordinates(record.topic, record.partition, record.offset, record.timestamp or 0)


def record_delivery(record: Any) -> Delivery:
    """An aiokafka ``ConsumerRecord`` as tracing sees it."""
    return Delivery(record.topic, record.partition, record.offset, record.headers, record.key)


def record_dead_letter(record: Any, stage: str, reason: str, detail: str) -> DeadLetter:
    """A dead letter for an aiokafka ``ConsumerRecord``, with its original bytes and coordinates."""
    return _dead_letter(record_source(record), record, stage, reason, detail)


def _dead_letter(source: SourceCoordinates, message: Any, stage: str, reason: str, detail: str) -> DeadLetter:
    return DeadLetter.of(source, message.key, message.value, stage=stage, reason=reason, detail=detail, now_ms=now_ms())


def log_dead_letter(letter: DeadLetter) -> None:
    """One warning line per rejected record, with where to find it (and one more on the stage's counter)."""
    count_dead_letter(letter.stage, letter.reason)
    log.warning(
        "dead_letter",
        stage=letter.stage,
        reason=letter.reason,
        detail=letter.detail,
        topic=letter.source_topic,
        partition=letter.source_partition,
        offset=letter.source_offset,
    )


async def send_dead_letter(
    app: faust.App, codec: AvroCodec, topics: Topics, letter: DeadLetter, trace_headers: list[tuple[str, bytes]]
) -> Any:
    """Log and produce a dead letter (with the trace context of its record); returns the send future."""
    log_dead_letter(letter)
    value = codec.encode("DeadLetter", letter.to_avro(), topics.deadletter)
    headers = [letter.source.header, *trace_headers]
    return await app.producer.send(topics.deadletter, letter.key, value, None, None, headers)


async def stop_without_acking(
    app: faust.App, stage: str, events: Sequence[Any], error: BaseException, *, requested: bool = False
) -> NoReturn:
    """End this worker now, committing what earlier batches finished but not ``events``.

    Faust acknowledges every event of a ``take_events`` batch when the batch's generator closes,
    also when the agent failed in the middle of it, and its next commit (a supervisor restart of
    the agent, or the graceful stop) then moves the offsets past records that produced nothing.
    This is called from inside the failed batch, before that can happen: it commits what is
    acknowledged so far (earlier batches, whose outputs are acked by the broker) and exits the
    process, so a restarted worker reads the batch again (at least once; downstream writes are
    idempotent). ``requested``: the worker is stopping (exit 0); otherwise the batch failed and the
    exit code is ``EXIT_BATCH_FAILED`` for the process supervisor to restart it.
    """
    first = events[0].message if events else None
    log.error(
        "batch_handed_back" if requested else "batch_failed",
        stage=stage,
        records=len(events),
        topic=first.topic if first else None,
        partition=first.partition if first else None,
        offset=first.offset if first else None,
        error=repr(error),
    )
    try:
        await app.consumer.commit()
    except Exception as commit_error:  # noqa: BLE001 - exiting anyway; uncommitted work is redelivered
        log.warning("commit_before_exit_failed", error=repr(commit_error))
    exit_process(EXIT_HANDED_BACK if requested else EXIT_BATCH_FAILED)


def exit_process(code: int) -> NoReturn:
    """Flush the logs and end the process now: a graceful stop would acknowledge the batch."""
    logging.shutdown()
    os._exit(code)
