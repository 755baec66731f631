"""Retrieval and answer quality on the labelled stdlib questions: four systems and two baselines, one run.

What it does:
    1. Indexes the whole stdlib corpus in process, through the worker's own ingest, embed and
       index code, into a Milvus Lite file of its own (kept under bench/out/ and reused).
    2. Trains the ranker on the DEV split (5-fold cross-validated metrics, abstention threshold
       calibrated out of fold) exactly as ``llmops models train-ranker`` does.
    3. Reports on the TEST split only: recall@1/5/10, MRR@5, MRR@10 and nDCG@10 with 95% bootstrap
       intervals for BM25 alone, dense alone, hybrid (Milvus RRF), hybrid + ranker, and the
       "first chunk per document, exact cosine" baseline; then rag answers (extractive) with
       correctness, citation precision, groundedness and abstention.
    Requests go through :class:`streams.inference.service.InferenceService`, the worker's code;
    latencies here exclude Kafka (bench/inference_latency.py measures client send -> reply).

Run:  .venv/bin/python bench/retrieval_quality.py [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from streams.evaluation.harness import (
    Question,
    collect_candidates,
    evaluate_rag,
    evaluate_retrieval,
    packaged_questions,
    rag_summary,
    read_questions,
    retrieval_table,
)
from streams.evaluation.local_index import local_index
from streams.evaluation.metrics import paired_difference, per_question, summarize
from streams.evaluation.ranker_training import train_with_calibration
from streams.index.embed import OnnxEmbedder
from streams.inference.requests import InferenceRequest
from streams.inference.service import InferenceService, ModelSet, load_ranker
from streams.ingest.corpus import stdlib_documents
from streams.models.lifecycle import ranker_version
from streams.models.registry import Registry, Stage
from streams.records import now_ms
from streams.settings import Settings

OUT = Path(__file__).parent / "out"


def progress(label: str) -> Any:
    def report(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            print(f"  {label}: {done}/{total}", file=sys.stderr)

    return report


def interval(estimate: dict[str, float]) -> str:
    return f"{estimate['mean']:.3f} [{estimate['low']:.3f},{estimate['high']:.3f}]"


def asker(service: InferenceService) -> Any:
    async def ask(question: Question, mode: str, top_k: int, explain: bool, task: str) -> dict[str, Any]:
        request = InferenceRequest(
            request_id=question.id, task=task, text=question.question, top_k=top_k, explain=explain, retrieval=mode
        )
        received = now_ms()
        response, _ = await service.answer(request, received)
        service.finish(response, received)
        return response

    return ask


def first_chunk_rows(store: Any, embedder: OnnxEmbedder, questions: list[Question]) -> list[dict[str, float]]:
    rows = []
    for question in questions:
        if question.unanswerable:
            continue
        vector = embedder.embed([question.question])[0].tolist()
        hits = store.search(vector, 10, None, first_chunks_only=True)
        rows.append(per_question([hit.doc_id for hit in hits], set(question.relevant)))
    return rows


async def main(as_json: bool, index_dir: Path, questions_dir: Path | None) -> None:
    settings = Settings()
    embedder = OnnxEmbedder.from_settings(settings)
    documents = list(stdlib_documents())
    started = time.perf_counter()
    store = local_index(settings, documents, embedder, index_dir, progress("indexed documents"))
    print(f"index ready in {time.perf_counter() - started:.0f} s: {store.count()} chunks", file=sys.stderr)
    dev = read_questions(questions_dir / "questions_dev.jsonl" if questions_dir else packaged_questions("dev"))
    test = read_questions(questions_dir / "questions_test.jsonl" if questions_dir else packaged_questions("test"))

    service = InferenceService(ModelSet(embedder, store))
    ask = asker(service)
    dev_sets = await collect_candidates(dev, ask, progress("dev candidates"))
    training = train_with_calibration(dev_sets)
    # The version as `llmops models train-ranker` registers it, loaded as the worker loads it.
    candidate = ranker_version(
        settings.ranker_name, training.trained.onnx, embedder.version, training.metrics, actor="bench", note="bench"
    )
    ranker = load_ranker(
        Registry([replace(candidate, stage=Stage.PRODUCTION)]), None, embedder.version, settings.ranker_name
    )
    assert ranker is not None and ranker.answerability is not None

    baseline_results = await evaluate_retrieval(
        test, ask, ("bm25", "dense", "hybrid", "ranked"), progress=progress("test (no ranker)")
    )
    baseline_results["rrf-candidates"] = baseline_results.pop("ranked")
    service.swap(ModelSet(embedder, store, ranker=ranker))
    ranked = await evaluate_retrieval(test, ask, ("ranked",), progress=progress("test (ranker)"))
    results = {**baseline_results, **ranked}
    table = retrieval_table(results)
    first = first_chunk_rows(store, embedder, test)
    table.append(
        {
            "system": "first chunk per document (dense, exact cosine on chunk 0)",
            "mode": "first-chunk",
            "questions": len(first),
            **{name: e.as_dict() for name, e in summarize(first).items()},
        }
    )
    differences = {
        f"ranker - {other}": {
            metric: paired_difference(results["ranked"].rows, results[other].rows, metric).as_dict()
            for metric in ("recall@5", "mrr@5")
        }
        for other in ("bm25", "dense", "hybrid")
    }
    differences["ranker - first-chunk"] = {
        metric: paired_difference(results["ranked"].rows, first, metric).as_dict() for metric in ("recall@5", "mrr@5")
    }
    rag = rag_summary(await evaluate_rag(test, ask, progress("test rag")))
    report = {
        "split": {"dev": len(dev), "test": len(test)},
        "ranker": {
            "coefficients": training.trained.coefficients,
            "dev_cross_validated": training.metrics,
            "dev_rrf_baseline": training.baseline,
        },
        "retrieval_test": table,
        "paired_differences_test": differences,
        "rag_test_extractive": rag,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "retrieval_quality.json").write_text(json.dumps(report, indent=2))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    print(f"\nTest split ({sum(not q.unanswerable for q in test)} answerable questions); 95% bootstrap intervals")
    print(f"{'system':<58} {'recall@1':>8} {'recall@5':>22} {'recall@10':>9} {'MRR@5':>22} {'nDCG@10':>8}")
    for row in table:
        print(
            f"{row['system']:<58} {row['recall@1']['mean']:>8.3f} {interval(row['recall@5']):>22} "
            f"{row['recall@10']['mean']:>9.3f} {interval(row['mrr@5']):>22} {row['ndcg@10']['mean']:>8.3f}"
        )
    print("\nPaired differences (test):", json.dumps(differences))
    print("\nRag, extractive (test):", json.dumps(rag))
    print("\nRanker coefficients:", json.dumps(training.trained.coefficients))
    print("Dev (cross-validated):", json.dumps(training.metrics))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--index-dir", type=Path, default=OUT / "retrieval-index", help="where the index is kept")
    parser.add_argument("--questions-dir", type=Path, default=None, help="folder with questions_{dev,test}.jsonl")
    args = parser.parse_args()
    asyncio.run(main(args.json, args.index_dir, args.questions_dir))
