"""Evaluate retrieval and rag answers on a labelled question set, through any way of asking.

Why this exists:
    ``llmops eval retrieval|rag`` (through Kafka, against a running worker), the ranker's
    training and ``bench/retrieval_quality.py`` (in process, on an index of its own) all score
    the same way: one :class:`Asker` sends a question in a retrieval mode and gets the response
    record back (the same dict the worker produces). Everything else here is pure.

Question files (JSONL, see ``streams/evaluation/data/README.md``)::

    {"id": "q-1", "question": "...", "relevant": ["stdlib:shutil.copytree"], "answer_pattern": "ignore"}
    {"id": "q-2", "question": "...", "relevant": [], "unanswerable": true}

Usage:
    >>> questions = read_questions(Path("questions_dev.jsonl"))
    >>> report = await evaluate_retrieval(questions, asker, modes=("bm25", "dense", "hybrid", "ranked"))
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streams.evaluation.metrics import Estimate, bootstrap, per_question, percentile, summarize
from streams.index.retrieval import FEATURES

PACKAGED = Path(__file__).parent / "data"
SYSTEM_NAMES = {"bm25": "BM25 alone", "dense": "dense alone", "hybrid": "hybrid (RRF)", "ranked": "hybrid + ranker"}

# (question, mode, top_k, explain, task) -> the response record
Asker = Callable[["Question", str, int, bool, str], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    relevant: frozenset[str]
    answer_pattern: str | None = None
    unanswerable: bool = False
    tenant: str | None = None
    kind: str = ""


def read_questions(path: Path) -> list[Question]:
    """Questions from a JSONL file; a malformed line raises ValueError naming its line number."""
    questions = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                question = Question(
                    id=str(row.get("id") or f"line-{number}"),
                    question=row["question"],
                    relevant=frozenset(row.get("relevant") or ()),
                    answer_pattern=row.get("answer_pattern"),
                    unanswerable=bool(row.get("unanswerable", False)),
                    tenant=row.get("tenant"),
                    kind=row.get("kind", ""),
                )
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
                raise ValueError(
                    f"{path}:{number}: not a question row ({error!r}); see --help for the format"
                ) from None
            if not question.unanswerable and not question.relevant:
                raise ValueError(f"{path}:{number}: an answerable question needs 'relevant' document ids")
            questions.append(question)
    return questions


def module_subset(split: str, questions: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(documents, question rows): the first ``questions`` answerable questions of a packaged split and
    every stdlib document of the top-level modules their relevant documents are in.

    A small labelled set whose distractors are hard (the same modules), for tests and benches that
    cannot index the whole corpus on a shared machine.
    """
    from streams.ingest.corpus import stdlib_documents

    rows = [json.loads(line) for line in packaged_questions(split).read_text().splitlines() if line.strip()]
    chosen = [row for row in rows if row.get("relevant")][:questions]
    documents = list(stdlib_documents())
    by_id = {d["id"]: d for d in documents}
    modules = {by_id[r]["metadata"]["top_level"] for row in chosen for r in row["relevant"] if r in by_id}
    return [d for d in documents if d["metadata"]["top_level"] in modules], chosen


def packaged_questions(split: str) -> Path:
    """The labelled set shipped with the project: ``dev`` (tune on it) or ``test`` (only report it)."""
    return PACKAGED / f"questions_{split}.jsonl"


@dataclass
class SystemResult:
    """One retrieval system on one question set."""

    mode: str
    rows: list[dict[str, float]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Estimate]:
        return summarize(self.rows)


def ranked_ids(response: dict[str, Any]) -> list[str]:
    """Distinct document ids of a search response, best first."""
    seen: dict[str, None] = {}
    for hit in response.get("hits", []):
        seen.setdefault(hit["doc_id"], None)
    return list(seen)


async def evaluate_retrieval(
    questions: Sequence[Question],
    ask: Asker,
    modes: Iterable[str] = ("bm25", "dense", "hybrid", "ranked"),
    top_k: int = 10,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, SystemResult]:
    """Every mode on every answerable question; metrics per question and latency per request."""
    answerable = [q for q in questions if not q.unanswerable]
    modes = list(modes)
    results = {mode: SystemResult(mode) for mode in modes}
    for done, question in enumerate(answerable, start=1):
        for mode in modes:
            started = time.perf_counter()
            response = await ask(question, mode, top_k, False, "search")
            results[mode].latencies_ms.append((time.perf_counter() - started) * 1000)
            check_ok(response)
            results[mode].rows.append(per_question(ranked_ids(response), set(question.relevant)))
        if progress:
            progress(done, len(answerable))
    return results


def check_ok(response: dict[str, Any]) -> None:
    if response.get("status") != "OK":
        raise RuntimeError(f"the worker answered {response.get('status')}: {response.get('error')}")


# --- ranker training data --------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateSet:
    """One question's candidate documents: ids, features [docs, FEATURES], relevance labels."""

    question: Question
    doc_ids: list[str]
    features: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]


async def collect_candidates(
    questions: Sequence[Question], ask: Asker, progress: Callable[[int, int], None] | None = None
) -> list[CandidateSet]:
    """Every question's candidates with features (``ranked`` mode, explain, 50 documents)."""
    sets = []
    for done, question in enumerate(questions, start=1):
        response = await ask(question, "ranked", 50, True, "search")
        check_ok(response)
        hits = response["hits"]
        matrix = np.asarray([[hit["features"].get(name, 0.0) for name in FEATURES] for hit in hits], dtype=np.float32)
        labels = np.asarray([int(hit["doc_id"] in question.relevant) for hit in hits], dtype=np.int64)
        sets.append(CandidateSet(question, [hit["doc_id"] for hit in hits], matrix.reshape(-1, len(FEATURES)), labels))
        if progress:
            progress(done, len(questions))
    return sets


