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
import json
import pickle
import sys
from dataclasses import replace
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
from streams.index.retrieval import retrieve  # noqa: E402
from streams.inference.answer import ExtractiveAnswerer  # noqa: E402
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


def judge_all(cached: dict[str, Any], answerer: ExtractiveAnswerer) -> list[tuple[Any, dict[str, Any]]]:
    judged = []
    for question, documents, confidence in cached["rows"]:
        answer = answerer.answer(question.question, documents, confidence)
        response = {
            **answer_fields(answer),
            "context": assemble_context([hit for doc in documents for hit in doc.evidence]),
        }
        judged.append((judge_rag(question, response, 0.0), response))
    return judged


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
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cached = retrieved(args.split, args.max_wrong_abstentions)
    answerer = ExtractiveAnswerer(cached["abstain_below"])
    for assignment in args.set:
        name, _, value = assignment.partition("=")
        answerer = replace(answerer, **{name: type(getattr(answerer, name))(value)})
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
