"""Prompt-injection screens side by side: the regex screen and the classifier, in one run.

Why this exists:
    The classifier replaced a regex list; this measures whether that was worth it, on data
    the classifier never trained on, and says what each screen costs per request.

What it measures:
    * ``dev_grouped_cv``: the training pool (bastioncorpus, jailbreak-corpus-mini, our
      training rows, stdlib docstrings) in grouped folds: every attack or benign category
      (``direct_injection``, ``obfuscation``, ``inj_homoglyph``, ``benign_tech`` ...) is held
      out whole, so a fold scores categories the head never saw. Out-of-fold probabilities give
      the figures and the threshold calibration (``calibration``); the test split never does.
    * ``test``: ``streams/inference/data/injection_test.jsonl`` (hand-written, never trained on,
      includes the issue's examples, German/French/Spanish/Italian/Portuguese/Dutch rows,
      homoglyphs, leetspeak, markdown headers, indirect injections in documents and benign
      look-alikes), scored by the head trained on the whole pool, exactly as the worker builds it.
    * ``documentation``: stdlib docstrings disjoint from the trained ones (what retrieved chunks
      look like): the share each screen would block, flag or withhold as a chunk.
    * ``latency_ms``: per request, the regex screen, the classifier with the task's query vector
      reused, and the classifier embedding the folded text itself.

    Precision, recall and false-alarm rate (share of benign rows wrongly caught) are given for
    "caught" = blocked (score >= block threshold) and per language group, with n of each set.

Command (prints JSON):
    /work/main/.venv/bin/python bench/injection_eval.py
    /work/main/.venv/bin/python bench/injection_eval.py --sweep   # also the regularization sweep
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.index.embed import OnnxEmbedder  # noqa: E402
from streams.inference.injection import (  # noqa: E402
    REGULARIZATION,
    Example,
    InjectionClassifier,
    documentation_examples,
    evaluation_examples,
    export_head,
    feature_matrix,
    fit_head,
    rule_weights,
    training_examples,
)
from streams.inference.safety import screen  # noqa: E402
from streams.settings import Settings  # noqa: E402


def rates(truth: Sequence[bool], caught: Sequence[bool]) -> dict[str, Any]:
    """Precision, recall and false-alarm rate with the counts behind them."""
    tp = sum(t and c for t, c in zip(truth, caught, strict=True))
    fp = sum(c and not t for t, c in zip(truth, caught, strict=True))
    positives, negatives = sum(truth), len(truth) - sum(truth)
    return {
        "precision": round(tp / (tp + fp), 3) if tp + fp else None,
        "recall": round(tp / positives, 3) if positives else None,
        "false_alarm_rate": round(fp / negatives, 3) if negatives else None,
        "n_injection": positives,
        "n_benign": negatives,
    }


def lang_group(lang: str) -> str:
    return "en" if lang == "en" else "non-en"


def report(examples: Sequence[Example], caught: Sequence[bool]) -> dict[str, Any]:
    """Overall, per language group (en / non-en) and per language."""
    truth = [e.injection for e in examples]
    out: dict[str, Any] = {"all": rates(truth, caught)}
    for key in (lang_group, lambda lang: lang):
        buckets: dict[str, list[int]] = defaultdict(list)
        for i, e in enumerate(examples):
            buckets[key(e.lang)].append(i)
        for name in sorted(buckets):
            out.setdefault(name, rates([truth[i] for i in buckets[name]], [caught[i] for i in buckets[name]]))
    return out


def grouped_folds(examples: Sequence[Example], folds: int) -> list[npt.NDArray[np.int64]]:
    """Index arrays, one per fold; each category lands whole in one fold (docs spread over all)."""
    groups = sorted({e.group for e in examples if e.group != "docs"})
    # Largest categories first, each to the currently smallest fold: balanced and deterministic.
    sizes = {g: sum(e.group == g for e in examples) for g in groups}
    assignment: dict[str, int] = {}
    load = [0] * folds
    for group in sorted(groups, key=lambda g: (-sizes[g], g)):
        fold = int(np.argmin(load))
        assignment[group] = fold
        load[fold] += sizes[group]
    fold_of = [assignment[e.group] if e.group != "docs" else i % folds for i, e in enumerate(examples)]
    return [np.asarray([i for i, f in enumerate(fold_of) if f == k], dtype=np.int64) for k in range(folds)]


def out_of_fold(
    features: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], folds: list[npt.NDArray[np.int64]], c: float
) -> npt.NDArray[np.float64]:
    probabilities = np.zeros(len(labels))
    for held in folds:
        train = np.setdiff1d(np.arange(len(labels)), held)
        model = fit_head(features[train], labels[train], c)
        probabilities[held] = model.predict_proba(features[held])[:, 1]
    return probabilities


def calibrate(probabilities: npt.NDArray[np.float64], examples: Sequence[Example]) -> dict[str, float]:
    """Thresholds from the dev folds: block where look-alike false alarms stay <= 5%, flag where <= 15%."""
    benign = np.asarray([not e.injection and e.group != "docs" for e in examples])
    attacks = np.asarray([e.injection for e in examples])
    grid = np.round(np.arange(0.05, 1.0, 0.05), 2)
    block = next(float(t) for t in grid if (probabilities[benign] >= t).mean() <= 0.05)
    flag = next(float(t) for t in grid if (probabilities[benign] >= t).mean() <= 0.15)
    caught = float((probabilities[attacks] >= block).mean())
    return {"block_at": block, "flag_at": min(flag, block), "dev_recall_at_block": round(caught, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=5, help="grouped folds over the training pool (default 5)")
    parser.add_argument("--sweep", action="store_true", help="also score C in 0.25..16 on the dev folds")
    parser.add_argument("--latency-runs", type=int, default=3, help="passes over the test rows for the timings")
    args = parser.parse_args()

    settings = Settings()
    block_at, flag_at = settings.injection_block_score, settings.injection_flag_score
    embedder = OnnxEmbedder.from_settings(settings)
    dev, test = training_examples(), evaluation_examples()
    dev_x, _ = feature_matrix(embedder, [e.text for e in dev])
    test_x, _ = feature_matrix(embedder, [e.text for e in test])
    dev_y = np.asarray([int(e.injection) for e in dev], dtype=np.int64)
    folds = grouped_folds(dev, args.folds)
    result: dict[str, Any] = {
        "embedder": embedder.version[:12],
        "thresholds": {"block_at": block_at, "flag_at": flag_at, "regularization": REGULARIZATION},
        "sets": {
            "dev_pool": {"n": len(dev), "injection": int(dev_y.sum()), "groups": len({e.group for e in dev})},
            "test": {"n": len(test), "injection": sum(e.injection for e in test)},
        },
    }
    if args.sweep:
        sweep = {}
        for c in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0):
            oof = out_of_fold(dev_x, dev_y, folds, c)
            calibrated = calibrate(oof, dev)["block_at"]
            sweep[str(c)] = {
                "at_block_at": rates([e.injection for e in dev], [bool(p >= block_at) for p in oof]),
                "calibrated_block_at": calibrated,
                "at_calibrated": rates([e.injection for e in dev], [bool(p >= calibrated) for p in oof]),
            }
        result["sweep_dev_blocked"] = sweep
    oof = out_of_fold(dev_x, dev_y, folds, REGULARIZATION)
    result["calibration"] = calibrate(oof, dev)
    look_alike_dev = [i for i, e in enumerate(dev) if e.group != "docs"]
    dev_rows = [dev[i] for i in look_alike_dev]
    result["dev_grouped_cv"] = {
        "regex_blocked": report(dev_rows, [screen(e.text, block_at, flag_at).blocked for e in dev_rows]),
        "classifier_blocked": report(dev_rows, [bool(oof[i] >= block_at) for i in look_alike_dev]),
    }

    model = fit_head(dev_x, dev_y, REGULARIZATION)
    classifier = InjectionClassifier(export_head(model, dev_x.shape[1]), embedder, block_at=block_at, flag_at=flag_at)
    result["rule_weights"] = rule_weights(model)
    test_p = classifier.probabilities(test_x)
    regex = [screen(e.text, block_at, flag_at) for e in test]
    result["test"] = {
        "regex_blocked": report(test, [v.blocked for v in regex]),
        "classifier_blocked": report(test, [bool(p >= block_at) for p in test_p]),
        "regex_flag_or_block": report(test, [v.verdict != "allow" for v in regex]),
        "classifier_flag_or_block": report(test, [bool(p >= flag_at) for p in test_p]),
        "classifier_missed": [e.text[:80] for e, p in zip(test, test_p, strict=True) if e.injection and p < block_at],
        "classifier_false_alarms": [
            e.text[:80] for e, p in zip(test, test_p, strict=True) if not e.injection and p >= block_at
        ],
    }

    docs = documentation_examples(offset=25)  # disjoint from the trained docstrings (offset 0)
    docs_x, _ = feature_matrix(embedder, [e.text for e in docs])
    docs_p = classifier.probabilities(docs_x)
    docs_regex = [screen(e.text, block_at, flag_at) for e in docs]
    result["documentation"] = {
        "n": len(docs),
        "regex_blocked": round(sum(v.blocked for v in docs_regex) / len(docs), 4),
        "regex_flagged_or_blocked": round(sum(v.verdict != "allow" for v in docs_regex) / len(docs), 4),
        "classifier_blocked": round(float((docs_p >= block_at).mean()), 4),
        "classifier_withheld_as_chunk": round(float((docs_p >= settings.injection_chunk_score).mean()), 4),
        "chunk_score": settings.injection_chunk_score,
    }

    texts = [e.text for e in test]
    vectors = embedder.embed(texts)
    timings: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.latency_runs):
        for text, vector in zip(texts, vectors, strict=True):
            started = time.perf_counter()
            screen(text, block_at, flag_at)
            timings["regex"].append(time.perf_counter() - started)
            started = time.perf_counter()
            classifier.screen(text, vector)
            timings["classifier_vector_reused"].append(time.perf_counter() - started)
            started = time.perf_counter()
            classifier.screen(text)
            timings["classifier_own_embedding"].append(time.perf_counter() - started)
    result["latency_ms"] = {
        name: {"p50": round(float(np.percentile(v, 50)) * 1000, 3), "p95": round(float(np.percentile(v, 95)) * 1000, 3)}
        for name, v in timings.items()
    }
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
