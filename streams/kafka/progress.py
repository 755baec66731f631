"""Waiting until consumer groups have committed their input: how a run knows a stage is done.

Why this exists:
    The demo, replay, the integration tests and the benches all start workers, publish, and then
    need to know when every stage has consumed what was published. A consumer group's committed
    offsets say exactly that, with no heuristics on output counts.

Usage:
    >>> ok, seconds = wait_for_stages(settings, [("ingest", "embed", "index")], raw_end, timeout=300)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from aiokafka import TopicPartition

from streams.kafka.admin import committed_offsets, offsets
from streams.kafka.topics import Topics
from streams.settings import Settings


async def end_offsets(settings: Settings, topics: list[str]) -> dict[TopicPartition, int]:
    """The end offset of every partition of ``topics``."""
    return (await offsets(settings, topics))[1]


async def wait_until_consumed(
    settings: Settings,
    group: str,
    targets: dict[TopicPartition, int],
    timeout: float,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    alive: Callable[[], bool] = lambda: True,
) -> bool:
    """Wait until ``group`` has committed every target offset; False on timeout or if not ``alive``."""
    total = sum(targets.values())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        committed = await committed_offsets(settings, group)
        done = sum(min(committed.get(tp, 0), end) for tp, end in targets.items())
        on_progress(done, total)
        if done >= total:
            return True
        await asyncio.sleep(1.0)
    return False


def wait_for_stages(
    settings: Settings,
    workers: Sequence[Sequence[str]],
    raw_end: dict[TopicPartition, int],
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[bool, dict[str, float]]:
    """Wait stage by stage until the workers (each a set of agents) have committed their inputs.

    Once a stage's input is committed, all its outputs are on the next stage's topic (Faust
    flushes the producer before it commits), so the next stage's target is known then.
    """
    topics = Topics(settings.namespace)
    group_of = {agent: topics.app_id(*agents) for agents in workers for agent in agents}
    started = time.monotonic()
    stages = [("ingest", topics.docs_raw), ("embed", topics.docs_clean), ("index", topics.docs_embeddings)]
    done_after: dict[str, float] = {}
    for stage, topic in stages:
        if stage not in group_of:
            continue
        group = group_of[stage]
        end = raw_end if topic == topics.docs_raw else asyncio.run(end_offsets(settings, [topic]))
        last = [-1.0]

        def progress(done: int, total: int, stage: str = stage, topic: str = topic, last: list[float] = last) -> None:
            if time.monotonic() - last[0] > 5 or done >= total:
                last[0] = time.monotonic()
                log(f"  {stage}: committed {done}/{total} offsets on {topic}")

        if not asyncio.run(wait_until_consumed(settings, group, end, timeout, progress, alive)):
            return False, done_after
        done_after[stage] = round(time.monotonic() - started, 2)
    return True, done_after
