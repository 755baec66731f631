"""Training data handling of the classifier heads (training itself runs in test_inference.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.models.classifier import LabelledText, read_labelled_jsonl, split, stdlib_topic_dataset


def test_the_holdout_split_is_stable_and_about_one_in_five() -> None:
    records = stdlib_topic_dataset(classes=5, per_class=80)
    train, holdout = split(records)
    assert split(list(reversed(records)))[1] == list(reversed(holdout))  # membership depends on the key alone
    assert 0.12 < len(holdout) / len(records) < 0.28
    assert not {r.key for r in train} & {r.key for r in holdout}
    assert len({r.label for r in records}) == 5


def test_labelled_jsonl_reads_ids_and_names_the_bad_line(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "a", "text": "hello", "label": "greet"}\n\n{"text": "bye", "label": "leave"}\n')
    assert read_labelled_jsonl(good) == [LabelledText("a", "hello", "greet"), LabelledText("bye", "bye", "leave")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": "x"}\n{"text": "no label"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: expected"):
        read_labelled_jsonl(bad)
