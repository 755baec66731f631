"""Replay of docs.raw and inference.requests ranges on the real broker, and the diffs that judge them.

The live namespace only receives published records (no live worker): replays read it, never
write it. Each replay runs its own worker in its own namespace and Milvus Lite folder.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from streams.index.embed import version_for
from streams.inference.client import make_request
from streams.ingest.corpus import stdlib_documents
from streams.ingest.publish import encode_document, publish_records
from streams.kafka.admin import ensure_topics, offsets, producer
from streams.kafka.topics import Topics
from streams.models.classifier import stdlib_topic_dataset
from streams.models.lifecycle import evaluate_version, promote, train_and_register
from streams.models.registry import Stage
from streams.replay.diff import diff_replay
from streams.replay.namespaces import list_replays
from streams.replay.runner import Manifest, ReplaySpec, SupervisedWorker, replay_dir, run_replay
from streams.settings import Settings

from .conftest import ROOT, run, run_cli

DOCS = 40


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A live namespace with documents (two of them duplicates), requests, and a production classifier."""
    settings = Settings(
        bootstrap_servers=kafka_bootstrap,
        namespace="live" + uuid.uuid4().hex[:8],
        data_dir=tmp_path_factory.mktemp("replay"),
        models_dir=ROOT / ".llmops" / "models",
        partitions=3,
        ingest_batch_seconds=0.02,
    )
    run(ensure_topics(settings))
    documents = list(stdlib_documents(limit=DOCS))
    copies = [{"id": "zz-copy", "text": documents[3]["text"]}, {"id": "aa-copy", "text": documents[5]["text"]}]
    run(publish_records(settings, [encode_document(d) for d in [*documents, *copies]]))
    data = stdlib_topic_dataset(classes=3, per_class=30)
    version = run(train_and_register(settings, data, settings.default_classifier, actor="test"))
    run(promote(settings, settings.default_classifier, version.version, Stage.QA, actor="test"))
    run(evaluate_version(settings, settings.default_classifier, version.version, data, actor="test"))
    run(
        promote(settings, settings.default_classifier, version.version, Stage.PRODUCTION, actor="test", approved_by="t")
    )

    async def publish_requests() -> None:
        kafka = producer(settings)
        await kafka.start()
        try:
            for index, (task, text) in enumerate(
                [("search", d["text"][:120]) for d in documents[:6]]
                + [("classify", d["text"][:200]) for d in documents[6:12]]
            ):
                request = make_request("replay-test", text, task, top_k=3, deadline_s=60)
                await kafka.send_and_wait(
                    Topics(settings.namespace).inference_requests,
                    json.dumps(request.to_avro()).encode(),
                    key=f"app-{index % 2}".encode(),
                )
        finally:
            await kafka.stop()

    run(publish_requests())
    yield settings


@pytest.fixture(scope="module")
def baseline(live: Settings) -> str:
    """Replay of every document and request into namespace A."""
    name = "ra" + uuid.uuid4().hex[:6]
    assert run_replay(live, ReplaySpec("docs.raw", name)).caught_up
    assert run_replay(live, ReplaySpec("inference.requests", name)).caught_up
    return name


def live_offsets(settings: Settings) -> Any:
    topics = Topics(settings.namespace)
    return run(offsets(settings, [t.name for t in topics.specs(1, 1)]))


def test_a_range_replayed_twice_is_identical_and_live_is_untouched(live: Settings, baseline: str) -> None:
    before = live_offsets(live)
    again = "rb" + uuid.uuid4().hex[:6]
    manifest = run_replay(live, ReplaySpec("docs.raw", again))
    assert manifest.caught_up and manifest.records == DOCS + 2
    assert run_replay(live, ReplaySpec("inference.requests", again)).caught_up
    report = diff_replay(live, again, against=baseline)
    assert report.identical, report.to_json()
    assert report.counts["vectors_bitwise_equal"] == report.counts["chunks_total"] > DOCS
    assert report.counts["responses_equal"] == 12
    assert report.counts[f"index_{again}"] == report.counts[f"index_{baseline}"] == report.counts["chunks_total"]
    assert live_offsets(live) == before, "a replay never writes a live topic"
    recorded = Manifest.read(replay_dir(live, again), "docs.raw")
    assert recorded.models[0]["version"] == version_for(live)
    assert any(m["name"] == live.default_classifier and len(m["files"]) == 2 for m in recorded.models)
    assert recorded.code_version and len(recorded.settings_digest) == 64
    assert {r["namespace"] for r in list_replays(live)} >= {baseline, again}


def test_a_worker_killed_midway_changes_nothing(live: Settings, baseline: str) -> None:
    name = "rk" + uuid.uuid4().hex[:6]
    killed = threading.Event()

    def kill_midway(worker: SupervisedWorker) -> None:
        def watch() -> None:
            clean = Topics(name).docs_clean
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                _, end = run(offsets(live.model_copy(update={"namespace": name}), [clean]))
                if sum(end.values()) > 0:  # some documents went through ingest, the rest have not
                    os.kill(worker.process.pid, signal.SIGKILL)
                    killed.set()
                    return
                time.sleep(0.05)

        threading.Thread(target=watch, daemon=True).start()

    manifest = run_replay(live, ReplaySpec("docs.raw", name), on_worker=kill_midway)
    assert killed.is_set() and manifest.worker_restarts >= 1 and manifest.caught_up
    report = diff_replay(live, name, against=baseline)
    assert report.identical, report.to_json()
    assert report.counts["chunks_equal"] == report.counts["chunks_total"] > DOCS


def test_a_different_model_version_is_reported_and_exits_non_zero(live: Settings, baseline: str) -> None:
    name = "rm" + uuid.uuid4().hex[:6]
    fp32 = version_for(live.model_copy(update={"embed_model": "fp32"}))
    manifest = run_replay(live, ReplaySpec("docs.raw", name, models=(f"all-MiniLM-L6-v2@{fp32[:16]}",)))
    assert manifest.embed_model == "fp32" and manifest.models[0]["version"] == fp32
    result = run_cli(live, "replay", "diff", name, "--against", baseline, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert not report["identical"] and report["counts"]["vectors_bitwise_equal"] == 0
    assert any("embedder differs" in note for note in report["notes"])
    assert {item["kind"] for item in report["unexplained"]} == {"vector"}


def test_replay_refuses_the_live_namespace_and_an_empty_range(live: Settings) -> None:
    result = run_cli(live, "replay", "run", "--topic", "docs.raw", "--namespace", live.namespace)
    assert result.returncode == 1 and "other than the live one" in result.stderr
    result = run_cli(live, "replay", "run", "--topic", "docs.raw", "--namespace", "rx1", "--from-offset", "10000")
    assert result.returncode == 1 and "selects no records" in result.stderr
