"""What the fault tests share: pipeline workers, waiting on committed offsets, Milvus snapshots."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka import TopicPartition
from pydantic import SecretStr

from streams.cli.demo import account
from streams.index.embed import version_for
from streams.index.vectorstore import MilvusStore, StoreUnavailable
from streams.ingest.corpus import stdlib_documents
from streams.ingest.publish import encode_document, publish_records
from streams.kafka.admin import committed_offsets, ensure_topics, offsets, read_range
from streams.kafka.avro import AvroCodec, EmbeddedRegistry
from streams.kafka.broker import BrokerError, EmbeddedKafka
from streams.kafka.progress import wait_for_stages, wait_until_consumed
from streams.kafka.security import BrokerSecurity
from streams.kafka.topics import Topics
from streams.settings import Settings

from ..conftest import ROOT, TEST_PORT, WorkerProcess, run, run_cli

PIPELINE = ("ingest", "embed", "index")
CODEC = AvroCodec(EmbeddedRegistry.from_directory())


# Extra brokers count down from here: LLMOPS_TEST_FAULT_PORT_BASE when set (to keep every port of a
# run inside one block, e.g. base = test port + 18), else LLMOPS_TEST_KAFKA_PORT.
FAULT_PORT_BASE = int(os.environ.get("LLMOPS_TEST_FAULT_PORT_BASE", str(TEST_PORT)))


def fault_port(offset: int) -> int:
    """A port for an extra broker: ``FAULT_PORT_BASE - offset`` (the test broker uses +0/+1)."""
    return FAULT_PORT_BASE - offset


def report(fault: str, **figures: Any) -> None:
    """Print what a fault test survived, as one JSON line (``pytest -s`` shows it)."""
    print("FAULT " + json.dumps({"fault": fault, **figures}, sort_keys=True, default=str), flush=True)


def unique_documents(limit: int, offset: int = 0) -> list[dict[str, Any]]:
    """Stdlib documents whose texts are all different (a suffix makes sure), so dedup never fires."""
    documents = list(stdlib_documents(limit=limit + offset))[offset:]
    return [{**doc, "text": f"{doc['text']}\n\n(document {i} of the fault corpus)"} for i, doc in enumerate(documents)]


def records_of(documents: Iterable[dict[str, Any]]) -> list[tuple[bytes | None, bytes | None]]:
    return [encode_document(doc) for doc in documents]


def pipeline_worker(settings: Settings) -> WorkerProcess:
    return WorkerProcess(settings, agents=",".join(PIPELINE))


def publish(settings: Settings, records: list[tuple[bytes | None, bytes | None]]) -> None:
    run(ensure_topics(settings))
    run(publish_records(settings, records))


def raw_end(settings: Settings) -> dict[TopicPartition, int]:
    return run(offsets(settings, [Topics(settings.namespace).docs_raw]))[1]


def end_total(settings: Settings, topic: str) -> int:
    return sum(run(offsets(settings, [topic]))[1].values())


def committed_total(settings: Settings, group: str, topic: str) -> int:
    return sum(offset for tp, offset in run(committed_offsets(settings, group)).items() if tp.topic == topic)


def wait_pipeline(settings: Settings, worker: WorkerProcess, timeout: float = 300.0) -> None:
    """Wait until every stage has committed everything published so far, or fail with the log."""
    ok, _ = wait_for_stages(settings, [PIPELINE], raw_end(settings), timeout, alive=worker.alive)
    assert ok, f"the pipeline did not catch up (alive={worker.alive()}); log:\n{worker.log_tail()}"


def sigkill(worker: WorkerProcess) -> None:
    assert worker.process is not None
    os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.wait()


@dataclass(frozen=True)
class IndexSnapshot:
    """Every row of a namespace's collection: chunk id -> (doc id, text, vector)."""

    rows: dict[str, tuple[str, str, np.ndarray]]

    def differences(self, other: IndexSnapshot) -> dict[str, Any]:
        """Empty when both hold the same chunk ids, texts and vectors (float32 tolerance)."""
        missing = sorted(set(self.rows) - set(other.rows))
        extra = sorted(set(other.rows) - set(self.rows))
        changed = [
            chunk_id
            for chunk_id in set(self.rows) & set(other.rows)
            if self.rows[chunk_id][:2] != other.rows[chunk_id][:2]
            or not np.allclose(self.rows[chunk_id][2], other.rows[chunk_id][2], atol=1e-6)
        ]
        problems = {"missing": missing[:10], "extra": extra[:10], "changed": sorted(changed)[:10]}
        return {k: v for k, v in problems.items() if v}


