"""Drift alarms a user can trust: false alarms and detection delay, ours beside a reference test.

Data (real text, the production ONNX embedder, held out):
    * calibration: references of ``--reference-rows`` chunks of whole modules of the ``reference``
      half of the stdlib docstring corpus (one reference per seed in ``--references``), calibrated
      as the monitor does when it loads one (block permutation, see streams/monitor/drift.py);
    * evaluation: the ``holdout`` half (documents the references never saw), chunked as the ingest
      agent does, streamed in publication order and shuffled;
    * shift: chunks of installed packages' long descriptions (METADATA), mixed into the held-out
      stream at ``--mix`` shares (20% and 50%) from a window boundary on.

Two detectors see the same windows:
    * ours: :class:`streams.monitor.monitor.Monitor` with the configured rules (every drift statistic
      with its calibrated threshold, an alert after ``alert_after`` breaching windows in a row);
      also its MMD statistic alone, flagged when over its threshold;
    * reference: the same MMD^2 (same kernel and bandwidth) with a per-window permutation test as
      Alibi Detect's MMDDrift does it (window and reference pooled, rows permuted one by one), run by
      ``scipy.stats.permutation_test``; flagged when p <= 1 - drift_quantile, alarmed after
      ``alert_after`` flagged windows in a row like ours. (alibi-detect itself does not install
      here: it pins numpy 1.26, below the venv's, and its MMD needs TensorFlow or PyTorch.)

Figures:
    * false-alarm rate: share of held-out windows where a drift alarm fires (target <= 1%), and
      the share where the detector flags (any statistic for the monitor), in order and shuffled;
    * detection delay: windows after the shift until the first alarm, per trial (each trial a
      random start in the held-out stream, a random order of the foreign documents); target: within
      3 windows in >= 95% of trials;
    * CPU per window: the monitor's process CPU per documents window over the embedder's CPU for
      the same chunks (target <= 5%), and the one-off calibration CPU per reference.

Prints a table and JSON; writes bench/out/monitor_drift.json.

    python bench/monitor_drift.py --window 200 --references 0 1 2 --trials 40
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.index.embed import OnnxEmbedder  # noqa: E402
from streams.ingest.chunk import default_tokenizer  # noqa: E402
from streams.monitor.config import MonitorConfig  # noqa: E402
from streams.monitor.detectors import Reference, with_reference_id  # noqa: E402
from streams.monitor.drift import rbf_gram  # noqa: E402
from streams.monitor.monitor import Monitor  # noqa: E402
from streams.monitor.reference import (  # noqa: E402
    corpus_blocks,
    document_chunks,
    documents_sample,
    package_description_texts,
    stratified_blocks,
    whole_blocks,
)
from streams.settings import Settings  # noqa: E402

OUT = ROOT / "bench" / "out"
Row = tuple[np.ndarray, str]


def embedded(embedder: OnnxEmbedder, chunks: list[str]) -> tuple[np.ndarray, float]:
    """Vectors of ``chunks`` (cached under bench/out by model and texts) and the embedder's CPU s per chunk."""
    key = hashlib.sha256((embedder.version + "\x00".join(chunks)).encode()).hexdigest()[:16]
    cache = OUT / f"embeddings-{key}.npy"
    if cache.exists():
        return np.load(cache), float("nan")
    cpu = time.process_time()
    vectors = np.asarray(embedder.embed(chunks), dtype=np.float32)
    per_chunk = (time.process_time() - cpu) / len(chunks)
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors, per_chunk


@dataclass(frozen=True)
class CachedEmbedder:
    """The embedder behind the bench/out cache, for :func:`documents_sample` (reruns skip embedding)."""

    embedder: OnnxEmbedder

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return embedded(self.embedder, list(texts))[0]


