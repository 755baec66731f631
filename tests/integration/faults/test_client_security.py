"""Kafka client conventions against real secured brokers of the test's own (port ``fault_port(14)``):
mutual TLS (a CA and certificates made here with ``cryptography``), SASL/OAUTHBEARER with Kafka's
unsecured JWT validator, and SCRAM, each reached from a ``--command-config`` client.properties as
Kafka's tools take it, by the aiokafka clients (the CLI) and by librdkafka (the request/reply path).
A client without what the broker asks for is refused with exit code 4 and a line naming what to
change, never a secret."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from pydantic import SecretStr

from streams.kafka.admin import offsets
from streams.kafka.broker import EmbeddedKafka
from streams.kafka.client_properties import settings_from_properties
from streams.kafka.client_security import unsecured_jwt
from streams.kafka.progress import wait_until_consumed
from streams.kafka.rdkafka import AsyncProducer, rdkafka_config
from streams.kafka.security import BrokerSecurity
from streams.kafka.topics import Topics
from streams.settings import Settings
from tests.tls_files import TestCA

from ..conftest import ROOT, WorkerProcess, run
from .helpers import fault_port, fresh, report

PORT = fault_port(14)
BOOTSTRAP = f"127.0.0.1:{PORT}"
DOCS = "".join(f'{{"id": "doc-{i}", "text": "document number {i}"}}\n' for i in range(3))


@pytest.fixture
def base(tmp_path: Path) -> Settings:
    """Plain settings of a fresh namespace; every secured client gets its security from a file."""
    return Settings(
        bootstrap_servers="127.0.0.1:1", namespace="t" + uuid.uuid4().hex[:12], data_dir=tmp_path, partitions=2
    )


@contextlib.contextmanager
def secured_broker(security: BrokerSecurity) -> Iterator[EmbeddedKafka]:
    broker = EmbeddedKafka(ROOT / ".llmops" / "kafka", port=PORT, heap="256m", security=security)
    shutil.rmtree(broker.home / f"tls-{PORT}", ignore_errors=True)
    with fresh(broker) as running:
        yield running


def llmops(base: Settings, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """`llmops ARGS` whose environment holds plain PLAINTEXT settings: the flags must win."""
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **base.to_env(), "LLMOPS_LOG_FORMAT": "json", **env},
        cwd=ROOT,
        timeout=180,
        check=False,
    )


def properties(folder: Path, name: str, lines: dict[str, str | Path]) -> Path:
    path = folder / f"{name}.properties"
    path.write_text("".join(f"{key}={value}\n" for key, value in lines.items()))
    return path


def topics_and_publish(base: Settings, config: Path) -> dict[str, object]:
    """`kafka topics` and `publish -` through ``--command-config``: both must succeed."""
    created = llmops(base, "kafka", "topics", "-b", BOOTSTRAP, "--command-config", str(config), "--json")
    assert created.returncode == 0, created.stderr[-2000:]
    published = llmops(base, "publish", "-", "-b", BOOTSTRAP, "--command-config", str(config), "--json", stdin=DOCS)
    assert published.returncode == 0, published.stderr[-2000:]
    return {"topics_created": len(json.loads(created.stdout)["created"]), **json.loads(published.stdout)}


def rdkafka_round_trip(settings: Settings, topic: str) -> list[bytes]:
    """Send three records with librdkafka's producer and read the topic back with its consumer."""

    async def send() -> None:
        producer = AsyncProducer(settings)
        await producer.start([topic])
        for i in range(3):
            await producer.send(topic, f"rdkafka-{i}".encode(), key=b"k")
        await producer.stop()

    run(send())
    consumer = Consumer(
        rdkafka_config(settings, **{"group.id": f"t-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False})
    )
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        values: list[bytes] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(v.startswith(b"rdkafka-2") for v in values):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                values.append(message.value() or b"")
    finally:
        consumer.close()
    return values


def faust_worker_consumes(settings: Settings) -> int:
    """An ingest worker (Faust, aiokafka) with ``settings`` consumes all of docs.raw and exits 0: how many records."""
    topics = Topics(settings.namespace)
    worker = WorkerProcess(settings, agents="ingest").start()
    try:
        _, end = run(offsets(settings, [topics.docs_raw]))
        consumed = run(wait_until_consumed(settings, topics.app_id("ingest"), end, 180.0, alive=worker.alive))
        assert consumed, worker.log_tail()
    finally:
        code = worker.stop()
    assert code == 0, worker.log_tail()
    return sum(end.values())


def file_settings(base: Settings, config: Path) -> Settings:
    overrides, _ = settings_from_properties(config, base.data_dir / "client-config")
    return Settings(**{**base.model_dump(exclude_none=True), **overrides, "bootstrap_servers": BOOTSTRAP})


def test_mutual_tls(base: Settings, tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    key_password = secrets.token_urlsafe(12)
    client = ca.issue("llmops-client", key_password=key_password.encode())
    broker_ca = tmp_path / "broker" / "ca.pem"  # the broker's own certificate, written when it starts
    security = BrokerSecurity("SSL", ca_file=broker_ca, client_ca_file=ca.pem)
    with secured_broker(security):
        kcat_style = properties(
            tmp_path,
            "kcat",
            {
                "security.protocol": "SSL",
                "ssl.ca.location": broker_ca,
                "ssl.certificate.location": client.cert,
                "ssl.key.location": client.key,
                "ssl.key.password": key_password,
            },
        )
        cli = topics_and_publish(base, kcat_style)
        assert cli["records"] == 3 and cli["topics_created"] > 0

        bundle = tmp_path / "keystore.pem"  # Java's PEM key store: the key and its chain in one file
        plain_key = ca.issue("llmops-java-client")
        bundle.write_text(plain_key.key.read_text() + plain_key.cert.read_text())
        java_style = properties(
            tmp_path,
            "java",
            {
                "security.protocol": "SSL",
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": broker_ca,
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": bundle,
            },
        )
        again = llmops(base, "kafka", "topics", "-b", BOOTSTRAP, "--command-config", str(java_style), "--json")
        assert again.returncode == 0 and json.loads(again.stdout)["created"] == [], again.stderr[-2000:]

        topic = Topics(base.namespace).docs_raw
        values = rdkafka_round_trip(file_settings(base, kcat_style), topic)
        assert [v for v in values if v.startswith(b"rdkafka-")] == [b"rdkafka-0", b"rdkafka-1", b"rdkafka-2"]
        consumed = faust_worker_consumes(file_settings(base, kcat_style))

        no_certificate = properties(tmp_path, "nocert", {"security.protocol": "SSL", "ssl.ca.location": broker_ca})
        refused = llmops(base, "kafka", "topics", "-b", BOOTSTRAP, "--command-config", str(no_certificate))
        assert refused.returncode == 4, (refused.returncode, refused.stderr[-2000:])
        assert "LLMOPS_SSL_CERTFILE" in refused.stderr
        assert key_password not in refused.stdout + refused.stderr + str(cli)
        report(
            "mTLS client certificates",
            cli_topics_created=cli["topics_created"],
            cli_published=cli["records"],
            rdkafka_round_trip=len(values),
            faust_worker_consumed=consumed,
            without_certificate_exit=refused.returncode,
        )


def test_oauthbearer_with_unsecured_jwts(base: Settings, tmp_path: Path) -> None:
    security = BrokerSecurity("SASL_PLAINTEXT", "OAUTHBEARER", username="admin")
    with secured_broker(security):
        java_style = properties(
            tmp_path,
            "java",
            {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "OAUTHBEARER",
                "sasl.jaas.config": "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
                'unsecuredLoginStringClaim_sub="alice";',
            },
        )
        cli = topics_and_publish(base, java_style)
        assert cli["records"] == 3

        kcat_style = properties(
            tmp_path,
            "kcat",
            {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanisms": "OAUTHBEARER",
                "enable.sasl.oauthbearer.unsecure.jwt": "true",
                "sasl.oauthbearer.config": "principal=bob",
            },
        )
        topic = Topics(base.namespace).docs_raw
        values = rdkafka_round_trip(file_settings(base, kcat_style), topic)
        assert [v for v in values if v.startswith(b"rdkafka-")] == [b"rdkafka-0", b"rdkafka-1", b"rdkafka-2"]

        # A token file (what an identity provider's agent keeps fresh), for both libraries.
        token_file = tmp_path / "token"
        token_file.write_text(unsecured_jwt("carol", time.time()))
        env = {
            "LLMOPS_BOOTSTRAP_SERVERS": BOOTSTRAP,
            "LLMOPS_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "LLMOPS_SASL_MECHANISM": "OAUTHBEARER",
            "LLMOPS_SASL_OAUTHBEARER_TOKEN_FILE": str(token_file),
        }
        from_file = llmops(base, "kafka", "topics", "--json", **env)
        assert from_file.returncode == 0, from_file.stderr[-2000:]
        token_settings = base.model_copy(
            update={
                "bootstrap_servers": BOOTSTRAP,
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "OAUTHBEARER",
                "sasl_oauthbearer_token_file": token_file,
            }
        )
        by_callback = rdkafka_round_trip(token_settings, topic)
        assert by_callback[-3:] == [b"rdkafka-0", b"rdkafka-1", b"rdkafka-2"]
        consumed = faust_worker_consumes(token_settings)

        token_file.write_text(unsecured_jwt("carol", time.time() - 7200))  # expired an hour ago
        expired = llmops(base, "kafka", "topics", "--json", **env)
        assert expired.returncode == 4, (expired.returncode, expired.stderr[-2000:])
        assert "LLMOPS_SASL_OAUTHBEARER_TOKEN_FILE" in expired.stderr
        report(
            "OAUTHBEARER (unsecured JWT validator)",
            cli_published=cli["records"],
            rdkafka_unsecured_jwt=len(values),
            rdkafka_token_file=len(by_callback),
            faust_worker_consumed=consumed,
            expired_token_exit=expired.returncode,
        )


def test_scram_from_a_command_config(base: Settings, tmp_path: Path) -> None:
    password = "pw-" + secrets.token_urlsafe(16)
    security = BrokerSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "admin", SecretStr(password))
    jaas = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="{}";'

    def scram_file(name: str, secret: str) -> Path:
        settings = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512"}
        return properties(tmp_path, name, {**settings, "sasl.jaas.config": jaas.format(secret)})

    with secured_broker(security):
        cli = topics_and_publish(base, scram_file("scram", password))
        assert cli["records"] == 3
        wrong = scram_file("wrong", "nope-" + password)
        refused = llmops(base, "kafka", "topics", "-b", BOOTSTRAP, "--command-config", str(wrong), "--json")
        assert refused.returncode == 4, (refused.returncode, refused.stderr[-2000:])
        assert "refused the credentials of user 'admin'" in refused.stderr and "--command-config" in refused.stderr
        assert password not in refused.stdout + refused.stderr
        report("SCRAM from --command-config", cli_published=cli["records"], wrong_password_exit=refused.returncode)
