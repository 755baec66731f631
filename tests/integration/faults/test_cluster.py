"""A real three-broker KRaft cluster (replication 3, min.insync.replicas 2): kill -9 the broker that
leads most partitions mid-stream, keep publishing and processing without it, bring it back."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from streams.kafka.admin import client_kwargs, ensure_topics
from streams.kafka.broker import EmbeddedCluster
from streams.kafka.topics import Topics
from streams.settings import Settings

from ..conftest import run, wait_for
from .helpers import (
    account_raw,
    end_total,
    pipeline_worker,
    publish,
    records_of,
    report,
    snapshot,
    unique_documents,
    wait_pipeline,
)

DOCUMENTS = 180


async def describe(settings: Settings, topic: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Partitions and configs of ``topic``; retried, as an admin request may first reach the dead node."""
    for _ in range(10):
        try:
            return await _describe(settings, topic)
        except KafkaError:
            await asyncio.sleep(2.0)
    return await _describe(settings, topic)


async def _describe(settings: Settings, topic: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    return described[0]["partitions"], {entry[0]: entry[1] for entry in configs[0].resources[0][4]}


def test_losing_one_broker_of_three_mid_stream_loses_nothing_and_processing_goes_on(
    settings: Settings, cluster: EmbeddedCluster
) -> None:
    settings = settings.model_copy(
        update={"bootstrap_servers": cluster.bootstrap, "replication_factor": 3, "near_dup_enabled": False}
    )
    topics = Topics(settings.namespace)
    run(ensure_topics(settings))
    partitions, configs = run(describe(settings, topics.docs_raw))
    assert all(len(p["replicas"]) == 3 and len(p["isr"]) == 3 for p in partitions), partitions
    assert configs["min.insync.replicas"] == "2"
    documents = records_of(unique_documents(DOCUMENTS, offset=1200))
    thirds = [documents[i * DOCUMENTS // 3 : (i + 1) * DOCUMENTS // 3] for i in range(3)]
    figures: dict[str, Any] = {}

    worker = pipeline_worker(settings).start()
    try:
        publish(settings, thirds[0])
        assert wait_for(lambda: end_total(settings, topics.docs_embeddings) > 0, timeout=240), worker.log_tail()
        leaders = Counter(p["leader"] for p in partitions)
        victim = leaders.most_common(1)[0][0] - 1  # node ids are 1-based
        killed = time.monotonic()
        cluster.kill(victim)
        figures["killed_node"] = victim + 1
        figures["partitions_it_led"] = leaders[victim + 1]

        # With one node gone: acks=all writes still reach 2 in-sync replicas, and the worker goes on.
        publish(settings, thirds[1])
        wait_pipeline(settings, worker, timeout=400)
        figures["processed_with_a_node_down"] = sum(len(third) for third in thirds[:2])
        during, _ = run(describe(settings, topics.docs_raw))
        figures["isr_sizes_while_down"] = sorted(len(p["isr"]) for p in during)

        cluster.restart(victim)
        figures["down_s"] = round(time.monotonic() - killed, 1)
        publish(settings, thirds[2])
        wait_pipeline(settings, worker, timeout=400)
        assert wait_for(
            lambda: all(len(p["isr"]) == 3 for p in run(describe(settings, topics.docs_raw))[0]), timeout=120
        ), "the restarted node rejoins every ISR"
        assert worker.alive(), worker.log_tail()
    finally:
        assert worker.stop() == 0, worker.log_tail()

    assert end_total(settings, topics.docs_raw) == DOCUMENTS
    summary = account_raw(settings)
    assert summary["accounted"], summary
    index = snapshot(settings)
    assert {doc_id for doc_id, _, _ in index.rows.values()} == {key.decode() for key, _ in documents}
    report(
        "one broker of a 3-node KRaft cluster killed mid-stream",
        documents=DOCUMENTS,
        raw_records=end_total(settings, topics.docs_raw),
        chunks_indexed=len(index.rows),
        **figures,
    )
