"""Extractive answer quality on one split, with the retrieval cached so the answerer can be iterated.

What it does:
    1. Builds (or reuses) the in-process index of the stdlib corpus (``bench/out/retrieval-index``,
       shared with bench/retrieval_quality.py) and trains the ranker on the DEV split with its
       out-of-fold abstention calibration, exactly as ``llmops models train-ranker`` does.
    2. Retrieves each question of ``--split`` once as the worker's rag path does (ranked, top 5,
       passages screened) and keeps the documents and the answerability confidence in
       ``bench/out/answer-cache-<split>.pickle``: the answerer runs on them in milliseconds.
    3. Answers every question with :class:`ExtractiveAnswerer` and judges it with
       :func:`streams.evaluation.harness.judge_rag` (correctness by the question's answer pattern,
       citation precision, groundedness, abstention), then prints the summary and, with
       ``--failures N``, N answerable questions judged wrong (for reading by hand).

Tune on dev only; run ``--split test`` to report, never to choose. On dev the ranker and the
answerability model have seen the questions (their out-of-fold figures are in the training
metrics); the answerer's own choices (sentences, spans) are what this measures.

Run:  .venv/bin/python bench/answer_quality.py --split dev [--failures 30] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import pickle
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.evaluation.harness import (  # noqa: E402
    Question,
    collect_candidates,
    judge_rag,
    packaged_questions,
    rag_summary,
    read_questions,
)
from streams.evaluation.local_index import local_index  # noqa: E402
from streams.evaluation.ranker_training import train_with_calibration  # noqa: E402
from streams.index.embed import OnnxEmbedder  # noqa: E402
from streams.index.lexical import terms  # noqa: E402
from streams.index.retrieval import DocumentHit, retrieve  # noqa: E402
from streams.inference.answer import (  # noqa: E402
    Answer,
    ExtractiveAnswerer,
    _code,
    _cut,
    _strip_end,
    abstention,
    check_grounding,
    citations_for,
    evidence_sentences,
)
from streams.inference.requests import InferenceRequest  # noqa: E402
from streams.inference.service import (  # noqa: E402
    InferenceService,
    ModelSet,
    answer_fields,
    assemble_context,
    load_ranker,
)
from streams.ingest.corpus import stdlib_documents  # noqa: E402
from streams.models.lifecycle import ranker_version  # noqa: E402
from streams.models.registry import Registry, Stage  # noqa: E402
from streams.records import now_ms  # noqa: E402
from streams.settings import Settings  # noqa: E402

OUT = ROOT / "bench" / "out"

# --- the learned sentence scorer (an experiment: out of fold on dev it did not beat the shipped heuristic) ---

SENTENCE_FEATURES = (
    "overlap",  # share of the question's terms in the sentence
    "weighted_overlap",  # the same, each term weighted by its rarity among the candidate sentences
    "title_overlap",  # share of the question's terms in the document's title
    "pair_match",  # share of the question's adjacent term pairs that the sentence also holds
    "identifier",  # 1 when an identifier the user typed (a_b, a.b) is in the sentence
    "document_rank",  # 1 / (1 + the document's rank)
    "document_gap",  # the document's ranker score minus the top document's (<= 0)
    "position",  # 1 / (1 + the sentence's place in its passage)
    "fragment",  # 1 when the sentence starts mid-sentence (a chunk boundary cut it)
    "code",  # 1 when the sentence is an interactive example (>>>) or mostly symbols
    "length",  # log(1 + words)
)
_IDENTIFIER = re.compile(r"\b[A-Za-z_][\w]*[_.][\w.]*\w\b")


@dataclass(frozen=True)
class Candidate:
    """One sentence of the evidence that may answer, with where it comes from and its features."""

    n: int  # the passage number it would be cited as
    position: int  # its place in the passage
    rank: int  # its document's rank
    text: str
    features: dict[str, float]


def candidate_sentences(question: str, documents: Sequence[DocumentHit]) -> list[Candidate]:
    """Every sentence of the documents' evidence with its :data:`SENTENCE_FEATURES` (pure)."""
    query = list(dict.fromkeys(terms(question)))
    wanted = set(query)
    pairs = set(itertools.pairwise(query))
    identifiers = {match.lower() for match in _IDENTIFIER.findall(question)}
    top_score = documents[0].score if documents else 0.0
    raw = [
        (n, position, rank, sentence, terms(sentence), title_terms, documents[rank])
        for n, position, rank, sentence, title_terms in evidence_sentences(documents)
    ]
    # Rarity among these sentences: a term every sentence shares (the module name) tells them apart less.
    frequency: dict[str, int] = {}
    for item in raw:
        for term in set(item[4]) & wanted:
            frequency[term] = frequency.get(term, 0) + 1
    weight = {term: math.log(1 + len(raw) / (1 + frequency.get(term, 0))) for term in wanted}
    total = sum(weight.values()) or 1.0
    candidates = []
    for n, position, rank, sentence, words, title_terms, document in raw:
        present = set(words)
        found = wanted & present
        sentence_pairs = set(itertools.pairwise(words))
        features = {
            "overlap": len(found) / max(1, len(wanted)),
            "weighted_overlap": sum(weight[t] for t in found) / total,
            "title_overlap": len(wanted & title_terms) / max(1, len(wanted)),
            "pair_match": len(pairs & sentence_pairs) / len(pairs) if pairs else 0.0,
            "identifier": float(any(i in sentence.lower() for i in identifiers)),
            "document_rank": 1.0 / (1 + rank),
            "document_gap": document.score - top_score,
            "position": 1.0 / (1 + position),
            "fragment": _cut(sentence),
            "code": _code(sentence),
            "length": math.log1p(len(sentence.split())),
        }
        candidates.append(Candidate(n, position, rank, sentence, features))
    return candidates


