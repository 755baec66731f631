"""Retrieval and answer metrics with bootstrap confidence intervals (pure functions).

Definitions (per question, then averaged; ``ranked`` is the list of returned document ids):
    - recall@k: share of the question's relevant documents found in the top k;
    - MRR (@10 unless said): 1 / rank of the first relevant document, 0 when none in the top 10;
    - nDCG@10: binary-gain DCG of the top 10 over the ideal DCG.
Intervals are percentile bootstraps over questions (2,000 resamples, fixed seed), so two systems
evaluated on the same questions can be compared by their intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RECALL_AT = (1, 5, 10)


def recall_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def reciprocal_rank(ranked: Sequence[str], relevant: set[str], k: int = 10) -> float:
    for rank, doc_id in enumerate(ranked[:k], start=1):
        if doc_id in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at(ranked: Sequence[str], relevant: set[str], k: int = 10) -> float:
    dcg = sum(1.0 / math.log2(rank + 1) for rank, doc_id in enumerate(ranked[:k], start=1) if doc_id in relevant)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(k, len(relevant)) + 1))
    return dcg / ideal if ideal else 0.0


def per_question(ranked: Sequence[str], relevant: set[str]) -> dict[str, float]:
    """Every retrieval metric for one question."""
    scores = {f"recall@{k}": recall_at(ranked, relevant, k) for k in RECALL_AT}
    scores["mrr@5"] = reciprocal_rank(ranked, relevant, 5)
    scores["mrr"] = reciprocal_rank(ranked, relevant, 10)
    scores["ndcg@10"] = ndcg_at(ranked, relevant, 10)
    return scores


@dataclass(frozen=True)
class Estimate:
    """A mean over questions with its 95% bootstrap interval."""

    mean: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"mean": round(self.mean, 4), "low": round(self.low, 4), "high": round(self.high, 4)}

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def bootstrap(values: Sequence[float], resamples: int = 2000, seed: int = 0) -> Estimate:
    """Mean of ``values`` and its 95% percentile-bootstrap interval."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Estimate(float(data.mean()), float(low), float(high))


def summarize(rows: Sequence[dict[str, float]]) -> dict[str, Estimate]:
    """Per-metric estimates over per-question metric rows (all rows have the same keys)."""
    if not rows:
        return {}
    return {name: bootstrap([row[name] for row in rows]) for name in rows[0]}


def paired_difference(
    a: Sequence[dict[str, float]], b: Sequence[dict[str, float]], metric: str, resamples: int = 2000, seed: int = 0
) -> Estimate:
    """Mean of (a - b) on ``metric`` over the same questions, with its bootstrap interval."""
    return bootstrap([x[metric] - y[metric] for x, y in zip(a, b, strict=True)], resamples, seed)


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def threshold_for_false_rate(negatives: Sequence[float], max_rate: float) -> float:
    """The lowest threshold at which at most ``max_rate`` of ``negatives`` fall below it.

    Used for abstention: ``negatives`` are the confidences of answerable dev questions, and a
    question is abstained on when its confidence is below the threshold.
    """
    ordered = sorted(negatives)
    allowed = math.floor(max_rate * len(ordered))
    return ordered[allowed] if allowed < len(ordered) else float("inf")
