"""Least privilege for every agent group on the authorizing broker (KRaft StandardAuthorizer, SCRAM).

An admin applies `llmops kafka acls --apply` (one principal per agent group and client role, no
more). Then ingest, embed, index and monitor run as separate workers, each as its own user; a
publisher sends documents, they are indexed, the index worker stops (Milvus Lite has one owner)
and an infer worker answers a search over them for an inference client, whose feedback the
monitor joins; the monitor reports all it read and raises an alert. Each of embed, index, infer
and monitor is refused, in one line naming the topic and `llmops kafka acls`, when it writes a
topic it has no grant for; no output holds a password.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from streams.inference.client import InferenceClient
from streams.inference.feedback import feedback_record, send_feedback
from streams.ingest.publish import publish_records
from streams.kafka.acls import default_grants
from streams.kafka.admin import ensure_topics, offsets
from streams.kafka.progress import wait_for_stages, wait_until_consumed
from streams.kafka.topics import Topics
from streams.models.classifier import stdlib_topic_dataset
from streams.models.lifecycle import promote, train_and_register
from streams.models.registry import Stage
from streams.settings import Settings
from streams.telemetry.traceview import read_spans

from ..conftest import WorkerProcess, production_classifier, run, run_cli, wait_for
from .helpers import (
    CODEC,
    broker_with_acls,
    end_total,
    passwords_of,
    read_topic_messages,
    records_of,
    refused_write,
    report,
    unique_documents,
)

AGENTS = ("ingest", "embed", "index", "monitor")  # infer starts once index has let go of Milvus Lite
USERS = tuple(
    f"llmops-{name}" for name in (*AGENTS, "infer", "publisher", "inference-client", "tenant-client", "model-manager")
)
DOCUMENTS = 20
CLASSIFIER = "acl-topic"


@pytest.fixture
def cluster_with_acls(settings: Settings) -> Iterator[tuple[Settings, dict[str, Settings]]]:
    """A broker enforcing ACLs, a SCRAM user per agent group and client role; monitor windows of 5,
    and a latency objective no answer can meet, so that the monitor also writes an alert."""
    monitored = {"monitor_window_events": 5, "monitor_latency_p95_ms": 0.001, "monitor_alert_after": 1}
    with broker_with_acls(settings.model_copy(update=monitored), USERS) as cluster:
        yield cluster


def test_each_agent_group_works_with_only_its_grants_and_is_refused_elsewhere(
    cluster_with_acls: tuple[Settings, dict[str, Settings]],
) -> None:
    admin, users = cluster_with_acls
    topics = Topics(admin.namespace)
    run(ensure_topics(admin))  # an operator creates the topics; workers may not
    applied = run_cli(admin, "kafka", "acls", "--apply", "--json", timeout=180)
    assert applied.returncode == 0, applied.stderr[-2000:]
    grants = default_grants(admin.namespace)
    assert json.loads(applied.stdout)["applied"] == sum(len(group) for group in grants.values())
    assert set(grants) == set(USERS)

    workers = {agent: WorkerProcess(users[f"llmops-{agent}"], agents=agent).start() for agent in AGENTS}
    infer = WorkerProcess(users["llmops-infer"], agents="infer")
    outputs: list[str] = [applied.stdout, applied.stderr]
    try:
        documents = unique_documents(DOCUMENTS, offset=1200)
        run(publish_records(users["llmops-publisher"], records_of(documents)))
        _, raw_end = run(offsets(admin, [topics.docs_raw]))
        # While the pipeline works: an admin registers a classifier and a candidate that shadows it.
        production = production_classifier(admin, CLASSIFIER, classes=3)
        data = stdlib_topic_dataset(classes=4, per_class=30)
        candidate = run(train_and_register(admin, data, CLASSIFIER, actor="test"))
        run(promote(admin, CLASSIFIER, candidate.version, Stage.QA, actor="test", shadow=True))

        def pipeline_alive() -> bool:
            return all(workers[agent].alive() for agent in ("ingest", "embed", "index"))

        stages = [("ingest",), ("embed",), ("index",)]
        ok, _ = wait_for_stages(admin, stages, raw_end, 300.0, alive=pipeline_alive)
        assert ok, "\n".join(f"{a}:\n{w.log_tail()}" for a, w in workers.items())
        assert workers["index"].stop() == 0, workers["index"].log_tail()  # Milvus Lite: one owner at a time
        # Only the model manager writes models.control: an operator records the embedder the
        # infer worker runs (the worker may read the registry, never write it).
        embedder = run_cli(admin, "models", "register-embedder", "--json", timeout=180)
        assert embedder.returncode == 0, embedder.stderr[-2000:]
        infer.start()

        # While infer starts: each principal writing a topic that is not its own is refused.
        attempts = {
            "embed": topics.docs_clean,  # its input: it may read it, never write it
            "index": topics.docs_embeddings,
            "monitor": topics.inference_responses,  # forged answers
        }
        refusals = {agent: refused_write(users[f"llmops-{agent}"], topic) for agent, topic in attempts.items()}

        target = documents[3]
        client = users["llmops-inference-client"]
        asked = run_cli(client, "query", target["text"][:300], "--task", "search", "--json", "--timeout", "240")
        assert asked.returncode == 0, f"{asked.stderr[-2000:]}\ninfer log:\n{infer.log_tail()}"
        answer = json.loads(asked.stdout)
        assert answer["status"] == "OK", answer
        assert target["id"] in {hit["doc_id"] for hit in answer["hits"]}, answer["hits"]
        assert run(send_feedback(client, [feedback_record(answer["request_id"], rating=1.0)])) == 1
        classified = run(ask(client, "read the event loop", "classify", model=CLASSIFIER))
        assert classified["status"] == "OK", classified
        assert {(m["name"], m["version"]) for m in classified["models"]} >= {(CLASSIFIER, production.version)}
        # The candidate answered the same request on inference.shadow.
        assert wait_for(lambda: end_total(admin, topics.inference_shadow) == 1, 60.0), infer.log_tail()
        refusals["infer"] = refused_write(users["llmops-infer"], topics.docs_embeddings)  # poisoning the index

        monitored = [topics.docs_embeddings, topics.inference_requests, topics.inference_responses, topics.feedback]
        _, monitor_end = run(offsets(admin, monitored))
        consumed = run(
            wait_until_consumed(admin, topics.app_id("monitor"), monitor_end, 180.0, alive=workers["monitor"].alive)
        )
        assert consumed, workers["monitor"].log_tail()
    finally:
        codes = {agent: worker.stop() for agent, worker in {**workers, "infer": infer}.items()}
    assert codes == dict.fromkeys((*AGENTS, "infer"), 0), codes

    # The monitor reported every event it should have seen (its last windows close as it stops).
    events: dict[str, int] = {}
    for snapshot in decoded(admin, topics.monitor_metrics, "MetricSnapshot"):
        events[snapshot["stream"]] = events.get(snapshot["stream"], 0) + snapshot["events"]
    embedded = end_total(admin, topics.docs_embeddings)
    assert events == {"documents": embedded, "requests": 2, "responses": 2, "feedback": 1}, events
    (shadow,) = [
        CODEC.decode(m.value, "InferenceResponse") for m in read_topic_messages(admin, topics.inference_shadow)
    ]
    assert (shadow["request_id"], shadow["shadow_of"]) == (classified["request_id"], production.version), shadow
    alerts = decoded(admin, topics.monitor_alerts, "Alert")
    assert [(a["metric"], a["state"]) for a in alerts] == [("latency.total.p95", "FIRING")], alerts
    assert end_total(admin, topics.deadletter) == 0
    # Every traced agent exported its spans (the monitor records none) with its own principal.
    services = {span.service for span in run(read_spans(admin))}
    assert services == {f"llmops-{agent}" for agent in ("ingest", "embed", "index", "infer")}, services

    logs = {agent: w.log.read_text(errors="replace") for agent, w in {**workers, "infer": infer}.items()}
    for agent, log in logs.items():
        assert "AuthorizationFailed" not in log, f"the {agent} worker needed a grant it does not have"
    outputs += [asked.stdout, asked.stderr, *(output for _, output in refusals.values()), *logs.values()]
    secrets_seen = [p for p in passwords_of(admin, *users.values()) if any(p in text for text in outputs)]
    assert not secrets_seen, "a password was printed or logged"
    report(
        "Least privilege for every agent group (StandardAuthorizer, one SCRAM user each)",
        principals=len(grants),
        grants_applied=json.loads(applied.stdout)["applied"],
        documents=DOCUMENTS,
        embeddings=embedded,
        search_hit=target["id"],
        classified_by=f"{CLASSIFIER}@{production.version[:12]}",
        shadow_answer_by=f"{CLASSIFIER}@{candidate.version[:12]}",
        span_services=sorted(services),
        monitor_events=events,
        monitor_alerts=[f"{a['metric']} {a['state']}" for a in alerts],
        refused={agent: message for agent, (message, _) in refusals.items()},
        worker_exit_codes=codes,
    )


async def ask(settings: Settings, text: str, task: str, **options: str) -> dict[str, Any]:
    """One request from a client with ``settings``, and its response."""
    async with InferenceClient(settings) as client:
        return await client.ask(text, task, timeout=120.0, **options)


def decoded(settings: Settings, topic: str, schema: str) -> list[dict[str, Any]]:
    """Every record of ``topic``, decoded with ``schema``."""
    return [CODEC.decode(message.value, schema) for message in read_topic_messages(settings, topic)]
