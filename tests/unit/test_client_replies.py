"""How InferenceClient routes replies: partial replies reach only a streaming caller; ask() gets the final one."""

from __future__ import annotations

import asyncio
from typing import Any

from streams.inference.client import InferenceClient
from streams.settings import Settings


def reply(request_id: str, sequence: int, final: bool) -> dict[str, Any]:
    return {"request_id": request_id, "sequence": sequence, "final": final, "delta": None if final else "x"}


async def test_a_future_waits_past_partial_replies_for_the_final_one() -> None:
    client = InferenceClient(Settings(), client_id="c1")
    future = client.expect("r1")
    client._deliver([reply("r1", 0, False), reply("r1", 1, False)])
    assert not future.done(), "a partial reply is not the answer ask() waits for"
    client._deliver([reply("r1", 2, True)])
    assert (await future)["sequence"] == 2


async def test_a_streamed_request_gets_every_reply_in_order_and_is_forgotten_after_the_final_one() -> None:
    client = InferenceClient(Settings(), client_id="c1")
    queue: asyncio.Queue[Any] = asyncio.Queue()
    client._streams["r1"] = queue
    client._deliver([reply("r1", 0, False), reply("other", 0, True), reply("r1", 1, True)])
    got = [queue.get_nowait() for _ in range(queue.qsize())]
    assert [(r["sequence"], r["final"]) for r in got] == [(0, False), (1, True)]
    assert all("received_at_ms" in r for r in got)
    assert "r1" not in client._streams, "nothing is kept for a request once its final reply arrived"