def snapshot(settings: Settings) -> IndexSnapshot:
    """Read the namespace's whole collection (the worker that owns Milvus Lite must be stopped)."""
    for _ in range(10):  # a Milvus server that just restarted, on a busy machine, may refuse a moment
        try:
            store = MilvusStore.from_settings(settings, version_for(settings))
            break
        except StoreUnavailable:
            time.sleep(3.0)
    else:
        store = MilvusStore.from_settings(settings, version_for(settings))
    try:
        total = store.count()
        rows = store._client.query(  # a test reads every row, vectors included
            store.collection,
            filter="chunk_index >= 0",
            output_fields=["chunk_id", "doc_id", "text", "vector"],
            limit=max(total, 1),
        )
    finally:
        store.close()
    snap = IndexSnapshot(
        {row["chunk_id"]: (row["doc_id"], row["text"], np.asarray(row["vector"], dtype=np.float32)) for row in rows}
    )
    assert len(snap.rows) == total, f"count() says {total}, query returned {len(snap.rows)}"
    return snap


async def _outputs(settings: Settings, before: dict[TopicPartition, int], names: list[str]) -> list[Any]:
    _, end = await offsets(settings, names)
    return [message async for message in read_range(settings, before, end)]


def account_raw(settings: Settings) -> dict[str, Any]:
    """Every docs.raw offset of the namespace matched with the ingest outputs that name it."""
    topics = Topics(settings.namespace)
    begin, end = run(offsets(settings, [topics.docs_raw]))
    published = {tp: (begin[tp], end[tp]) for tp in end}
    outputs = run(_outputs(settings, {}, [topics.docs_clean, topics.docs_duplicates, topics.deadletter]))
    return account(published, outputs, CODEC, topics)


def _by_partition(messages: list[Any]) -> dict[tuple[str, int], list[Any]]:
    grouped: dict[tuple[str, int], list[Any]] = {}
    for message in messages:
        grouped.setdefault((message.topic, message.partition), []).append(message)
    return grouped


def committed_but_unprocessed(settings: Settings, group: str, index: IndexSnapshot | None) -> dict[str, list[str]]:
    """Records below a committed offset whose output is missing, per stage (empty lists = none).

    ingest: a docs.raw offset below the commit that no output names in its ``llmops.source``
    header. embed: a docs.clean chunk below the commit with no docs.embeddings record.
    index: a docs.embeddings UPSERT below the commit whose chunk is not in ``index``.
    """
    topics = Topics(settings.namespace)
    committed = run(committed_offsets(settings, group))
    stage_topics = [topics.docs_raw, topics.docs_clean, topics.docs_duplicates, topics.deadletter]
    messages = run(_outputs(settings, {}, [*stage_topics, topics.docs_embeddings]))
    by_topic: dict[str, list[Any]] = {}
    for message in messages:
        by_topic.setdefault(message.topic, []).append(message)
    sources = {
        dict(m.headers or ()).get("llmops.source", b"").decode()
        for name in (topics.docs_clean, topics.docs_duplicates, topics.deadletter)
        for m in by_topic.get(name, [])
    }
    embedded = {CODEC.decode(m.value, "ChunkEmbedding")["chunk_id"] for m in by_topic.get(topics.docs_embeddings, [])}
    problems: dict[str, list[str]] = {"ingest": [], "embed": [], "index": []}
    for (topic, partition), records in _by_partition(messages).items():
        limit = committed.get(TopicPartition(topic, partition), 0)
        for message in records:
            if message.offset >= limit:
                continue
            where = f"{topic}:{partition}:{message.offset}"
            if topic == topics.docs_raw and where not in sources:
                problems["ingest"].append(where)
            elif topic == topics.docs_clean and CODEC.decode(message.value, "CleanChunk")["chunk_id"] not in embedded:
                problems["embed"].append(where)
            elif topic == topics.docs_embeddings and index is not None:
                record = CODEC.decode(message.value, "ChunkEmbedding")
                if record["op"] == "UPSERT" and record["chunk_id"] not in index.rows:
                    problems["index"].append(where)
    return problems


def read_topic_messages(settings: Settings, name: str) -> list[Any]:
    return run(_outputs(settings, {}, [name]))


