"""The question-set checker: schema, patterns, copied runs and the dev/test document split."""

from __future__ import annotations

from typing import Any

from streams.evaluation.check_questions import check, check_row, copied_run

TEXTS = {
    "stdlib:threading.Thread.start": (
        "Start the thread's activity. This method will raise a RuntimeError if called more than once "
        "on the same thread object."
    ),
    "stdlib:shutil.which": "Given a command, mode, and a PATH string, return the path which conforms.",
}


def _answerable(rid: str, relevant: str, **extra: Any) -> dict[str, Any]:
    row = {"id": rid, "question": "what if I call Thread.start twice", "relevant": [relevant]}
    row |= {"answer_pattern": "RuntimeError", "kind": "concept"} | extra
    return row


def test_a_good_row_passes() -> None:
    assert check_row(_answerable("q-dev-001", "stdlib:threading.Thread.start"), "dev", TEXTS) == []


def test_unknown_ids_bad_patterns_and_wrong_split_prefixes_are_reported() -> None:
    problems = check_row(_answerable("q-test-001", "stdlib:nope"), "dev", TEXTS)
    assert any("q-dev-NNN" in p for p in problems)
    assert any("not in the corpus" in p for p in problems)
    assert check_row(_answerable("q-dev-001", "stdlib:shutil.which"), "dev", TEXTS)  # pattern matches nothing
    assert check_row(_answerable("q-dev-001", "stdlib:shutil.which", answer_pattern="("), "dev", TEXTS)


def test_unanswerable_rows_have_no_relevant_documents() -> None:
    row = {"id": "q-dev-002", "question": "kubernetes limits", "relevant": [], "unanswerable": True}
    assert check_row(row | {"kind": "unanswerable"}, "dev", TEXTS) == []
    assert check_row(row | {"kind": "howto"}, "dev", TEXTS)
    assert check_row(row | {"kind": "unanswerable", "relevant": ["stdlib:shutil.which"]}, "dev", TEXTS)


def test_a_run_of_eight_copied_words_is_found() -> None:
    text = TEXTS["stdlib:threading.Thread.start"]
    assert copied_run("raise a RuntimeError if called more than once on it?", text)
    assert copied_run("what does Thread.start raise if called twice", text) is None


def test_dev_and_test_may_not_share_a_document() -> None:
    splits = {
        "dev": [_answerable("q-dev-001", "stdlib:threading.Thread.start")],
        "test": [_answerable("q-test-001", "stdlib:threading.Thread.start")],
    }
    problems, report = check(splits, TEXTS)
    assert any("more than one split" in p for p in problems)
    assert report[0].startswith("dev: 1 questions, 1 answerable")
