"""Tenant A cannot read tenant B's answers or chunks (issue 18, finding 8), on the authorizing broker.

Replies to a tenant's requests go to that tenant's own topic (``inference.responses.tenant.<t>``),
because Kafka ACLs grant by topic, not by key. An admin grants each tenant's applications the
``tenant-client`` role for their tenant only (`llmops kafka acls --role tenant-client --tenant T`);
the infer worker's principal may write (never create) the tenants' topics by prefix. Then, as
tenant acme: its own reply topic is readable; globex's reply topic, the shared responses topic
(tenant-less answers) and the document topics are refused; the infer principal writes acme's topic
and cannot create one for a tenant an operator did not provision.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient

from streams.inference.service import base_response
from streams.kafka.admin import client_kwargs, ensure_topics, producer
from streams.kafka.topics import Topics
from streams.settings import Settings

from ..conftest import run, run_cli
from .helpers import CODEC, broker_with_acls, read_topic_messages, report

TENANTS = ("acme", "globex")
TOPIC_AUTHORIZATION_FAILED = 29  # Kafka's error codes
UNKNOWN_TOPIC_OR_PARTITION = 3
USERS = ("llmops-infer", *(f"tenant-{t}" for t in TENANTS))


async def metadata_error(settings: Settings, topic: str) -> int:
    """The error code the broker gives ``settings``' principal for ``topic`` (0: may describe it)."""
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return int(described["error_code"])


async def answer(settings: Settings, topic: str, request_id: str, text: str) -> None:
    """Write one response to ``topic`` as the infer worker would."""
    response = {**base_response(request_id, "c", "rag", "OK"), "answer": text}
    kafka = producer(settings)
    await kafka.start()
    try:
        await kafka.send_and_wait(topic, CODEC.encode("InferenceResponse", response, topic), key=b"c")
    finally:
        await kafka.stop()


def test_a_tenant_reads_only_its_own_answers(settings: Settings) -> None:
    with broker_with_acls(settings, USERS) as (admin, users):
        topics = Topics(admin.namespace)
        created = run_cli(admin, "kafka", "topics", *(a for t in TENANTS for a in ("--tenant", t)), timeout=180)
        assert created.returncode == 0, created.stderr[-2000:]
        for tenant in TENANTS:
            granted = run_cli(
                admin, "kafka", "acls", "--role", "tenant-client", "--tenant", tenant,
                "--principal", f"tenant-{tenant}", "--apply", timeout=180,
            )  # fmt: skip
            assert granted.returncode == 0, granted.stderr[-2000:]
        granted = run_cli(admin, "kafka", "acls", "--agents", "infer", "--principal", "llmops-infer", "--apply")
        assert granted.returncode == 0, granted.stderr[-2000:]

        run(answer(admin, topics.responses_for("acme"), "r-acme", "acme's plan"))
        run(answer(admin, topics.responses_for("globex"), "r-globex", "globex's secret"))
        acme = users["tenant-acme"]
        own = [
            CODEC.decode(m.value, "InferenceResponse")["answer"]
            for m in read_topic_messages(acme, topics.responses_for("acme"))
        ]
        assert own == ["acme's plan"]
        refused = {}
        for topic in (
            topics.responses_for("globex"),
            topics.inference_responses,
            topics.docs_clean,
            topics.docs_embeddings,
        ):
            assert read_topic_messages(acme, topic) == []  # nothing comes back...
            refused[topic] = run(metadata_error(acme, topic))  # ...because the broker refuses it
        assert set(refused.values()) == {TOPIC_AUTHORIZATION_FAILED}, refused
        assert len(read_topic_messages(admin, topics.responses_for("globex"))) == 1  # there is an answer to read

        # The infer principal writes a tenant's topic an operator created, and may not create one.
        infer = users["llmops-infer"]
        run(answer(infer, topics.responses_for("acme"), "r-acme-2", "acme's second answer"))
        spec = topics.tenant_responses_spec("initech", admin.partitions, admin.replication_factor)
        assert run(ensure_topics(infer, [spec])) == []  # refused: it leaves the topic alone
        assert run(metadata_error(admin, spec.name)) == UNKNOWN_TOPIC_OR_PARTITION
    report("tenant ACLs", own_topic="readable", refused=refused, infer_may_create_tenant_topic=False)
