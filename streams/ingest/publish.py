"""Publish documents to ``docs.raw``: a JSONL file as-is, or the stdlib corpus.

Why this exists:
    ``llmops publish`` is how people feed the pipeline by hand and how the demo, tests and
    benchmarks load real text. Lines of a JSONL file are sent byte for byte (the ingest agent
    validates them, so bad lines become dead letters, as with any upstream), keyed by their id.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from streams.kafka.admin import ensure_topics, producer
from streams.kafka.topics import Topics
from streams.settings import Settings

IN_FLIGHT = 2000


@dataclass(frozen=True)
class PublishReport:
    """What a publish sent."""

    topic: str
    records: int
    bytes: int
    seconds: float


def encode_document(document: dict[str, Any]) -> tuple[bytes, bytes]:
    """(key, value) of a document dict: key = id, value = compact JSON."""
    return str(document["id"]).encode(), json.dumps(document, ensure_ascii=False).encode()


async def publish_records(
    settings: Settings,
    records: Iterable[tuple[bytes | None, bytes | None]],
    *,
    topic: str | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    on_sent: Callable[[int], None] = lambda _: None,
) -> PublishReport:
    """Send (key, value) pairs to ``topic`` (default: this namespace's docs.raw) and wait for acks."""
    topic = topic or Topics(settings.namespace).docs_raw
    await ensure_topics(settings)
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = size = 0
    client = producer(settings)
    try:
        await client.start()  # inside: a producer refused at start (ACLs) is closed too
        pending: list[asyncio.Future[Any]] = []
        for key, value in records:
            pending.append(await client.send(topic, value=value, key=key, headers=headers))
            sent += 1
            size += len(value or b"")
            if len(pending) >= IN_FLIGHT:
                await asyncio.gather(*pending)
                on_sent(len(pending))
                pending.clear()
        if pending:
            await asyncio.gather(*pending)
            on_sent(len(pending))
    finally:
        await client.stop()
    return PublishReport(topic, sent, size, loop.time() - started)
