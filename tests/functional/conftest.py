"""Faust test contexts for the agents: the producer's ``send`` is recorded (the one stand-in here)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agents.app import create_app
from streams.settings import Settings
from streams.telemetry.tracing import Telemetry


class _MetadataReady:
    """What the agent asks of the (unstarted) aiokafka producer: the changelog's partitions."""

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}


class _FakeFuture:
    class message:
        partition = 0


@contextlib.asynccontextmanager
async def ingest_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, telemetry: Telemetry | None = None
) -> AsyncIterator[tuple[Any, list]]:
    """The ingest agent's test context and the list of (topic, key, value, headers) it sent."""
    app = create_app(
        Settings(namespace="functional", data_dir=tmp_path, ingest_batch_seconds=0.01), ("ingest",), telemetry
    )
    app.finalize()
    app.conf.store = "memory://"
    app.flow_control.resume()
    sent: list[tuple[str, bytes, bytes, list]] = []

    async def record_send(topic: str, key: Any, value: Any, partition: Any, timestamp: Any, headers: Any) -> Any:
        sent.append((topic, key, value, list(headers or [])))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    monkeypatch.setattr(app.producer, "send", record_send)
    monkeypatch.setattr(app.producer, "_ensure_producer", lambda: _MetadataReady())
    table = app.tables["ingest-dedup"]
    monkeypatch.setattr(type(table), "send_changelog", lambda *a, **k: _FakeFuture())
    agent = app.agents["ingest"]
    async with agent.test_context() as context:
        yield context, sent


async def wait_for_outputs(sent: list, count: int) -> None:
    """The agent takes events in batches, so outputs follow shortly after put()."""
    for _ in range(500):
        if len(sent) >= count:
            return
        await asyncio.sleep(0.01)