def rerank_metrics(
    sets: Sequence[CandidateSet], score: Callable[[npt.NDArray[np.float32]], Any]
) -> list[dict[str, float]]:
    """Per-question metrics when ``score`` orders each question's candidates (answerable ones only)."""
    rows = []
    for item in sets:
        if item.question.unanswerable:
            continue
        if len(item.doc_ids) == 0:
            rows.append(per_question([], set(item.question.relevant)))
            continue
        order = np.argsort(-np.asarray(score(item.features)), kind="stable")
        rows.append(per_question([item.doc_ids[i] for i in order], set(item.question.relevant)))
    return rows


# --- rag answers -----------------------------------------------------------------------------


@dataclass
class RagResult:
    """Per-question outcome of a rag answer."""

    question: Question
    answer: str
    abstained: bool
    grounded: str | None
    correct: bool | None  # None for unanswerable questions
    citation_precision: float | None  # None when nothing was cited
    latency_ms: float


def cited_passages(response: dict[str, Any]) -> list[str]:
    """The full text of each cited passage, read from the numbered context of the response."""
    context = response.get("context") or ""
    by_chunk = {}
    for block in context.split("\n\n["):
        header, _, text = block.partition("\n")
        match = re.search(r"\(([^()]+)\)\s*$", header)
        if match:
            by_chunk[match.group(1)] = text
    return [by_chunk.get(c["chunk_id"], "") for c in response.get("citations", [])]


def judge_rag(question: Question, response: dict[str, Any], latency_ms: float) -> RagResult:
    answer = response.get("answer") or ""
    abstained = bool(response.get("abstained"))
    correct = None
    precision = None
    if not question.unanswerable:
        pattern = re.compile(question.answer_pattern or "(?!)", re.IGNORECASE)
        correct = not abstained and bool(pattern.search(answer))
        citations = response.get("citations", [])
        if citations and not abstained:
            passages = cited_passages(response)
            good = [
                c["doc_id"] in question.relevant or bool(pattern.search(text))
                for c, text in zip(citations, passages, strict=True)
            ]
            precision = sum(good) / len(good)
    return RagResult(question, answer, abstained, response.get("grounded"), correct, precision, latency_ms)


async def evaluate_rag(
    questions: Sequence[Question], ask: Asker, progress: Callable[[int, int], None] | None = None
) -> list[RagResult]:
    results = []
    for done, question in enumerate(questions, start=1):
        started = time.perf_counter()
        response = await ask(question, "ranked", 5, False, "rag")
        latency = (time.perf_counter() - started) * 1000
        check_ok(response)
        results.append(judge_rag(question, response, latency))
        if progress:
            progress(done, len(questions))
    return results


def rag_summary(results: Sequence[RagResult]) -> dict[str, Any]:
    """Answer correctness, citation precision, groundedness and abstention on one set."""
    answerable = [r for r in results if not r.question.unanswerable]
    unanswerable = [r for r in results if r.question.unanswerable]
    precisions = [r.citation_precision for r in answerable if r.citation_precision is not None]
    answered = [r for r in results if not r.abstained]
    abstained_right = sum(r.abstained for r in unanswerable)
    abstained_wrong = sum(r.abstained for r in answerable)
    abstentions = abstained_right + abstained_wrong
    return {
        "questions": len(results),
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "correctness": bootstrap([float(bool(r.correct)) for r in answerable]).as_dict(),
        "citation_precision": bootstrap(precisions).as_dict(),
        "grounded_true": round(sum(r.grounded == "true" for r in answered) / max(1, len(answered)), 4),
        "abstention_recall": round(abstained_right / max(1, len(unanswerable)), 4),
        "abstention_precision": round(abstained_right / abstentions, 4) if abstentions else None,
        "wrong_abstention_rate": round(abstained_wrong / max(1, len(answerable)), 4),
        "latency_ms": {
            "p50": round(percentile([r.latency_ms for r in results], 50), 2),
            "p99": round(percentile([r.latency_ms for r in results], 99), 2),
        },
    }


def retrieval_table(results: dict[str, SystemResult]) -> list[dict[str, Any]]:
    """One JSON-ready row per system: each metric's mean and 95% interval, and latency."""
    table = []
    for mode, result in results.items():
        summary = result.summary()
        table.append(
            {
                "system": SYSTEM_NAMES.get(mode, mode),
                "mode": mode,
                "questions": len(result.rows),
                **{name: estimate.as_dict() for name, estimate in summary.items()},
                "latency_ms": {
                    "p50": round(percentile(result.latencies_ms, 50), 2),
                    "p99": round(percentile(result.latencies_ms, 99), 2),
                },
            }
        )
    return table


def index_gate_metrics(
    candidate: SystemResult, production: SystemResult, metric: str
) -> tuple[dict[str, float], dict[str, float]]:
    """(candidate's means with the paired interval of candidate - production on ``metric``, production's means).

    Both were asked the same questions in the same order, so the difference is paired per question
    (what :class:`streams.models.indexes.IndexGate` judges).
    """
    from streams.evaluation.metrics import paired_difference

    ours = {name: estimate.mean for name, estimate in candidate.summary().items()}
    theirs = {name: estimate.mean for name, estimate in production.summary().items()}
    difference = paired_difference(candidate.rows, production.rows, metric)
    ours.update(
        {
            f"{metric}_diff": difference.mean,
            f"{metric}_diff_low": difference.low,
            f"{metric}_diff_high": difference.high,
        }
    )
    return ours, theirs
