"""Waiting for an unreachable broker at start: backoff, log lines, giving up, and what is never retried."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from structlog.testing import capture_logs

from streams.kafka.broker_wait import Backoff, BrokerUnreachable, when_reachable
from streams.settings import Settings

SETTINGS = Settings(bootstrap_servers="10.0.0.7:9092,10.0.0.8:9092")


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def failing(times: int) -> Any:
    calls = {"n": 0}

    async def step() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise KafkaConnectionError("Unable to bootstrap from [('10.0.0.7', 9092)]")
        return "topics ensured"

    return step


async def down(_: Settings) -> tuple[bool, str]:
    return True, "cannot connect to Kafka at 10.0.0.7:9092: ConnectionRefusedError(111)"


async def refused_login(_: Settings) -> tuple[bool, str]:
    return False, "Kafka at 10.0.0.7:9092 refused the credentials of user 'x'"


def test_backoff_doubles_up_to_its_cap() -> None:
    delays = Backoff(first=0.5, factor=2.0, cap=10.0).delays()
    assert [next(delays) for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]


def test_a_broker_that_comes_up_is_waited_for_with_backoff_and_logged() -> None:
    fake = FakeTime()
    with capture_logs() as logs:
        result = asyncio.run(
            when_reachable(SETTINGS, failing(5), 300.0, probe=down, sleep=fake.sleep, clock=fake.clock)
        )
    assert result == "topics ensured"
    assert fake.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]
    retries = [line for line in logs if line["event"] == "broker_unreachable"]
    assert [line["attempt"] for line in retries] == [1, 2, 3, 4, 5]
    assert all(line["bootstrap_servers"] == "10.0.0.7:9092,10.0.0.8:9092" for line in retries)
    assert "ConnectionRefusedError" in retries[0]["error"] and "LLMOPS_BOOTSTRAP_SERVERS" in retries[0]["hint"]
    (reachable,) = [line for line in logs if line["event"] == "broker_reachable"]
    assert reachable["attempts"] == 6 and reachable["waited_s"] == 15.5


def test_it_gives_up_after_the_configured_time_with_what_to_do() -> None:
    fake = FakeTime()
    with pytest.raises(BrokerUnreachable) as raised:
        asyncio.run(when_reachable(SETTINGS, failing(1000), 30.0, probe=down, sleep=fake.sleep, clock=fake.clock))
    assert sum(fake.sleeps) <= 30.0 and fake.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    message = str(raised.value)
    assert "10.0.0.7:9092,10.0.0.8:9092" in message and "7 attempts" in message
    assert "llmops kafka status" in message and "LLMOPS_BROKER_WAIT_SECONDS (30)" in message


def test_no_wait_fails_at_the_first_attempt() -> None:
    fake = FakeTime()
    with pytest.raises(BrokerUnreachable, match="1 attempts"):
        asyncio.run(when_reachable(SETTINGS, failing(1), 0.0, probe=down, sleep=fake.sleep, clock=fake.clock))
    assert fake.sleeps == []


def test_refused_credentials_are_raised_at_once_not_retried() -> None:
    fake = FakeTime()
    with pytest.raises(KafkaConnectionError):
        asyncio.run(
            when_reachable(SETTINGS, failing(1000), 300.0, probe=refused_login, sleep=fake.sleep, clock=fake.clock)
        )
    assert fake.sleeps == []
