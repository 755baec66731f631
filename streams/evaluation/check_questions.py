"""Validate the labelled question sets in ``streams/evaluation/data/``.

Checks every row of ``questions_dev.jsonl`` and ``questions_test.jsonl``: its schema, that ids are
unique, that every relevant id exists in the stdlib corpus, that each ``answer_pattern`` compiles and
matches at least one relevant document's text, that dev and test share no relevant document, that no
question copies a run of 8 or more consecutive words from one of its relevant documents, and that each
split holds enough answerable and unanswerable questions. Prints counts per split and kind and exits
non-zero when anything is wrong::

    python -m streams.evaluation.check_questions
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from streams.ingest.corpus import stdlib_documents

DATA_DIR = Path(__file__).resolve().parent / "data"
SPLITS = ("dev", "test")
ANSWERABLE_KINDS = ("howto", "lexical", "concept", "keyword")
KINDS = (*ANSWERABLE_KINDS, "unanswerable")
MIN_ANSWERABLE = 110
MIN_UNANSWERABLE = 35
MIN_MODULES = 60
COPY_RUN = 8
_WORD = re.compile(r"\w+")
_ANSWERABLE_KEYS = {"id", "question", "relevant", "answer_pattern", "kind"}
_UNANSWERABLE_KEYS = {"id", "question", "relevant", "unanswerable", "kind"}


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _runs(words: Sequence[str], n: int = COPY_RUN) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def copied_run(question: str, document: str, n: int = COPY_RUN) -> str | None:
    """The first run of ``n`` consecutive words of ``question`` that also occurs in ``document``, if any."""
    words = _words(question)
    if len(words) < n:
        return None
    doc_runs = _runs(_words(document), n)
    for i in range(len(words) - n + 1):
        run = tuple(words[i : i + n])
        if run in doc_runs:
            return " ".join(run)
    return None


def module_of(doc_id: str) -> str:
    """The top-level module of a corpus id: ``stdlib:json.decoder.JSONDecoder`` -> ``json``."""
    return doc_id.removeprefix("stdlib:").split(".")[0]


def load_rows(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """The JSON objects of one file, one a line; unreadable lines are reported in ``problems``."""
    rows: list[dict[str, Any]] = []
    if not path.is_file():
        problems.append(f"{path}: missing")
        return rows
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path.name}:{number}: not JSON ({exc})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{path.name}:{number}: not a JSON object")
            continue
        rows.append(row)
    return rows


def check_row(row: Mapping[str, Any], split: str, texts: Mapping[str, str]) -> list[str]:
    """Every problem with one row of ``split``; ``texts`` maps corpus ids to docstrings."""
    rid = row.get("id")
    where = f"{split}:{rid}"
    problems: list[str] = []
    if not isinstance(rid, str) or not re.fullmatch(rf"q-{split}-\d+", rid):
        problems.append(f"{where}: id must look like q-{split}-NNN")
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        problems.append(f"{where}: question must be a non-empty string")
        question = ""
    relevant = row.get("relevant")
    if not isinstance(relevant, list) or not all(isinstance(r, str) for r in relevant):
        problems.append(f"{where}: relevant must be a list of strings")
        relevant = []
    kind = row.get("kind")
    if kind not in KINDS:
        problems.append(f"{where}: kind {kind!r} not one of {', '.join(KINDS)}")
    if kind == "unanswerable" or "unanswerable" in row:
        if set(row) != _UNANSWERABLE_KEYS:
            problems.append(f"{where}: unanswerable rows have exactly the keys {sorted(_UNANSWERABLE_KEYS)}")
        if row.get("unanswerable") is not True or kind != "unanswerable" or relevant:
            problems.append(f"{where}: unanswerable rows need unanswerable=true, kind=unanswerable, relevant=[]")
        return problems
    if set(row) != _ANSWERABLE_KEYS:
        problems.append(f"{where}: answerable rows have exactly the keys {sorted(_ANSWERABLE_KEYS)}")
    if not relevant:
        problems.append(f"{where}: an answerable question needs at least one relevant id")
    if len(set(relevant)) != len(relevant):
        problems.append(f"{where}: relevant ids repeat")
    missing = [r for r in relevant if r not in texts]
    if missing:
        problems.append(f"{where}: relevant ids not in the corpus: {', '.join(missing)}")
    present = [texts[r] for r in relevant if r in texts]
    pattern = row.get("answer_pattern")
    if not isinstance(pattern, str) or not pattern.strip():
        problems.append(f"{where}: answer_pattern must be a non-empty string")
    else:
        try:
            compiled = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            problems.append(f"{where}: answer_pattern does not compile ({exc})")
        else:
            if present and not any(compiled.search(text) for text in present):
                problems.append(f"{where}: answer_pattern {pattern!r} matches no relevant document")
    for doc_id in relevant:
        if doc_id in texts:
            run = copied_run(question, texts[doc_id])
            if run:
                problems.append(f"{where}: question copies {COPY_RUN}+ words from {doc_id}: {run!r}")
    return problems


def check(splits: Mapping[str, Sequence[Mapping[str, Any]]], texts: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(problems, report lines) for the rows of each split."""
    problems: list[str] = []
    report: list[str] = []
    seen: Counter[str] = Counter()
    targets: dict[str, set[str]] = {}
    modules: set[str] = set()
    for split, rows in splits.items():
        kinds: Counter[str] = Counter()
        split_modules: set[str] = set()
        targets[split] = set()
        for row in rows:
            problems.extend(check_row(row, split, texts))
            seen[str(row.get("id"))] += 1
            kinds[str(row.get("kind"))] += 1
            relevant = row.get("relevant")
            if isinstance(relevant, list):
                ids = {r for r in relevant if isinstance(r, str)}
                targets[split] |= ids
                split_modules |= {module_of(r) for r in ids}
        modules |= split_modules
        answerable = sum(kinds[k] for k in ANSWERABLE_KINDS)
        shares = ", ".join(
            f"{k} {kinds[k]} ({100 * kinds[k] / answerable:.0f}%)" if answerable else f"{k} 0" for k in ANSWERABLE_KINDS
        )
        report.append(
            f"{split}: {len(rows)} questions, {answerable} answerable ({shares}), "
            f"{kinds['unanswerable']} unanswerable, {len(targets[split])} relevant documents, "
            f"{len(split_modules)} modules"
        )
        if answerable < MIN_ANSWERABLE:
            problems.append(f"{split}: {answerable} answerable questions, fewer than {MIN_ANSWERABLE}")
        if kinds["unanswerable"] < MIN_UNANSWERABLE:
            problems.append(f"{split}: {kinds['unanswerable']} unanswerable questions, fewer than {MIN_UNANSWERABLE}")
    problems.extend(f"id {rid} used {n} times" for rid, n in sorted(seen.items()) if n > 1)
    shared = set.intersection(*targets.values()) if len(targets) > 1 else set()
    problems.extend(f"relevant document in more than one split: {doc_id}" for doc_id in sorted(shared))
    report.append(f"all: {len(modules)} distinct top-level modules among relevant documents")
    if len(modules) < MIN_MODULES:
        problems.append(f"{len(modules)} distinct top-level modules, fewer than {MIN_MODULES}")
    return problems, report


def corpus_texts(documents: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Corpus id -> docstring text."""
    return {str(doc["id"]): str(doc["text"]) for doc in documents}


def main(argv: Sequence[str] | None = None) -> int:
    """Check the sets; print the counts and any problems; 0 when there are none."""
    parser = argparse.ArgumentParser(prog="python -m streams.evaluation.check_questions", description=__doc__)
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="folder holding questions_{dev,test}.jsonl")
    args = parser.parse_args(argv)
    problems: list[str] = []
    splits = {split: load_rows(args.data / f"questions_{split}.jsonl", problems) for split in SPLITS}
    found, report = check(splits, corpus_texts(stdlib_documents()))
    problems.extend(found)
    for line in report:
        print(line)
    for problem in problems:
        print(f"PROBLEM {problem}", file=sys.stderr)
    print(f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
