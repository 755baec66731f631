"""librdkafka settings for the request/reply path, how deliveries settle their futures, and how
fetched messages become records (error events apart, each error code logged once)."""

import asyncio
from pathlib import Path

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE, KafkaError, Message
from pydantic import SecretStr
from structlog.testing import capture_logs

from streams.kafka.client_security import aiokafka_security
from streams.kafka.rdkafka import DeliveryFailed, FetchedRecord, FetchErrors, _settle, fetch, rdkafka_config
from streams.settings import Settings


def test_plaintext_by_default_with_nagle_off() -> None:
    config = rdkafka_config(Settings(bootstrap_servers="127.0.0.1:9092"))
    assert config == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
        "socket.nagle.disable": True,
    }


def test_the_same_security_settings_as_the_aiokafka_clients() -> None:
    settings = Settings(
        bootstrap_servers="b1:9093,b2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="llmops-inference-client",
        sasl_password=SecretStr("s3cret"),
        ssl_cafile=Path("/etc/kafka/ca.pem"),
    )
    config = rdkafka_config(settings, **{"linger.ms": 0})
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl.username"], config["sasl.password"]) == ("llmops-inference-client", "s3cret")
    assert config["ssl.ca.location"] == "/etc/kafka/ca.pem"
    assert config["linger.ms"] == 0
    plaintext = settings.model_copy(update={"security_protocol": "SASL_PLAINTEXT"})
    aiokafka = aiokafka_security(plaintext)  # (SSL would load the CA file)
    assert aiokafka["sasl_mechanism"] == rdkafka_config(plaintext)["sasl.mechanism"]
    assert aiokafka["sasl_plain_password"] == rdkafka_config(plaintext)["sasl.password"]


def test_no_ca_file_means_the_system_trust_store() -> None:
    config = rdkafka_config(Settings(security_protocol="SSL"))
    assert config["security.protocol"] == "SSL" and "ssl.ca.location" not in config


def test_a_delivery_settles_its_future_once_and_names_the_topic_when_it_fails() -> None:
    async def settle() -> tuple[asyncio.Future[None], asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        delivered, refused = loop.create_future(), loop.create_future()
        _settle(delivered, "ns.inference.requests", None)
        _settle(delivered, "ns.inference.requests", KafkaError(KafkaError._MSG_TIMED_OUT))  # already settled
        _settle(refused, "ns.inference.responses", KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
        return delivered, refused

    delivered, refused = asyncio.run(settle())
    assert delivered.result() is None
    with pytest.raises(DeliveryFailed, match=r"ns\.inference\.responses"):
        refused.result()


def test_a_fetched_message_becomes_a_record_with_the_attributes_agents_read() -> None:
    message = Message(
        topic="ns.inference.requests",
        partition=2,
        offset=41,
        key=b"client-1",
        value=b"{}",
        headers=[("traceparent", b"00-abc-def-01"), ("text", "a str value")],
        timestamp=(TIMESTAMP_CREATE_TIME, 1_796_000_000_000),
    )
    record = FetchedRecord.of(message)
    assert (record.topic, record.partition, record.offset) == ("ns.inference.requests", 2, 41)
    assert (record.key, record.value, record.timestamp) == (b"client-1", b"{}", 1_796_000_000_000)
    assert record.headers == (("traceparent", b"00-abc-def-01"), ("text", b"a str value"))
    bare = FetchedRecord.of(Message(topic="t", partition=0, offset=0, timestamp=(TIMESTAMP_NOT_AVAILABLE, -1)))
    assert (bare.key, bare.value, bare.timestamp, bare.headers) == (None, None, None, ())


def test_error_events_are_told_from_records_and_each_code_is_logged_once() -> None:
    errors = FetchErrors("request_fetch_error")
    denied = Message(topic="ns.inference.requests", error=KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    down = Message(topic="ns.inference.requests", error=KafkaError(KafkaError._TRANSPORT))
    with capture_logs() as logs:
        assert errors.reported(denied) and errors.reported(denied) and errors.reported(down)
        assert not errors.reported(Message(topic="ns.inference.requests", partition=0, offset=3, value=b"x"))
    assert [entry["event"] for entry in logs] == ["request_fetch_error", "request_fetch_error"]
    assert "authorization" in logs[0]["error"].lower()


class ScriptedConsumer:
    """A stand-in with librdkafka's poll/consume semantics, for the pure fetch logic."""

    def __init__(self, queued: list[Message]) -> None:
        self.queued = queued
        self.calls: list[tuple[str, float, int]] = []

    def poll(self, timeout: float) -> Message | None:
        self.calls.append(("poll", timeout, 1))
        return self.queued.pop(0) if self.queued else None

    def consume(self, count: int, timeout: float) -> list[Message]:
        self.calls.append(("consume", timeout, count))
        taken, self.queued = self.queued[:count], self.queued[count:]
        return taken


def test_fetch_waits_only_for_the_first_message_and_takes_no_more_than_asked() -> None:
    queued = [Message(topic="t", partition=0, offset=n) for n in range(5)]
    consumer = ScriptedConsumer(list(queued))
    assert [m.offset() for m in fetch(consumer, 3, 0.2)] == [0, 1, 2]
    assert consumer.calls == [("poll", 0.2, 1), ("consume", 0, 2)]  # never waits for a full batch
    assert [m.offset() for m in fetch(consumer, 1, 0.2)] == [3]
    consumer.queued.clear()
    assert fetch(consumer, 4, 0.2) == []
