"""librdkafka settings for the request/reply path, and how deliveries settle their futures."""

import asyncio
from pathlib import Path

import pytest
from confluent_kafka import KafkaError
from pydantic import SecretStr

from streams.rdkafka import DeliveryFailed, _settle, rdkafka_config
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
    aiokafka = plaintext.kafka_client_config()  # (SSL would load the CA file)
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
