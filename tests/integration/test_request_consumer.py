"""The infer agent's request consumer on the real broker: stopping finishes what is in flight and
commits only answered records; the next consumer of the group reads exactly the rest; a second
member joining takes over partitions without a record answered twice or skipped; a new group
starts at the offsets it is given, and a group with commits ignores them."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from agents.request_consumer import RequestConsumer
from streams.kafka.admin import committed_offsets, ensure_topics, producer
from streams.kafka.topics import TopicSpec
from streams.settings import Settings

from .conftest import run

RECORDS = 30


async def publish(settings: Settings, topic: str, numbers: range, partitions: int = 1) -> None:
    """Records whose values are ``numbers``; number n goes to partition n % ``partitions``."""
    kafka = producer(settings)
    await kafka.start()
    try:
        for number in numbers:
            await kafka.send(topic, str(number).encode(), partition=number % partitions)
        await kafka.flush()
    finally:
        await kafka.stop()


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

    run(publish(settings, topic, range(RECORDS)))
    first = run(answer_until(settings, topic, group, enough=10, slow_from=10))
    committed = run(committed_offsets(settings, group))[TopicPartition(topic, 0)]
    assert 10 < len(first) < RECORDS and set(first) == set(range(len(first))) and committed == len(first)

    rest = run(answer_until(settings, topic, group, enough=RECORDS - committed, slow_from=RECORDS))
    assert sorted(rest) == list(range(committed, RECORDS)), "nothing skipped, nothing answered twice"


def test_a_member_joining_takes_over_partitions_with_nothing_answered_twice_or_skipped(settings: Settings) -> None:
    topic, group, records = f"{settings.namespace}.requests", f"{settings.namespace}-requests", 120
    run(ensure_topics(settings, [TopicSpec(topic, 2, 1)]))
    run(publish(settings, topic, range(records), partitions=2))

    async def two_members() -> tuple[list[int], list[int]]:
        answered: dict[str, list[int]] = {"first": [], "second": []}
        everything = asyncio.Event()

        def handler(member: str) -> Any:
            async def handle(record: Any) -> None:
                number = int(record.value)
                # Four at a time, ending at different moments: whenever the group rebalances, some
                # are in flight. The first member alone would need 7.5 s.
                await asyncio.sleep(0.1 * (1 + number % 4))
                answered[member].append(number)
                if len(answered["first"]) + len(answered["second"]) >= records:
                    everything.set()

            return handle

        first = RequestConsumer(settings, topic, group, handler("first"), concurrency=4)
        second = RequestConsumer(settings, topic, group, handler("second"), concurrency=4)
        running = [asyncio.create_task(first.run())]
        await asyncio.sleep(1.0)  # the first member is busy with four records at any moment
        running.append(asyncio.create_task(second.run()))  # the group rebalances with records in flight
        await asyncio.wait_for(everything.wait(), 60)
        await asyncio.sleep(1.0)  # anything answered twice would show up now
        await asyncio.gather(first.stop(), second.stop())
        await asyncio.gather(*running)
        return answered["first"], answered["second"]

    first, second = run(two_members())
    assert second, "the second member got a partition"
    assert sorted(first + second) == list(range(records)), "every record answered exactly once"
    committed = run(committed_offsets(settings, group))
    assert committed == {TopicPartition(topic, 0): records // 2, TopicPartition(topic, 1): records // 2}


def test_a_new_group_starts_at_the_given_offsets_and_a_group_with_commits_ignores_them(settings: Settings) -> None:
    topic, group = f"{settings.namespace}.requests", f"{settings.namespace}-requests"
    run(ensure_topics(settings, [TopicSpec(topic, 1, 1)]))
    run(publish(settings, topic, range(10)))

    async def start_offsets() -> dict[TopicPartition, int]:
        return {TopicPartition(topic, 0): 6}  # where an earlier consumer of these requests stopped

    async def answer(expected: int) -> list[int]:
        answered: list[int] = []
        enough = asyncio.Event()

        async def handle(record: Any) -> None:
            answered.append(int(record.value))
            if len(answered) >= expected:
                enough.set()

        consumer = RequestConsumer(settings, topic, group, handle, concurrency=4, start_offsets=start_offsets)
        running = asyncio.create_task(consumer.run())
        await asyncio.wait_for(enough.wait(), 60)
        await asyncio.sleep(0.5)  # nothing more arrives
        await consumer.stop()
        await running
        return sorted(answered)

    assert run(answer(4)) == [6, 7, 8, 9]
    run(publish(settings, topic, range(10, 12)))
    assert run(answer(2)) == [10, 11], "the group's own commit wins over the start offsets"
