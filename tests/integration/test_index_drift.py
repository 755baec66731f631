"""Drift follows an index switch, on the real broker, Milvus Lite and the two ONNX embedders.

One worker (ingest, embed, index, infer, monitor) indexes the stdlib documents of the modules of
the first 10 answerable TEST questions with the live pipeline (int8). Dense searches of DEV
questions (shuffled, so every batch is drawn alike) answered by the live index make the scores
reference (``llmops monitor set-reference --topic inference.responses``: one sample per index
version). An fp32 candidate is built, evaluated and promoted: the monitor must give the reference
a sample of the candidate (the latest questions asked again, pinned to it) and then judge
searches answered by the candidate against it, with no drift alert for the switch itself; searches
about something else entirely must still raise one; after a rollback the live index is judged by
its own sample again.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streams.evaluation.harness import module_subset, packaged_questions, read_questions
from streams.index.embed import version_for
from streams.index.spec import INDEX_MODEL, IndexSpec
from streams.inference.client import InferenceClient
from streams.ingest.publish import encode_document, publish_records
from streams.kafka.admin import ensure_topics, offsets
from streams.kafka.progress import wait_for_stages
from streams.kafka.topics import Topics
from streams.models.lifecycle import load_registry, promote, register_index, rollback
from streams.models.registry import Stage
from streams.monitor.drift import ks_statistic
from streams.monitor.reference import load_reference
from streams.monitor.status import read_records
from streams.settings import Settings

from .conftest import WorkerProcess, isolated_settings, run, run_cli, wait_for
from .test_index_versions import wait_built

AGENTS = ("embed", "index", "infer", "ingest", "monitor")
WINDOW = 20
BATCH = 100  # in-domain searches before and after the switch: 5 windows each
OFF_TOPIC = [
    "how long should banana bread bake at 180 degrees",
    "who won the football world cup in 1998",
    "best hiking trails in the swiss alps in autumn",
    "how to knit a wool scarf for beginners",
    "symptoms of vitamin d deficiency in winter",
    "what is the capital city of australia",
    "how to grow tomatoes on a balcony",
    "recipe for a vegetarian lasagne with spinach",
    "train timetable from paris to lyon on sunday",
    "how many calories are in a glass of orange juice",
    "why do cats purr when they sleep",
    "tips for learning to play the violin as an adult",
]


def dev_questions() -> list[str]:
    texts = [q.question for q in read_questions(packaged_questions("dev")) if not q.unanswerable]
    random.Random(0).shuffle(texts)
    return texts


async def ask_all(settings: Settings, texts: Sequence[str]) -> list[dict[str, Any]]:
    """Dense searches one after another (windows then hold them in order)."""
    async with InferenceClient(settings) as client:
        return [await client.ask(text, "search", timeout=120.0, top_k=5, retrieval="dense") for text in texts]


def index_of(response: dict[str, Any]) -> str:
    return next(m["version"] for m in response["models"] if m["name"] == INDEX_MODEL)


def score_snapshots(settings: Settings) -> list[dict[str, Any]]:
    """Responses snapshots, each reduced to the slices of its drift.top1_score statistics."""
    snapshots = run(read_records(settings, Topics(settings.namespace).monitor_metrics, "MetricSnapshot"))
    return [s for s in snapshots if s["stream"] == "responses"]


def score_alerts(settings: Settings) -> list[dict[str, Any]]:
    alerts = run(read_records(settings, Topics(settings.namespace).monitor_alerts, "Alert"))
    return [a for a in alerts if a["metric"].startswith("drift.top1_score") and a["state"] == "FIRING"]


def compared(snapshots: list[dict[str, Any]], index: str) -> list[dict[str, Any]]:
    """The drift.top1_score.ks statistic of each snapshot that compared scores of ``index``."""
    name = f"{INDEX_MODEL}@{index[:12]}"
    return [m for s in snapshots for m in s["metrics"] if m["name"] == "drift.top1_score.ks" and m["slice"] == name]


@pytest.mark.timeout(1800)  # documents indexed, an fp32 candidate built and evaluated, ~400 searches, 2 shared cores
def test_a_switch_moves_the_scores_reference_raises_no_alarm_and_a_real_shift_still_alerts(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = isolated_settings(kafka_bootstrap, tmp_path, prefix="ixd").model_copy(
        update={
            "monitor_window_events": WINDOW,
            "monitor_window_seconds": 3600.0,  # windows close by count: the test never depends on timing
            "monitor_min_drift_events": WINDOW,
        }
    )
    documents, questions = module_subset("test", 10)
    questions_file = tmp_path / "questions.jsonl"
    questions_file.write_text("".join(json.dumps(q) + "\n" for q in questions))
    in_domain = dev_questions()
    assert len(in_domain) >= 2 * BATCH + WINDOW * 2
    run(ensure_topics(settings))
    worker = WorkerProcess(settings, agents=",".join(AGENTS)).start()
    try:
        run(publish_records(settings, [encode_document(d) for d in documents]))
        _, raw_end = run(offsets(settings, [Topics(settings.namespace).docs_raw]))
        ok, _ = wait_for_stages(settings, [AGENTS], raw_end, 900.0, alive=worker.alive)
        assert ok, f"the worker did not index the documents; log:\n{worker.log_tail()}"
        assert wait_for(lambda: run(load_registry(settings)).production(INDEX_MODEL) is not None, 60.0)
        live = run(load_registry(settings)).production(INDEX_MODEL)
        assert live is not None

        before = asyncio.run(ask_all(settings, in_domain[:BATCH]))
        assert {index_of(r) for r in before} == {live.version} and all(r["status"] == "OK" for r in before)
        result = run_cli(settings, "monitor", "set-reference", "--topic", "inference.responses", "--json")
        assert result.returncode == 0, result.stderr
        assert sorted(json.loads(result.stdout)["samples"]) == [f"responses.scores@{live.version}"]

        fp32 = settings.model_copy(update={"embed_model": "fp32"})
        candidate = run(register_index(settings, IndexSpec("fp32", version_for(fp32)), actor="test"))
        assert candidate.embedder_version != live.embedder_version
        wait_built(settings, candidate.version, worker.alive)
        run(promote(settings, INDEX_MODEL, candidate.version, Stage.QA, actor="test"))
        evaluation = run_cli(
            settings,
            "eval",
            "retrieval",
            str(questions_file),
            "--index",
            candidate.version,
            "--modes",
            "dense",
            "--json",
        )
        assert evaluation.returncode == 0, evaluation.stdout + evaluation.stderr[-2000:]
        run(promote(settings, INDEX_MODEL, candidate.version, Stage.PRODUCTION, actor="test", approved_by="lead"))

        def moved() -> bool:
            reference = run(load_reference(settings))
            return reference is not None and f"responses.scores@{candidate.version}" in reference.samples

        assert wait_for(moved, 600.0, interval=2.0), f"the reference did not follow the switch; {worker.log_tail()}"
        reference = run(load_reference(settings))
        assert reference is not None
        assert sorted(reference.samples) == sorted(f"responses.scores@{v}" for v in (live.version, candidate.version))
        notes = json.loads(reference.description)
        assert f"{INDEX_MODEL}@{candidate.version[:12]}" in notes[f"responses.scores@{candidate.version}"]

        after = asyncio.run(ask_all(settings, in_domain[BATCH : 2 * BATCH]))
        assert {index_of(r) for r in after} == {candidate.version} and all(r["status"] == "OK" for r in after)
        # Every window of the candidate's answers was compared (with its own sample) and none alerted.
        assert wait_for(
            lambda: len(compared(score_snapshots(settings), candidate.version)) >= BATCH // WINDOW - 1, 120.0
        )
        switch_alerts = score_alerts(settings)
        judged = compared(score_snapshots(settings), candidate.version)
        # For the record, not asserted: the same windows against the live index's sample (what the
        # monitor compared them with before scores references followed the index).
        live_sample = reference.samples[f"responses.scores@{live.version}"]
        old_threshold = live_sample.calibrate(WINDOW, draws=300).values["top1_score.ks"]
        scores = [float(r["hits"][0]["score"]) for r in after if r["hits"]]
        windows = [scores[i : i + WINDOW] for i in range(0, len(scores) - WINDOW + 1, WINDOW)]
        old_ks = [ks_statistic(np.asarray(w), np.sort(live_sample.numeric["top1_score"])) for w in windows]
        print(
            json.dumps(
                {
                    "candidate_windows_vs_own_sample": [
                        (round(m["value"], 3), round(m["threshold"], 3)) for m in judged
                    ],
                    "same_windows_vs_live_sample": [(round(v, 3), round(old_threshold, 3)) for v in old_ks],
                }
            )
        )
        assert switch_alerts == [], switch_alerts

        shifted = asyncio.run(ask_all(settings, [OFF_TOPIC[i % len(OFF_TOPIC)] for i in range(3 * WINDOW)]))
        assert {index_of(r) for r in shifted} == {candidate.version}
        assert wait_for(lambda: score_alerts(settings) != [], 120.0), compared(
            score_snapshots(settings), candidate.version
        )[-3:]
        assert {a["slice"] for a in score_alerts(settings)} == {f"{INDEX_MODEL}@{candidate.version[:12]}"}

        run(rollback(settings, INDEX_MODEL, actor="test"))
        assert wait_for(
            lambda: index_of(asyncio.run(ask_all(settings, in_domain[:1]))[0]) == live.version, 120.0, interval=1.0
        )
        windows_before = len(compared(score_snapshots(settings), live.version))
        back = asyncio.run(ask_all(settings, in_domain[2 * BATCH : 2 * BATCH + 2 * WINDOW]))
        assert {index_of(r) for r in back} == {live.version}
        assert wait_for(lambda: len(compared(score_snapshots(settings), live.version)) > windows_before, 120.0)
        assert {a["slice"] for a in score_alerts(settings)} == {f"{INDEX_MODEL}@{candidate.version[:12]}"}
        assert sorted(run(load_reference(settings)).samples) == sorted(reference.samples)  # type: ignore[union-attr]
    finally:
        code = worker.stop()
        assert code == 0, f"worker exit code {code}; log:\n{worker.log_tail()}"