@contextlib.contextmanager
def fresh(broker: EmbeddedKafka) -> Iterator[EmbeddedKafka]:
    """Run ``broker`` on empty storage for the block; a broker that will not start fails the test."""
    broker.stop()
    shutil.rmtree(broker.storage_dir, ignore_errors=True)
    try:
        broker.start(timeout=180)
    except BrokerError as error:
        pytest.fail(f"a test broker on port {broker.port} did not start:\n{error}")
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(broker.storage_dir, ignore_errors=True)


@contextlib.contextmanager
def broker_with_acls(
    settings: Settings, users: Iterable[str], protocol: str = "SASL_PLAINTEXT", ca_file: Path | None = None
) -> Iterator[tuple[Settings, dict[str, Settings]]]:
    """A SCRAM-SHA-512 broker enforcing ACLs (port ``LLMOPS_TEST_KAFKA_PORT - 10``) for the block.

    Yields the super user's settings (``llmops-admin``) and settings for each of ``users``: SCRAM
    users created when storage is formatted, each with a random password and no grant yet.
    ``protocol`` SASL_SSL also puts TLS on the client listener (certificate PEM at ``ca_file``).
    """
    port = fault_port(10)
    admin = settings.model_copy(
        update={
            "bootstrap_servers": f"127.0.0.1:{port}",
            "security_protocol": protocol,
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "llmops-admin",
            "sasl_password": SecretStr("pw-" + secrets.token_urlsafe(18)),
            "ssl_cafile": ca_file,
            "kafka_authorizer": True,
        }
    )
    principals = {
        user: admin.model_copy(update={"sasl_username": user, "sasl_password": SecretStr(secrets.token_urlsafe(18))})
        for user in users
    }
    security = BrokerSecurity.from_settings(admin)
    assert security is not None
    security = replace(security, users=tuple((u, s.sasl_password) for u, s in principals.items() if s.sasl_password))
    broker = EmbeddedKafka(ROOT / ".llmops" / "kafka", port=port, heap="256m", security=security)
    shutil.rmtree(broker.home / f"tls-{port}", ignore_errors=True)  # a new certificate for a new ca_file
    with fresh(broker):
        yield admin, principals


def passwords_of(*settings: Settings) -> list[str]:
    """The SASL passwords of ``settings``, to check that no output holds one."""
    return [s.sasl_password.get_secret_value() for s in settings if s.sasl_password]


def refusal(principal: Settings, *args: str) -> tuple[str, str]:
    """``llmops ARGS`` as ``principal``, which an ACL must refuse: exit code 4 and one ``Error:`` line
    that names the user and ``llmops kafka acls``. Returns that line and all the output."""
    result = run_cli(principal, *args, timeout=180)
    assert result.returncode == 4, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert f"refused user {principal.sasl_username!r} " in errors[0] and "llmops kafka acls" in errors[0], errors[0]
    return errors[0], result.stdout + result.stderr


def refused_write(principal: Settings, topic: str) -> tuple[str, str]:
    """``llmops publish`` as ``principal`` to ``topic``, which it has no grant for: refused, naming it."""
    line, output = refusal(principal, "publish", "--corpus", "stdlib", "--limit", "2", "--topic", topic)
    assert f"access to topic {topic}:" in line, line
    return line, output


def publish_and_ingest(admin: Settings, publisher: Settings, ingest: Settings, documents: int) -> tuple[Any, str, int]:
    """``publisher`` publishes ``documents`` stdlib documents (``llmops publish``) and an ingest worker
    running as ``ingest`` processes them, each with only its grants; every record is accounted for.

    Returns the accounting of docs.raw, the output of both (to look for passwords in) and the
    worker's exit code (0).
    """
    topics = Topics(admin.namespace)
    worker = WorkerProcess(ingest, agents="ingest").start()
    try:
        published = run_cli(publisher, "publish", "--corpus", "stdlib", "--limit", str(documents), "--json")
        assert published.returncode == 0, published.stderr[-2000:]
        assert json.loads(published.stdout)["records"] == documents
        _, end = run(offsets(admin, [topics.docs_raw]))
        consumed = run(wait_until_consumed(admin, topics.app_id("ingest"), end, 180.0, alive=worker.alive))
        assert consumed, worker.log_tail()
    finally:
        code = worker.stop()
    assert code == 0, worker.log_tail()
    summary = account_raw(admin)
    assert summary["accounted"] and summary["published"] == documents, summary
    worker_log = worker.log.read_text(errors="replace")
    assert "AuthorizationFailed" not in worker_log, "the ingest worker needed a grant it does not have"
    return summary, worker_log + published.stdout + published.stderr, code
