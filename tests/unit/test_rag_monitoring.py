"""rag quality per answering version: abstention and groundedness alert, per version slice."""

from __future__ import annotations

from typing import Any

from streams.monitor.answers import rag_metrics
from streams.monitor.config import MonitorConfig

EMBEDDER = {"name": "all-MiniLM-L6-v2", "version": "e" * 64, "stage": "production"}


def rag(ranker: str, abstained: bool = False, grounded: str = "true", total_ms: float = 40.0) -> dict[str, Any]:
    return {
        "task": "rag",
        "status": "OK",
        "abstained": abstained,
        "answer": "Not found in the indexed documents." if abstained else "It copies a tree [1].",
        "grounded": "true" if abstained else grounded,
        "latency": {"total_ms": total_ms},
        "models": [
            EMBEDDER,
            {"name": "retrieval-ranker", "version": ranker * 64, "stage": "production"},
            {"name": "extractive", "version": "1", "stage": "builtin"},
        ],
    }


def by_name(metrics: list, name: str) -> dict[str, Any]:
    return {m.slice: m for m in metrics if m.name == name}


def test_each_answering_version_is_its_own_slice_and_a_bad_one_breaches() -> None:
    config = MonitorConfig(min_slice_events=10, max_abstention_rate=0.5, min_grounded_rate=0.8)
    good = [rag("a") for _ in range(12)] + [rag("a", abstained=True) for _ in range(2)]
    bad = [rag("b", abstained=True) for _ in range(8)] + [rag("b", grounded="partial") for _ in range(6)]
    bad += [rag("b") for _ in range(6)]
    metrics = rag_metrics(good + bad + [{"task": "search", "status": "OK"}], config)
    abstention, grounded = by_name(metrics, "rag.abstention_rate"), by_name(metrics, "rag.grounded_rate")
    slice_a, slice_b = "retrieval-ranker@aaaaaaaaaaaa+extractive@1", "retrieval-ranker@bbbbbbbbbbbb+extractive@1"
    assert set(abstention) == {slice_a, slice_b}
    assert abstention[slice_a].value == 2 / 14 and not abstention[slice_a].breached
    assert abstention[slice_b].value == 8 / 20 and not abstention[slice_b].breached
    assert grounded[slice_a].value == 1.0 and not grounded[slice_a].breached
    assert grounded[slice_b].value == 0.5 and grounded[slice_b].breached  # 6 of 12 answers partly unsupported
    assert by_name(metrics, "rag.latency_p99_ms")[slice_a].value == 40.0


def test_a_slice_with_too_few_answers_reports_but_never_alerts() -> None:
    metrics = rag_metrics([rag("c", abstained=True) for _ in range(3)], MonitorConfig(min_slice_events=10))
    (abstention,) = by_name(metrics, "rag.abstention_rate").values()
    assert abstention.value == 1.0 and abstention.threshold is None and not abstention.breached
