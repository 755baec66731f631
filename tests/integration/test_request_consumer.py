"""The infer agent's request consumer on the real broker: stopping finishes what is in flight and
commits only answered records; the next consumer of the group reads exactly the rest."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from agents.request_consumer import RequestConsumer
from streams.admin import committed_offsets, ensure_topics, producer
from streams.settings import Settings
from streams.topics import TopicSpec

from .conftest import run

RECORDS = 30


async def answer_until(settings: Settings, topic: str, group: str, enough: int, slow_from: int) -> list[int]:
    """Consume until ``enough`` records are answered, then stop while records ``>= slow_from`` are in flight."""
    started: list[int] = []
    answered: list[int] = []
    in_flight: list[int] = []  # what the consumer reports while each record is handled
    enough_answered = asyncio.Event()

    async def handle(record: Any) -> None:
        number = int(record.value)
        started.append(number)
        in_flight.append(consumer.in_flight)
        if number >= slow_from:
            await asyncio.sleep(0.3)  # still in flight when stop() is called
        answered.append(number)
        if len(answered) >= enough:
            enough_answered.set()

    consumer = RequestConsumer(settings, topic, group, handle, concurrency=4)
    running = asyncio.create_task(consumer.run())
    await asyncio.wait_for(enough_answered.wait(), 60)
    await asyncio.sleep(0.05)
    await consumer.stop()
    await running
    assert sorted(started) == sorted(answered), "every record started before stop() was answered"
    # Records fetched together count as in flight from the start: the infer agent computes on the
    # event loop only when a request is truly alone.
    assert min(in_flight) >= 1 and max(in_flight) == 4, in_flight
    return answered


def test_stop_answers_records_in_flight_commits_them_and_the_group_resumes_after_them(settings: Settings) -> None:
    topic, group = f"{settings.namespace}.requests", f"{settings.namespace}-requests"
    run(ensure_topics(settings, [TopicSpec(topic, 1, 1)]))

    async def publish() -> None:
        kafka = producer(settings)
        await kafka.start()
        try:
            for number in range(RECORDS):
                await kafka.send(topic, str(number).encode())
            await kafka.flush()
        finally:
            await kafka.stop()

    run(publish())
    first = run(answer_until(settings, topic, group, enough=10, slow_from=10))
    committed = run(committed_offsets(settings, group))[TopicPartition(topic, 0)]
    assert 10 < len(first) < RECORDS and set(first) == set(range(len(first))) and committed == len(first)

    rest = run(answer_until(settings, topic, group, enough=RECORDS - committed, slow_from=RECORDS))
    assert sorted(rest) == list(range(committed, RECORDS)), "nothing skipped, nothing answered twice"