# A logistic model of "this sentence states the answer" over SENTENCE_FEATURES, fitted on the dev
# split's answerable questions (label: the sentence matches the question's answer pattern) by
# `bench/answer_quality.py --train-sentences`, which prints these weights and its out-of-fold figures.
SENTENCE_WEIGHTS: dict[str, float] = {}  # set by --train-sentences per fold
SENTENCE_BIAS = 0.0


@dataclass(frozen=True)
class LearnedAnswerer:
    """Answers from the evidence's own sentences; abstains below ``abstain_below`` confidence.

    ``confidence`` is the answerability logit of the top document (see
    :class:`streams.models.ranker.Answerability`), the scale the threshold was calibrated on.
    Each sentence of the top documents' evidence is scored by a linear model over
    :data:`SENTENCE_FEATURES`; the answer is the best sentence with the ``following`` ones of its
    passage (the fact often follows the topic), and the best sentence of another document when it
    scores at least ``second_at`` (a logit).
    """

    abstain_below: float
    documents: int = 3
    following: int = 1
    second_at: float = 0.0
    weights: dict[str, float] = field(default_factory=lambda: dict(SENTENCE_WEIGHTS), compare=False)
    bias: float = SENTENCE_BIAS
    name: str = "extractive"
    version: str = "learned-experiment"

    def score(self, candidate: Candidate) -> float:
        return self.bias + sum(w * candidate.features.get(name, 0.0) for name, w in self.weights.items())

    def answer(self, question: str, documents: Sequence[DocumentHit], confidence: float = float("inf")) -> Answer:
        if not documents or confidence < self.abstain_below:
            return abstention(confidence)
        top = list(documents[: self.documents])
        citations, passages = citations_for(top)
        every = candidate_sentences(question, top)
        candidates = [c for c in every if len(terms(c.text)) >= 3]  # shorter ones only complete another
        if not candidates:
            return abstention(confidence)
        ranked = sorted(candidates, key=lambda c: -self.score(c))
        best = ranked[0]
        chosen = [best, *self._following(best, every)]
        second = next((c for c in ranked[1:] if c.rank != best.rank), None)
        if second is not None and self.score(second) >= self.second_at:
            chosen += [second, *self._following(second, every)]
        chosen.sort(key=lambda c: (c.rank, c.n, c.position))
        text = " ".join(f"{_strip_end(c.text)} [{c.n}]." for c in chosen)
        sentences, grounded = check_grounding(text, passages)
        used = {c.n for c in chosen}
        return Answer(text, tuple(c for c in citations if c.n in used), grounded, False, confidence, sentences)

    def _following(self, sentence: Candidate, candidates: Sequence[Candidate]) -> list[Candidate]:
        return [
            c
            for c in candidates
            if c.n == sentence.n and sentence.position < c.position <= sentence.position + self.following
        ]


def retrieved(split: str, max_wrong: float) -> dict[str, Any]:
    """Per question of ``split``: the screened documents and the confidence (cached on disk)."""
    cache = OUT / f"answer-cache-{split}-{max_wrong}.pickle"
    if cache.exists():
        return dict(pickle.loads(cache.read_bytes()))
    settings = Settings()
    embedder = OnnxEmbedder.from_settings(settings)
    store = local_index(settings, list(stdlib_documents()), embedder, OUT / "retrieval-index")
    service = InferenceService(ModelSet(embedder, store))

    async def ask(question: Question, mode: str, top_k: int, explain: bool, task: str) -> dict[str, Any]:
        request = InferenceRequest(question.id, task, question.question, top_k=top_k, explain=explain, retrieval=mode)
        response, _ = await service.answer(request, now_ms())
        return response

    import asyncio

    candidates = OUT / "answer-cache-dev-candidates.pickle"
    if candidates.exists():
        dev_sets = pickle.loads(candidates.read_bytes())
    else:
        dev_sets = asyncio.run(collect_candidates(read_questions(packaged_questions("dev")), ask))
        candidates.write_bytes(pickle.dumps(dev_sets))
    training = train_with_calibration(dev_sets, max_wrong_abstentions=max_wrong)
    version = ranker_version(
        settings.ranker_name, training.trained.onnx, embedder.version, training.metrics, actor="bench", note="bench"
    )
    ranker = load_ranker(Registry([replace(version, stage=Stage.PRODUCTION)]), None, embedder.version)
    assert ranker is not None
    rows = []
    for question in read_questions(packaged_questions(split)):
        vector = embedder.embed([question.question])[0].tolist()
        found = retrieve(store, vector, question.question, top_k=5, tenant=None, ranker=ranker.head)
        documents, _ = service.screen_documents(found.documents)
        rows.append((question, documents, ranker.confidence(documents)))
    result = {"rows": rows, "abstain_below": ranker.abstain_below, "training": training.metrics}
    OUT.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(result))
    return result


