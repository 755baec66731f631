"""The ingest agent through Faust's test context: wiring of topics, table and outputs.

Faust's ``agent.test_context()`` feeds events to the agent without a broker. The
producer's ``send`` is recorded here (the one stand-in in this tier); the dedup GlobalTable
is the real Faust table with its in-memory store.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from streams.kafka.avro import AvroCodec, EmbeddedRegistry
from streams.records import SOURCE_HEADER
from tests.functional.conftest import ingest_context, wait_for_outputs

CODEC = AvroCodec(EmbeddedRegistry.from_directory())


@pytest.fixture
async def harness(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, list]]:
    async with ingest_context(tmp_path, monkeypatch) as context_and_sent:
        yield context_and_sent


async def test_good_bad_and_duplicate_records_reach_their_topics(harness: tuple[Any, list]) -> None:
    context, sent = harness
    await context.put(b'{"id": "d1", "text": "<p>Hello world, mail me at a@b.io</p>"}', key=b"d1")
    await context.put(b'{"id": "d2", "text": "Hello world, mail me at a@b.io"}', key=b"d2")
    await context.put(b"not json", key=b"d3")
    await context.put(None, key=b"d1")
    await wait_for_outputs(sent, 4)
    topics = [s[0] for s in sent]
    assert topics == [
        "functional.docs.clean",
        "functional.docs.duplicates",
        "functional.deadletter",
        "functional.docs.clean",
    ]
    chunk = CODEC.decode(sent[0][2], "CleanChunk")
    assert (chunk["chunk_id"], chunk["text"], chunk["op"]) == ("d1#0", "Hello world, mail me at [EMAIL]", "UPSERT")
    assert CODEC.decode(sent[1][2], "DuplicateNotice")["duplicate_of"] == "d1"
    letter = CODEC.decode(sent[2][2], "DeadLetter")
    assert (letter["reason"], letter["value"], letter["key"]) == ("BAD_JSON", b"not json", b"d3")
    assert CODEC.decode(sent[3][2], "CleanChunk")["op"] == "DELETE"
    assert all(any(h[0] == SOURCE_HEADER for h in s[3]) for s in sent)


async def test_a_batch_that_fails_ends_the_worker_without_acknowledging_it(
    harness: tuple[Any, list], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An output that cannot be sent: no ack for the batch (so no commit), exit code 70 for the supervisor."""
    context, _ = harness
    put: list[Any] = []
    exits: list[tuple[int, list[bool]]] = []

    def record_exit(code: int) -> None:
        exits.append((code, [event.message.acked for event in put]))
        raise asyncio.CancelledError  # ends the agent here; the real exit ends the process

    async def failing_send(*args: Any) -> Any:
        for _ in range(200):  # until the test holds the event, to look at it when the agent exits
            if put:
                break
            await asyncio.sleep(0.01)
        raise RuntimeError("MessageSizeTooLargeError, say")

    monkeypatch.setattr("agents.common.exit_process", record_exit)
    monkeypatch.setattr(context.app.producer, "send", failing_send)
    put.append(await context.put(b'{"id": "d1", "text": "some words"}', key=b"d1"))
    for _ in range(300):
        if exits:
            break
        await asyncio.sleep(0.01)
    assert exits == [(70, [False])], "exit code 70, and the batch not acknowledged when the worker exits"
