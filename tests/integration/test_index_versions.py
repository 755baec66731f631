"""Blue-green index versions on the real broker, Milvus Lite and ONNX embedders.

One worker (ingest, embed, index, infer) serves the first two tests: 331 stdlib documents (the
modules that hold the relevant documents of the first 40 answerable questions of the packaged
TEST split, so every question has same-module distractors) are indexed by the live pipeline
(int8 embedder), then candidate index versions are built beside it from docs.raw. The crash test
runs a worker of its own and kills it with SIGKILL in the middle of a build.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streams.evaluation.harness import module_subset
from streams.index.embed import OnnxEmbedder, graph_for, version_for
from streams.index.rebuild import committed_progress
from streams.index.spec import INDEX_MODEL, IndexSpec
from streams.index.vectorstore import MilvusStore
from streams.inference.client import InferenceClient
from streams.ingest.chunk import default_tokenizer, default_tokenizer_path
from streams.ingest.pipeline import IngestPipeline, IngestRecord
from streams.ingest.publish import encode_document, publish_records
from streams.kafka.admin import ensure_topics, offsets, read_topic
from streams.kafka.avro import codec_from_settings
from streams.kafka.progress import wait_for_stages
from streams.kafka.topics import Topics
from streams.models.indexes import spec_of
from streams.models.lifecycle import load_registry, promote, register_index, rollback
from streams.models.registry import ModelVersion, RegistryError, Stage
from streams.records import SourceCoordinates
from streams.settings import Settings

from .conftest import WorkerProcess, final_chunks, isolated_settings, run, run_cli, wait_for

AGENTS = ("embed", "index", "infer", "ingest")
QUESTIONS = 40


def corpus() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(documents, questions): the first answerable TEST questions and every document of their modules."""
    return module_subset("test", QUESTIONS)


def fresh_settings(kafka_bootstrap: str, data_dir: Path) -> Settings:
    return isolated_settings(kafka_bootstrap, data_dir, prefix="ix")


@pytest.fixture(scope="module")
def served(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Path, Any]]:
    data_dir = tmp_path_factory.mktemp("indexes")
    settings = fresh_settings(kafka_bootstrap, data_dir)
    documents, questions = corpus()
    questions_file = data_dir / "questions.jsonl"
    questions_file.write_text("".join(json.dumps(q) + "\n" for q in questions))
    worker = WorkerProcess(settings, agents=",".join(AGENTS)).start()
    try:
        run(ensure_topics(settings))
        run(publish_records(settings, [encode_document(d) for d in documents]))
        _, raw_end = run(offsets(settings, [Topics(settings.namespace).docs_raw]))
        ok, _ = wait_for_stages(settings, [AGENTS], raw_end, 600.0, alive=worker.alive)
        assert ok, f"the worker did not index the documents; log:\n{worker.log_tail()}"
        assert wait_for(lambda: run(load_registry(settings)).production(INDEX_MODEL) is not None, 60.0), (
            f"the worker registered no live index; log:\n{worker.log_tail()}"
        )
        yield settings, questions_file, worker
    finally:
        code = worker.stop()
        assert code == 0, f"worker exit code {code}; log:\n{worker.log_tail()}"


def wait_built(settings: Settings, version: str, alive: Any, timeout: float = 600.0) -> None:
    def built() -> bool:
        done, total = run(committed_progress(settings, version))
        return total > 0 and done >= total

    assert wait_for(lambda: built() or not alive(), timeout, interval=1.0) and alive(), (
        f"the build of {version[:12]} did not finish: {run(committed_progress(settings, version))}"
    )


def register(settings: Settings, spec: IndexSpec) -> ModelVersion:
    return run(register_index(settings, spec, actor="test"))


def evaluate(settings: Settings, questions_file: Path, version: ModelVersion) -> tuple[int, dict[str, Any]]:
    result = run_cli(
        settings, "eval", "retrieval", str(questions_file), "--index", version.version, "--modes", "hybrid", "--json"
    )
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.mark.timeout(1500)  # 331 documents indexed, then a candidate built, on 2 cores shared with other workers
def test_the_gate_refuses_a_candidate_index_with_a_truncated_chunker(served: tuple[Settings, Path, Any]) -> None:
    settings, questions_file, worker = served
    # Each document cut to its first 16 tokens: the words that answer most questions are gone.
    spec = IndexSpec("int8", version_for(settings), chunk_tokens=16, chunk_overlap=0, max_chunks=1)
    candidate = register(settings, spec)
    wait_built(settings, candidate.version, worker.alive)
    run(promote(settings, INDEX_MODEL, candidate.version, Stage.QA, actor="test"))

    code, report = evaluate(settings, questions_file, candidate)

    assert code == 1 and report["qa_passed"] is False, report
    production, truncated = report["table"]
    assert production["system"].startswith("production") and truncated["system"].startswith("candidate")
    assert truncated["recall@5"]["mean"] < production["recall@5"]["mean"]
    assert "below the allowed drop" in report["qa_report"]
    with pytest.raises(RegistryError, match="failed its QA gate"):
        run(promote(settings, INDEX_MODEL, candidate.version, Stage.PRODUCTION, actor="test", approved_by="lead"))
    assert run(load_registry(settings)).production(INDEX_MODEL).version != candidate.version  # type: ignore[union-attr]


