"""Drift references per index version: scores are compared only with the reference of the index that answered."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from streams.index.spec import INDEX_MODEL
from streams.inference.service import base_response
from streams.monitor.config import MonitorConfig
from streams.monitor.detectors import Reference, with_reference_id
from streams.monitor.drift import ReferenceSample
from streams.monitor.index_versions import (
    REFERENCE_CLIENT,
    bind_unversioned,
    index_version_of,
    needs_sample,
    sample_name_for,
)
from streams.monitor.monitor import Monitor
from streams.monitor.reference import responses_samples

OLD, NEW = "a" * 64, "b" * 64
CONFIG = MonitorConfig(window_events=40, min_drift_events=20, calibration_draws=300, alert_after=2)


class WordCounter:
    def count_unknown_batch(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        return [(len(t.split()), 0) for t in texts]


def answered(index: str | None, score: float, client_id: str = "c") -> dict[str, Any]:
    record = base_response(f"r{score}", client_id, "search", "OK")
    record["hits"] = [{"chunk_id": "d#0", "doc_id": "d", "score": score, "text": "t", "title": None, "source": None}]
    record["models"] = [{"name": "all-MiniLM-L6-v2", "version": "e" * 64, "stage": "production"}]
    if index is not None:
        record["models"].append({"name": INDEX_MODEL, "version": index, "stage": "production"})
    return record


def scores(n: int, mean: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, 0.02, n)


def reference_of(samples: dict[str, ReferenceSample]) -> Reference:
    return with_reference_id(Reference("", "", samples), "test")


def score_sample(mean: float, seed: int = 0) -> ReferenceSample:
    return ReferenceSample(numeric={"top1_score": scores(300, mean, seed)})


def test_a_reference_from_responses_keeps_scores_per_index_version_that_answered() -> None:
    responses = [answered(OLD, 0.5)] * 3 + [answered(NEW, 0.9)] * 2 + [answered(None, 0.1)]

    samples = responses_samples(responses)

    assert index_version_of(responses[0]) == OLD and index_version_of(responses[-1]) is None
    assert sorted(samples) == ["responses.scores", f"responses.scores@{OLD}", f"responses.scores@{NEW}"]
    assert samples[f"responses.scores@{NEW}"].numeric["top1_score"].tolist() == [0.9, 0.9]


def test_windows_are_compared_only_with_the_sample_of_their_index_version() -> None:
    versioned = reference_of({f"responses.scores@{OLD}": score_sample(0.5)})
    legacy = reference_of({"responses.scores": score_sample(0.5)})

    assert sample_name_for(versioned, "responses.scores", OLD) == f"responses.scores@{OLD}"
    assert sample_name_for(versioned, "responses.scores", NEW) is None
    assert sample_name_for(versioned, "responses.scores", None) is None
    assert sample_name_for(legacy, "responses.scores", NEW) == "responses.scores"  # set before index versions
    both = reference_of({"responses.scores": score_sample(0.5), f"responses.scores@{OLD}": score_sample(0.5)})
    assert sample_name_for(both, "responses.scores", NEW) is None  # once versioned, never another's values


def test_a_switch_needs_a_sample_of_the_new_version_and_binds_a_legacy_one_to_the_old() -> None:
    legacy = reference_of({"responses.scores": score_sample(0.5), "requests": ReferenceSample(numeric={})})

    assert needs_sample(legacy, NEW)
    assert not needs_sample(reference_of({f"responses.scores@{NEW}": score_sample(0.5)}), NEW)
    assert not needs_sample(reference_of({"requests": ReferenceSample(numeric={})}), NEW)  # no scores reference
    assert not needs_sample(None, NEW)
    assert list(bind_unversioned(legacy, OLD)) == [f"responses.scores@{OLD}"]
    assert bind_unversioned(legacy, None) == {}


def run_windows(monitor: Monitor, windows: list[tuple[str, float]]) -> list[tuple[str, dict[str, Any]]]:
    outputs = []
    for seed, (index, mean) in enumerate(windows, start=1):
        for score in scores(CONFIG.window_events, mean, seed):
            outputs += monitor.on_response(answered(index, float(score)), 1)
    return outputs


def drift_alerts(outputs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [r for kind, r in outputs if kind == "alert" and r["metric"].startswith("drift.top1_score")]


def test_after_a_switch_the_new_index_is_judged_by_its_own_reference_and_a_shift_still_alerts() -> None:
    # The new index scores around 0.9 where the old one scored 0.5: against the old reference
    # every window would drift. Against its own, only a genuine shift (0.9 -> 0.7) does.
    reference = reference_of(
        {f"responses.scores@{OLD}": score_sample(0.5), f"responses.scores@{NEW}": score_sample(0.9)}
    )
    monitor = Monitor(CONFIG, WordCounter(), reference)

    quiet = run_windows(monitor, [(OLD, 0.5), (OLD, 0.5), (NEW, 0.9), (NEW, 0.9), (NEW, 0.9)])
    shifted = run_windows(monitor, [(NEW, 0.7), (NEW, 0.7)])

    assert drift_alerts(quiet) == []
    snapshots = [r for kind, r in quiet if kind == "snapshot"]
    ks = [m for s in snapshots for m in s["metrics"] if m["name"] == "drift.top1_score.ks"]
    assert [m["slice"] for m in ks] == [f"{INDEX_MODEL}@{OLD[:12]}"] * 2 + [f"{INDEX_MODEL}@{NEW[:12]}"] * 3
    fired = drift_alerts(shifted)
    assert fired and {a["slice"] for a in fired} == {f"{INDEX_MODEL}@{NEW[:12]}"}


def test_without_a_sample_of_the_answering_version_scores_are_not_compared() -> None:
    monitor = Monitor(CONFIG, WordCounter(), reference_of({f"responses.scores@{OLD}": score_sample(0.5)}))

    outputs = run_windows(monitor, [(NEW, 0.9), (NEW, 0.9), (NEW, 0.9)])

    snapshots = [r for kind, r in outputs if kind == "snapshot"]
    assert len(snapshots) == 3 and drift_alerts(outputs) == []
    assert not [m for s in snapshots for m in s["metrics"] if m["name"].startswith("drift.top1_score")]


def test_the_monitors_own_questions_at_a_switch_are_not_counted() -> None:
    monitor = Monitor(CONFIG, WordCounter(), None)

    for n in range(CONFIG.window_events * 2):
        assert monitor.on_response(answered(NEW, 0.9, client_id=REFERENCE_CLIENT), 1) == []
        assert monitor.on_request({"client_id": REFERENCE_CLIENT, "text": f"question {n}"}, 1) == []

    assert monitor.flush() == []  # nothing was windowed