def judge_all(cached: dict[str, Any], answerer: Any) -> list[tuple[Any, dict[str, Any]]]:
    judged = []
    for question, documents, confidence in cached["rows"]:
        answer = answerer.answer(question.question, documents, confidence)
        response = {
            **answer_fields(answer),
            "context": assemble_context([hit for doc in documents for hit in doc.evidence]),
        }
        judged.append((judge_rag(question, response, 0.0), response))
    return judged


def fit_sentences(rows: list[tuple[Any, Any]]) -> tuple[dict[str, float], float]:
    """A logistic model over SENTENCE_FEATURES in raw feature units: (weights, bias)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x = np.asarray([[c.features[name] for name in SENTENCE_FEATURES] for c, _ in rows], dtype=np.float64)
    y = np.asarray([label for _, label in rows], dtype=np.int64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-6] = 1.0
    model = LogisticRegression(C=1.0, max_iter=5000).fit((x - mean) / scale, y)
    weights = model.coef_[0] / scale
    bias = float(model.intercept_[0] - np.sum(model.coef_[0] * mean / scale))
    return {name: round(float(w), 4) for name, w in zip(SENTENCE_FEATURES, weights, strict=True)}, round(bias, 4)


def labelled_sentences(cached: dict[str, Any], answerer: LearnedAnswerer) -> dict[str, list[tuple[Any, bool]]]:
    """Per answerable question: its candidate sentences, each labelled by the question's answer pattern."""
    rows = {}
    for question, documents, _ in cached["rows"]:
        if question.unanswerable or not question.answer_pattern:
            continue
        pattern = re.compile(question.answer_pattern, re.IGNORECASE)
        candidates = candidate_sentences(question.question, documents[: answerer.documents])
        rows[question.id] = [(c, bool(pattern.search(c.text))) for c in candidates]
    return rows


def train_sentences(cached: dict[str, Any], answerer: LearnedAnswerer, folds: int = 5) -> dict[str, Any]:
    """Out-of-fold answers on ``cached`` (each fold scored by weights fitted on the others), then all-dev weights."""
    labelled = labelled_sentences(cached, answerer)

    def fold(question_id: str) -> int:
        return sum(question_id.encode()) % folds

    judged = []
    for k in range(folds):
        train = [row for qid, rows in labelled.items() if fold(qid) != k for row in rows]
        weights, bias = fit_sentences(train)
        held = {**cached, "rows": [row for row in cached["rows"] if fold(row[0].id) == k]}
        judged += judge_all(held, replace(answerer, weights=weights, bias=bias))
    summary = rag_summary([result for result, _ in judged])
    summary.pop("latency_ms")
    weights, bias = fit_sentences([row for rows in labelled.values() for row in rows])
    return {"out_of_fold": summary, "weights": weights, "bias": bias}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--failures", type=int, default=0, help="print this many wrong answers")
    parser.add_argument(
        "--max-wrong-abstentions", type=float, default=Settings().rag_max_wrong_abstentions, help="calibration"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="an ExtractiveAnswerer parameter (tuning)"
    )
    parser.add_argument(
        "--train-sentences", action="store_true", help="fit the sentence scorer on dev: out-of-fold figures, weights"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cached = retrieved(args.split, args.max_wrong_abstentions)
    answerer = ExtractiveAnswerer(cached["abstain_below"])
    for assignment in args.set:
        name, _, value = assignment.partition("=")
        answerer = replace(answerer, **{name: type(getattr(answerer, name))(value)})
    if args.train_sentences:
        learned = LearnedAnswerer(cached["abstain_below"])
        for assignment in args.set:
            name, _, value = assignment.partition("=")
            learned = replace(learned, **{name: type(getattr(learned, name))(value)})
        print(json.dumps(train_sentences(cached, learned), indent=2))
        return
    judged = judge_all(cached, answerer)
    summary = rag_summary([result for result, _ in judged])
    summary.pop("latency_ms")
    report = {"split": args.split, "answerer": repr(answerer), "summary": summary}
    if not args.json:
        report["dev_training"] = cached["training"]
    print(json.dumps(report, indent=2))
    shown = 0
    for result, response in judged:
        if shown >= args.failures:
            break
        if result.question.unanswerable or result.correct:
            continue
        shown += 1
        question = result.question
        print(f"\n--- {question.id} [{question.kind}] {question.question}")
        print(f"    pattern: {question.answer_pattern}   relevant: {sorted(question.relevant)}")
        print(f"    abstained: {result.abstained}  citation precision: {result.citation_precision}")
        print(f"    answer: {response['answer'][:600]}")
        print(f"    cited: {[c['doc_id'] for c in response['citations']]}")


if __name__ == "__main__":
    main()
