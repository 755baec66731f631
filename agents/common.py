"""Wiring shared by the agents: byte topics, the codec, dead letters, tracing deliveries."""

from __future__ import annotations

import time
from typing import Any

import faust

from streams.avro import AvroCodec
from streams.logs import get_logger
from streams.records import DeadLetter, SourceCoordinates
from streams.settings import Settings
from streams.topics import Topics
from streams.tracing import Delivery

log = get_logger(__name__)


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
    return DeadLetter.of(
        source_of(event),
        event.message.key,
        event.message.value,
        stage=stage,
        reason=reason,
        detail=detail,
        now_ms=time.time_ns() // 1_000_000,
    )


def log_dead_letter(letter: DeadLetter) -> None:
    """One warning line per rejected record, with where to find it."""
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