class AlibiStyleMmd:
    """MMD^2 permutation test per window on the pooled kernel matrix, as Alibi Detect's MMDDrift does."""

    def __init__(self, reference: np.ndarray, bandwidth: float, alpha: float, resamples: int, seed: int) -> None:
        self.reference, self.bandwidth, self.alpha, self.resamples = reference, bandwidth, alpha, resamples
        self.rng = np.random.default_rng(seed)

    def p_value(self, window: np.ndarray) -> float:
        pooled = np.concatenate([window, self.reference]).astype(np.float32)
        kernel = rbf_gram(pooled, pooled, self.bandwidth).astype(np.float64)
        np.fill_diagonal(kernel, 0.0)
        n, m = len(window), len(self.reference)

        def mmd2(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
            # x, y: pooled row indices (as floats), shape (..., n) and (..., m); vectorized over batches.
            xs = np.atleast_2d(x).astype(np.intp)  # y holds the other rows: the kernel sums follow from x
            a = np.zeros((len(xs), n + m))
            np.put_along_axis(a, xs, 1.0, axis=1)
            ka = a @ kernel
            k_xx = (ka * a).sum(1)
            k_xy = (ka * (1.0 - a)).sum(1)
            k_yy = kernel.sum() - k_xx - 2.0 * k_xy
            value = k_xx / (n * (n - 1)) + k_yy / (m * (m - 1)) - 2.0 * k_xy / (n * m)
            return value if np.ndim(x) > 1 else value[0]

        result = stats.permutation_test(
            (np.arange(n, dtype=float), np.arange(n, n + m, dtype=float)),
            mmd2,
            permutation_type="independent",
            vectorized=True,
            n_resamples=self.resamples,
            alternative="greater",
            batch=100,
            random_state=self.rng,
        )
        return float(result.pvalue)

    def flagged(self, window: np.ndarray) -> bool:
        return self.p_value(window) <= self.alpha


def consecutive_alarm(flags: Sequence[bool], after: int) -> list[int]:
    """1-based indices of windows where ``after`` flags in a row are first reached (then reset)."""
    alarms, run = [], 0
    for index, flag in enumerate(flags, start=1):
        run = run + 1 if flag else 0
        if run == after:
            alarms.append(index)
    return alarms


def monitor_windows(monitor: Monitor, rows: list[Row], window: int) -> list[dict[str, Any]]:
    """Feed ``rows`` as docs.embeddings records; per closed window: flags, alarm, p-values, CPU seconds."""
    results = []
    for start in range(0, len(rows) - window + 1, window):
        cpu = time.process_time()
        outputs = []
        for vector, text in rows[start : start + window]:
            outputs += monitor.on_embedding({"op": "UPSERT", "vector": vector, "text": text}, 0)
        spent = time.process_time() - cpu
        snapshot = next(r for kind, r in outputs if kind == "snapshot")
        drift = [m for m in snapshot["metrics"] if m["name"].startswith("drift.")]
        results.append(
            {
                "any_breach": any(m["breached"] for m in drift),
                "mmd_breach": any(m["breached"] for m in drift if m["name"] == "drift.embedding.mmd"),
                "mmd_p": next((m["p_value"] for m in drift if m["name"] == "drift.embedding.mmd"), None),
                "alarm": any(
                    kind == "alert" and r["state"] == "FIRING" and r["metric"].startswith("drift.")
                    for kind, r in outputs
                ),
                "alarm_metrics": sorted(
                    r["metric"] for kind, r in outputs if kind == "alert" and r["state"] == "FIRING"
                ),
                "cpu_seconds": spent,
            }
        )
    return results


@dataclass(frozen=True)
class Detectors:
    """Both detectors and how windows are cut."""

    config: MonitorConfig
    tokenizer: Any
    reference: Reference
    alibi: AlibiStyleMmd
    window: int


def run_stream(detectors: Detectors, rows: list[Row], label: str) -> list[dict[str, Any]]:
    """Each window of ``rows`` through a fresh monitor and through the reference test."""
    window = detectors.window
    ours = monitor_windows(Monitor(detectors.config, detectors.tokenizer, detectors.reference), rows, window)
    flags = [
        detectors.alibi.resamples > 0 and detectors.alibi.flagged(np.asarray([v for v, _ in rows[i : i + window]]))
        for i in range(0, len(ours) * window, window)
    ]
    alarms = set(consecutive_alarm(flags, detectors.config.alert_after))
    for index, (result, flag) in enumerate(zip(ours, flags, strict=True), start=1):
        result.update(ref_flag=flag, ref_alarm=index in alarms, stream=label)
    return ours


def as_rows(vectors: np.ndarray, chunks: list[str], order: Sequence[int]) -> list[Row]:
    return [(vectors[i].tolist(), chunks[i]) for i in order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=200, help="events per window (LLMOPS_MONITOR_WINDOW_EVENTS)")
    parser.add_argument("--reference-rows", type=int, default=None, help="default: LLMOPS_MONITOR_REFERENCE_SIZE")
    parser.add_argument("--references", type=int, nargs="+", default=[0, 1, 2], help="seeds of the references")
    parser.add_argument("--shuffles", type=int, default=2, help="shuffled passes over the held-out stream")
    parser.add_argument("--trials", type=int, default=20, help="shift trials per mix share and reference")
    parser.add_argument("--mix", type=float, nargs="+", default=[0.2, 0.5])
    parser.add_argument("--shift-windows", type=int, default=6, help="windows followed after a shift")
    parser.add_argument("--foreign-rows", type=int, default=1500, help="chunks of package descriptions to mix in")
    parser.add_argument("--blocks", choices=["top_level", "module"], default="top_level", help="reference blocks")
    parser.add_argument(
        "--resamples", type=int, default=500, help="permutations of the reference test (0: not run, its column empty)"
    )
    args = parser.parse_args()
    settings = Settings(monitor_window_events=args.window, monitor_window_seconds=3600)
    if args.reference_rows:
        settings = settings.model_copy(update={"monitor_reference_size": args.reference_rows})
    config = MonitorConfig.from_settings(settings)
    alpha = 1.0 - config.drift_quantile
    tokenizer = default_tokenizer()
    embedder = OnnxEmbedder.from_settings(settings)

    def chunked(texts: Sequence[str]) -> list[str]:
        return document_chunks(texts, tokenizer, settings)

    held_blocks = corpus_blocks("holdout")
    held_chunks = [c for block in held_blocks for c in chunked(block)]  # publication order
    foreign_chunks, _ = whole_blocks([[t] for t in package_description_texts()], args.foreign_rows, 0, chunked)
    held_vectors, embed_cpu_per_chunk = embedded(embedder, held_chunks)
    foreign_vectors, _ = embedded(embedder, foreign_chunks)
    if np.isnan(embed_cpu_per_chunk):  # cached vectors: time the embedder on a slice of the same texts
        cpu = time.process_time()
        embedder.embed(held_chunks[: 4 * args.window])
        embed_cpu_per_chunk = (time.process_time() - cpu) / (4 * args.window)
    windows_in_order = len(held_chunks) // args.window
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": "python " + " ".join(sys.argv),
        "window_events": args.window,
        "reference_rows": settings.monitor_reference_size,
        "drift_quantile": config.drift_quantile,
        "calibration_draws": config.calibration_draws,
        "alert_after": config.alert_after,
        "reference_blocks": args.blocks,
        "held_out_chunks": len(held_chunks),
        "foreign_chunks": len(foreign_chunks),
        "embed_cpu_ms_per_chunk": round(embed_cpu_per_chunk * 1000, 3),
        "references": [],
    }
    totals: dict[str, dict[str, list[Any]]] = {}

    def tally(detector: str, key: str, values: list[Any]) -> None:
        totals.setdefault(detector, {}).setdefault(key, []).extend(values)

    reference_half = corpus_blocks("reference", args.blocks)
    for seed in args.references:
        chunks, groups, drawn_from = stratified_blocks(
            reference_half, settings.monitor_reference_size, seed, lambda text: chunked([text])
        )
        sample = documents_sample(chunks, CachedEmbedder(embedder), tokenizer, groups, drawn_from)  # type: ignore[arg-type]  # only embed() is used
        reference = with_reference_id(Reference("", "", {"documents": sample}), f"bench seed {seed}")
        cpu = time.process_time()
        reference.calibrate_all(config)
        calibration_cpu = time.process_time() - cpu
        assert sample.vectors is not None
        alibi = AlibiStyleMmd(sample.vectors, sample.bandwidth, alpha, args.resamples, seed)
        rng = np.random.default_rng(1000 + seed)
        detectors = Detectors(config, tokenizer, reference, alibi, args.window)

        null_windows: list[dict[str, Any]] = []
        null_windows += run_stream(detectors, as_rows(held_vectors, held_chunks, range(len(held_chunks))), "in order")
        for _ in range(args.shuffles):
            shuffled = as_rows(held_vectors, held_chunks, rng.permutation(len(held_chunks)))
            null_windows += run_stream(detectors, shuffled, "shuffled")
        shift_trials: dict[str, list[dict[str, Any]]] = {}
        for share in args.mix:
            per_window_foreign = round(share * args.window)
            for _ in range(args.trials):
                start = int(rng.integers(0, windows_in_order - args.shift_windows)) * args.window
                foreign_order = rng.permutation(len(foreign_chunks))
                pre = list(range(start, start + args.window))  # one normal window in order before the shift
                rows = as_rows(held_vectors, held_chunks, pre)
                held_next, foreign_next = start + args.window, 0
                for _ in range(args.shift_windows):
                    own = args.window - per_window_foreign
                    window_rows = as_rows(held_vectors, held_chunks, range(held_next, held_next + own))
                    window_rows += as_rows(
                        foreign_vectors, foreign_chunks, foreign_order[foreign_next : foreign_next + per_window_foreign]
                    )
                    held_next, foreign_next = held_next + own, foreign_next + per_window_foreign
                    order = rng.permutation(len(window_rows))  # foreign chunks arrive among the others
                    rows += [window_rows[i] for i in order]
                windows = run_stream(detectors, rows, f"mix {share:.0%}")
                shifted = windows[1:]
                ours_alarm = next((i for i, w in enumerate(shifted, start=1) if w["alarm"]), None)
                ref_alarm = next((i for i, w in enumerate(shifted, start=1) if w["ref_alarm"]), None)
                shift_trials.setdefault(f"{share:.0%}", []).append(
                    {
                        "ours": ours_alarm,
                        "reference": ref_alarm,
                        "pre_shift_alarm": windows[0]["alarm"],
                        "ours_metrics": shifted[ours_alarm - 1]["alarm_metrics"] if ours_alarm else [],
                    }
                )
        cpu_per_window = [w["cpu_seconds"] for w in null_windows]
        entry = {
            "seed": seed,
            "reference_id": reference.reference_id,
            "blocks": len(set(groups)),
            "calibration_cpu_seconds": round(calibration_cpu, 2),
            "monitor_cpu_ms_per_window_median": round(float(np.median(cpu_per_window)) * 1000, 2),
        }
        for label in ("in order", "shuffled"):
            part = [w for w in null_windows if w["stream"] == label]
            tally("ours", f"alarm {label}", [w["alarm"] for w in part])
            tally("ours", f"flag {label}", [w["any_breach"] for w in part])
            tally("ours mmd", f"flag {label}", [w["mmd_breach"] for w in part])
            if args.resamples:
                tally("reference mmd", f"alarm {label}", [w["ref_alarm"] for w in part])
                tally("reference mmd", f"flag {label}", [w["ref_flag"] for w in part])
            entry[f"{label} windows"] = len(part)
            entry[f"ours alarm windows {label}"] = [i for i, w in enumerate(part, 1) if w["alarm"]]
            entry[f"ours alarm metrics {label}"] = sorted({m for w in part for m in w["alarm_metrics"]})
        for share, trials in shift_trials.items():
            raised = [m for t in trials for m in t["ours_metrics"]]
            entry[f"ours first alarm metrics {share}"] = {m: raised.count(m) for m in sorted(set(raised))}
            tally("ours", f"delay {share}", [t["ours"] for t in trials])
            if args.resamples:
                tally("reference mmd", f"delay {share}", [t["reference"] for t in trials])
        tally("ours", "cpu per window", cpu_per_window)
        report["references"].append(entry)

    def rate(values: list[bool]) -> float:
        return round(sum(values) / len(values), 4) if values else float("nan")

    def within(delays: list[int | None], windows: int = 3) -> float:
        return round(sum(d is not None and d <= windows for d in delays) / len(delays), 4)

    summary: dict[str, Any] = {}
    for detector, figures in totals.items():
        summary[detector] = {}
        for key, values in figures.items():
            if key.startswith("delay"):
                found = sorted(d for d in values if d is not None)
                summary[detector][key] = {
                    "trials": len(values),
                    "alarm_within_3_windows": within(values),
                    "median_delay": float(np.median(found)) if found else None,
                    "missed_in_followed_windows": sum(d is None for d in values),
                }
            elif key == "cpu per window":
                cpu_ms = float(np.median(values)) * 1000
                embed_ms = embed_cpu_per_chunk * args.window * 1000
                summary[detector]["monitor_cpu_ms_per_window"] = round(cpu_ms, 2)
                summary[detector]["embed_cpu_ms_per_window"] = round(embed_ms, 1)
                summary[detector]["cpu_ratio"] = round(cpu_ms / embed_ms, 4)
            else:
                summary[detector][key] = {"rate": rate(values), "windows": len(values), "count": int(sum(values))}
    report["summary"] = summary
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "monitor_drift.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print_table(summary, args.mix)