class Traffic:
    """Search requests one after another from a thread of its own, every response kept."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.responses: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        texts = ["delete a directory recursively", "parse command line options", "read a csv file", "json encoding"]
        async with InferenceClient(self.settings) as client:
            n = 0
            while not self.stopping.is_set():
                response = await client.ask(texts[n % len(texts)], "search", timeout=60.0, top_k=5)
                self.responses.append(response)
                n += 1

    def index_versions(self) -> list[str]:
        return [m["version"] for r in self.responses for m in r["models"] if m["name"] == INDEX_MODEL]

    def wait_for_index(self, version: str, timeout: float = 60.0) -> bool:
        start = len(self.responses)
        return wait_for(lambda: version in self.index_versions()[start:], timeout, interval=0.2)


@pytest.mark.timeout(1500)  # an fp32 candidate built from docs.raw, 40 questions asked twice
def test_a_switch_mid_traffic_then_a_rollback_never_fails_or_mixes_indexes(
    served: tuple[Settings, Path, Any],
) -> None:
    settings, questions_file, worker = served
    live = run(load_registry(settings)).production(INDEX_MODEL)
    assert live is not None and spec_of(live).live
    fp32 = settings.model_copy(update={"embed_model": "fp32"})
    candidate = register(settings, IndexSpec("fp32", version_for(fp32)))
    wait_built(settings, candidate.version, worker.alive)
    run(promote(settings, INDEX_MODEL, candidate.version, Stage.QA, actor="test"))
    code, report = evaluate(settings, questions_file, candidate)
    assert code == 0 and report["qa_passed"] is True, report

    traffic = Traffic(settings)
    traffic.thread.start()
    try:
        assert traffic.wait_for_index(live.version), "no answer from the live index before the switch"
        run(promote(settings, INDEX_MODEL, candidate.version, Stage.PRODUCTION, actor="test", approved_by="lead"))
        assert traffic.wait_for_index(candidate.version), f"never answered from the candidate; {worker.log_tail()}"
        run(rollback(settings, INDEX_MODEL, actor="test"))
        assert traffic.wait_for_index(live.version), f"never answered from the live index again; {worker.log_tail()}"
    finally:
        traffic.stopping.set()
        traffic.thread.join(120)

    embedder_of = {live.version: live.embedder_version, candidate.version: candidate.embedder_version}
    assert live.embedder_version != candidate.embedder_version
    for response in traffic.responses:
        assert response["status"] == "OK", response["error"]
        indexes = [m["version"] for m in response["models"] if m["name"] == INDEX_MODEL]
        embedders = [m["version"] for m in response["models"] if m["name"] == "all-MiniLM-L6-v2"]
        assert len(indexes) == 1 and embedders == [embedder_of[indexes[0]]], response["models"]
        assert response["hits"], response
    order = [v for i, v in enumerate(traffic.index_versions()) if i == 0 or traffic.index_versions()[i - 1] != v]
    assert order == [live.version, candidate.version, live.version]  # one switch each way, no flapping
    registry = run(load_registry(settings))
    assert registry.production(INDEX_MODEL).version == live.version  # type: ignore[union-attr]
    assert registry.get(INDEX_MODEL, candidate.version).stage is Stage.ARCHIVED
    alias_moves = [json.loads(line) for line in worker.log.read_text().splitlines() if '"index_alias_switched"' in line]
    assert [move["to"] for move in alias_moves][-2:] == [candidate.uri, live.uri]


def expected_chunks(settings: Settings, spec: IndexSpec) -> set[str]:
    """The chunk ids the spec's ingest stage leaves for what docs.raw holds, computed here."""
    pipeline = IngestPipeline(spec.ingest_config(settings), codec_from_settings(settings), default_tokenizer())
    records = []

    async def read() -> None:
        async for m in read_topic(settings, Topics(settings.namespace).docs_raw):
            records.append(IngestRecord(m.key, m.value, SourceCoordinates(m.topic, m.partition, m.offset, m.timestamp)))

    run(read())
    state: dict[str, Any] = {}
    clean = [chunk.to_avro() for result in pipeline.process_batch(records, state) for chunk in result.chunks]
    return final_chunks(clean)


@pytest.mark.timeout(1500)  # two worker starts and an fp32 build on 2 cores shared with other workers
def test_a_build_killed_mid_way_resumes_to_the_same_rows(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = fresh_settings(kafka_bootstrap, tmp_path)
    documents, _ = corpus()
    run(ensure_topics(settings))
    run(publish_records(settings, [encode_document(d) for d in documents]))
    fp32 = settings.model_copy(update={"embed_model": "fp32"})
    spec = IndexSpec("fp32", version_for(fp32))
    candidate = register(settings, spec)

    worker = WorkerProcess(settings, agents="index").start()
    try:
        assert wait_for(lambda: run(committed_progress(settings, candidate.version))[0] > 0, 300.0, interval=0.1), (
            worker.log_tail()
        )
        done, total = run(committed_progress(settings, candidate.version))
        worker.stop(signal.SIGKILL)
    finally:
        worker.stop()
    assert 0 < done < total, f"the build was not caught mid-way ({done}/{total}): nothing to resume"

    restarted = WorkerProcess(settings, agents="index").start()
    try:
        wait_built(settings, candidate.version, restarted.alive)
    finally:
        assert restarted.stop() == 0, restarted.log_tail()

    store = MilvusStore.from_settings(spec.settings_for(settings), candidate.version)
    try:
        store.flush()
        assert store.collection == candidate.uri
        expected = expected_chunks(settings, spec)
        assert store.all_chunk_ids() == sorted(expected)
        assert store.count() == len(expected)
        sample = store.get(sorted(expected)[:: max(1, len(expected) // 8)])
    finally:
        store.close()
    embedder = OnnxEmbedder(graph_for(fp32), default_tokenizer_path(), workers=1)
    vectors = embedder.embed([row["text"] for row in sample])
    assert np.allclose(np.asarray([row["vector"] for row in sample]), vectors, atol=1e-6)
