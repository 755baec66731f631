"""Grounded answers through the real broker, worker, Milvus Lite and ONNX: train a ranker, answer, abstain.

The worker indexes the documents that a slice of the labelled dev questions are about, plus
distractors. `llmops models train-ranker` learns from most of those questions through Kafka and
calibrates the abstention threshold; after an approved promotion, held-out questions get a cited,
grounded answer or, when the corpus cannot answer, an abstention.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.evaluation.harness import Question, packaged_questions, read_questions
from streams.ingest.corpus import stdlib_documents
from streams.ingest.publish import encode_document
from streams.settings import Settings

from .conftest import index_with_worker, isolated_settings, run, run_cli
from .test_inference_flow import ask_all

AGENTS = ("embed", "index", "infer", "ingest")
TRAIN_ANSWERABLE, HELD_OUT = 40, 4
OFF_DOMAIN = ("how do I set resource limits on a Kubernetes deployment", "pytorch move model to GPU with cuda")


def labelled() -> tuple[list[Question], list[Question]]:
    """(training questions, held-out answerable questions) from the dev split."""
    dev = read_questions(packaged_questions("dev"))
    answerable = [q for q in dev if not q.unanswerable][: TRAIN_ANSWERABLE + HELD_OUT]
    unanswerable = [q for q in dev if q.unanswerable and q.question not in OFF_DOMAIN][:15]
    return answerable[:TRAIN_ANSWERABLE] + unanswerable, answerable[TRAIN_ANSWERABLE:]


@pytest.fixture(scope="module")
def served(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Path]]:
    data_dir = tmp_path_factory.mktemp("answers")
    settings = isolated_settings(kafka_bootstrap, data_dir, prefix="ans")
    training, held_out = labelled()
    wanted = {doc_id for q in [*training, *held_out] for doc_id in q.relevant}
    documents = [d for d in stdlib_documents() if d["id"] in wanted]
    documents += [d for d in stdlib_documents(limit=400) if d["id"] not in wanted][:100]  # distractors
    questions_file = data_dir / "train.jsonl"
    questions_file.write_text(
        "\n".join(
            json.dumps(
                {"id": q.id, "question": q.question, "relevant": sorted(q.relevant), "unanswerable": q.unanswerable}
            )
            for q in training
        )
    )
    worker = index_with_worker(settings, [encode_document(d) for d in documents], AGENTS, timeout=300.0)
    try:
        yield settings, questions_file
    finally:
        code = worker.stop()
        assert code == 0, f"worker exit code {code}; log:\n{worker.log_tail()}"


@pytest.mark.timeout(900)  # indexing ~200 documents and 55 training questions through Kafka on 2 shared cores
def test_a_trained_ranker_answers_with_citations_and_abstains_where_the_corpus_cannot(
    served: tuple[Settings, Path],
) -> None:
    settings, questions_file = served
    _, held_out = labelled()

    trained = run_cli(settings, "models", "train-ranker", str(questions_file), "--json", timeout=600)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    report = json.loads(trained.stdout)
    assert report["stage"] == "qa" and report["qa_passed"] is True
    assert report["metrics"]["recall@5"] >= report["production_on_same_questions"]["recall@5"] - settings.qa_max_drop
    promoted = run_cli(
        settings, "models", "promote", report["version"], "--to", "production", "--approved-by", "qa-lead", "--json"
    )
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr

    def ask(questions: list[str]) -> list[dict]:
        return run(ask_all(settings, [{"text": q, "task": "rag", "explain": True} for q in questions], timeout=120))

    # The worker applies the promotion asynchronously: wait until the ranker answers.
    for _ in range(60):
        (probe,) = ask([held_out[0].question])
        if any(m["name"] == settings.ranker_name for m in probe["models"]):
            break
    else:
        raise AssertionError(f"the promoted ranker never answered: {probe['models']}")

    answers = ask([q.question for q in held_out])
    # The threshold lets ~5% of answerable training questions abstain, so one of four held-out ones may.
    assert sum(a["abstained"] for a in answers) <= 1, [(a["confidence"], a["answer"]) for a in answers]
    for answer in answers:
        assert answer["status"] == "OK" and answer["retrieval"] == "ranked", answer
        if answer["abstained"]:
            assert answer["citations"] == [] and answer["confidence"] is not None
            continue
        assert answer["citations"] and answer["grounded"] == "true" and answer["unsupported"] == [], answer
        evidence = {e["chunk_id"] for hit in answer["hits"] for e in hit["evidence"]}
        assert {c["chunk_id"] for c in answer["citations"]} <= evidence  # every citation is a retrieved passage
        assert all(f"[{c['n']}]" in answer["answer"] for c in answer["citations"])
        assert answer["hits"][0]["attributions"] and answer["confidence"] is not None
    correct = [
        bool(q.answer_pattern and re.search(q.answer_pattern, a["answer"], re.IGNORECASE))
        for q, a in zip(held_out, answers, strict=True)
    ]
    assert any(correct), [a["answer"] for a in answers]

    for abstained in ask(list(OFF_DOMAIN)):
        assert abstained["status"] == "OK" and abstained["abstained"], abstained
        assert abstained["answer"] == "Not found in the indexed documents." and abstained["citations"] == []