def print_table(summary: dict[str, Any], mix: Sequence[float]) -> None:
    lines = [("figure", "target", "ours (monitor)", "reference (MMD, per-window permutation)")]

    def cell(detector: str, key: str, field: str, fmt: Callable[[Any], str]) -> str:
        value = summary.get(detector, {}).get(key)
        return "-" if value is None else fmt(value[field])

    percent: Callable[[Any], str] = lambda v: f"{v:.1%}"  # noqa: E731
    for label in ("in order", "shuffled"):
        lines.append(
            (
                f"false-alarm rate, {label}",
                "<= 1%",
                cell("ours", f"alarm {label}", "rate", percent),
                cell("reference mmd", f"alarm {label}", "rate", percent),
            )
        )
        lines.append(
            (
                f"windows flagged, {label}",
                "",
                cell("ours", f"flag {label}", "rate", percent)
                + " (any stat), "
                + cell("ours mmd", f"flag {label}", "rate", percent)
                + " (MMD)",
                cell("reference mmd", f"flag {label}", "rate", percent),
            )
        )
    for share in mix:
        key = f"delay {share:.0%}"
        lines.append(
            (
                f"alarm within 3 windows, {share:.0%} shift",
                ">= 95%",
                cell("ours", key, "alarm_within_3_windows", percent),
                cell("reference mmd", key, "alarm_within_3_windows", percent),
            )
        )
    ours = summary.get("ours", {})
    lines.append(("monitor CPU / embedding CPU per window", "<= 5%", f"{ours.get('cpu_ratio', float('nan')):.2%}", "-"))
    widths = [max(len(row[i]) for row in lines) for i in range(4)]
    for row in lines:
        print("  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
