"""Train a ranker version on the dev split, with cross-validated metrics and a calibrated abstention threshold.

Why this exists:
    ``llmops models train-ranker`` (through Kafka) and ``bench/retrieval_quality.py`` (in
    process) train the same way. The candidates of every dev question (features from the
    worker's own retrieval) are split into folds by question; each fold is scored by a ranker
    trained on the others, so the reported metrics and the abstention threshold come from
    questions the scoring model did not see. The final ranker is then fitted on all of dev.

Abstention:
    An answerability model (:class:`streams.models.ranker.Answerability`, trained on the
    out-of-fold top documents of answerable and unanswerable dev questions) gives each question a
    logit; the answerer abstains below ``abstain_below``, the lowest threshold that abstains on at
    most ``max_wrong_abstentions`` of the answerable dev questions (out-of-fold logits again).
    Its recall on unanswerable dev questions is reported beside it; the test split is never used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streams.evaluation.harness import CandidateSet, rerank_metrics
from streams.evaluation.metrics import summarize, threshold_for_false_rate
from streams.index.retrieval import FEATURES, RrfRanker
from streams.models.lifecycle import load_registry, promote, ranker_version, register_version, write_events
from streams.models.ranker import Answerability, OnnxRanker, TrainedRanker, train_answerability, train_ranker
from streams.models.registry import ModelVersion, RetrievalGate, Stage
from streams.records import now_ms
from streams.settings import Settings

FOLDS = 5


@dataclass(frozen=True)
class RankerTraining:
    trained: TrainedRanker
    answerability: Answerability
    abstain_below: float
    metrics: dict[str, float]  # cross-validated on dev; "abstain_below" included
    baseline: dict[str, float]  # the same questions ordered by RRF


def _fold(question_id: str) -> int:
    return sum(question_id.encode()) % FOLDS


def _groups(sets: Sequence[CandidateSet]) -> list[tuple[Any, Any]]:
    return [(s.features, s.labels) for s in sets if not s.question.unanswerable and len(s.doc_ids)]


def _means(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    return {name: round(estimate.mean, 4) for name, estimate in summarize(rows).items()}


def train_with_calibration(
    sets: Sequence[CandidateSet], *, max_wrong_abstentions: float = 0.05, regularization: float = 1.0
) -> RankerTraining:
    """Out-of-fold metrics and threshold, then the ranker fitted on every dev question."""
    top_rows: dict[str, dict[str, float]] = {}  # question id -> its out-of-fold top document's features
    oof_rows: list[dict[str, float]] = []
    for fold in range(FOLDS):
        train = [s for s in sets if _fold(s.question.id) != fold]
        held = [s for s in sets if _fold(s.question.id) == fold]
        if not held:
            continue
        model = OnnxRanker(train_ranker(_groups(train), FEATURES, regularization).onnx, name="fold", version=str(fold))

        def score(features: Any, model: OnnxRanker = model) -> Any:
            return model.score(features)[0]

        oof_rows += rerank_metrics(held, score)
        for item in held:
            top_rows[item.question.id] = top_document(item, score)
    questions = [s.question for s in sets]
    logits = answerability_out_of_fold(questions, top_rows)
    answerable = [logits[q.id] for q in questions if not q.unanswerable]
    unanswerable = [logits[q.id] for q in questions if q.unanswerable]
    threshold = threshold_for_false_rate(answerable, max_wrong_abstentions)
    metrics = _means(oof_rows)
    metrics["abstain_below"] = round(threshold, 6)
    metrics["dev_abstention_recall"] = (
        round(float(np.mean([t < threshold for t in unanswerable])), 4) if unanswerable else 0.0
    )
    metrics["dev_wrong_abstentions"] = round(float(np.mean([t < threshold for t in answerable])), 4)
    metrics["dev_questions"] = float(len(sets))
    rrf = RrfRanker()
    baseline = _means(rerank_metrics(sets, lambda features: rrf.score(features)[0]))
    trained = train_ranker(_groups(sets), FEATURES, regularization)
    answerability = train_answerability([top_rows[q.id] for q in questions], [not q.unanswerable for q in questions])
    metrics.update(answerability.to_metrics())
    return RankerTraining(trained, answerability, threshold, metrics, baseline)


def top_document(item: CandidateSet, score: Any) -> dict[str, float]:
    """The features of the document ``score`` puts first, with its score (all zeros when none)."""
    if not len(item.doc_ids):
        return {"score": -10.0}
    scores = np.asarray(score(item.features))
    best = int(np.argmax(scores))
    return {"score": float(scores[best]), **dict(zip(FEATURES, map(float, item.features[best]), strict=True))}


def answerability_out_of_fold(questions: Sequence[Any], rows: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each question's answerability logit from a model that did not see it."""
    logits = {}
    for fold in range(FOLDS):
        train = [q for q in questions if _fold(q.id) != fold]
        model = train_answerability([rows[q.id] for q in train], [not q.unanswerable for q in train])
        for question in questions:
            if _fold(question.id) == fold:
                logits[question.id] = model.logit(rows[question.id])
    return logits


def production_metrics(sets: Sequence[CandidateSet], production: ModelVersion | None) -> dict[str, float]:
    """Production's metrics on the same questions: its ranker re-scoring the same candidates, or RRF."""
    if production is None or not production.artifact:
        rrf = RrfRanker()
        return _means(rerank_metrics(sets, lambda features: rrf.score(features)[0]))
    model = OnnxRanker(production.artifact, name=production.name, version=production.version)
    return _means(rerank_metrics(sets, lambda features: model.score(features)[0]))


async def train_and_register_ranker(
    settings: Settings,
    sets: Sequence[CandidateSet],
    *,
    name: str,
    embedder_version: str,
    actor: str,
    source: str,
) -> tuple[ModelVersion, RankerTraining, dict[str, float]]:
    """Train on ``sets``, register the version, move it to qa and record its gate against production.

    Returns the version as evaluated, the training, and production's metrics on the same questions.
    Promotion to production stays a person's decision (``llmops models promote ... --approved-by``).
    """
    training = train_with_calibration(sets, max_wrong_abstentions=settings.rag_max_wrong_abstentions)
    registry = await load_registry(settings)
    current = registry.production(name)
    against = production_metrics(sets, current)
    candidate = ranker_version(
        name,
        training.trained.onnx,
        embedder_version,
        training.metrics,
        actor=actor,
        note=f"trained by llmops models train-ranker on {source}",
    )
    registered = await register_version(settings, candidate)
    await promote(settings, name, registered.version, Stage.QA, actor=actor)
    registry = await load_registry(settings)
    gate = RetrievalGate(min_recall_at_5=settings.qa_min_recall_at_5, max_drop=settings.qa_max_drop)
    events = registry.record_evaluation(
        name, registered.version, training.metrics, gate, actor=actor, now_ms=now_ms(), against=against
    )
    evaluated = (await write_events(settings, events, registry))[-1]
    return evaluated, training, against
