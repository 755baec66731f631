"""False-alarm rate and detection delay of the drift monitor, over many windows of real text.

The reference is the ``reference`` half of the stdlib docstring corpus (as in the integration
test). Held-out chunks (the other half) are embedded once; then, for each of ``--runs`` seeds,
``--windows`` random held-out windows are followed by ``--drift-windows`` windows of installed
packages' long descriptions (METADATA), all through :class:`streams.monitor.monitor.Monitor` with the
configured alert rules. Reported per run and overall:

* raw breach rate: held-out windows where any drift statistic is over its threshold;
* false-alarm rate: held-out windows where a drift alert fires (target <= 1 in 20);
* detection delay: foreign windows until the first drift alert (target <= 3).

Prints JSON and writes bench/out/monitor_drift.json.

    python bench/monitor_drift.py --runs 5 --windows 20 --window 50
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.index.embed import OnnxEmbedder  # noqa: E402
from streams.ingest.chunk import default_tokenizer  # noqa: E402
from streams.monitor.config import MonitorConfig  # noqa: E402
from streams.monitor.detectors import Reference, with_reference_id  # noqa: E402
from streams.monitor.monitor import Monitor  # noqa: E402
from streams.monitor.reference import (  # noqa: E402
    corpus_texts,
    documents_sample,
    package_description_texts,
    sample_chunks,
)
from streams.settings import Settings  # noqa: E402

OUT = ROOT / "bench" / "out"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--windows", type=int, default=20, help="held-out windows per run")
    parser.add_argument("--drift-windows", type=int, default=3)
    parser.add_argument("--window", type=int, default=50, help="events per window")
    args = parser.parse_args()
    settings = Settings(monitor_window_events=args.window, monitor_window_seconds=3600)
    config = MonitorConfig.from_settings(settings)
    tokenizer = default_tokenizer()
    embedder = OnnxEmbedder.from_settings(settings)
    reference_chunks = sample_chunks(corpus_texts("reference"), settings.monitor_reference_size, tokenizer, settings)
    reference = with_reference_id(
        Reference("", "", {"documents": documents_sample(reference_chunks, embedder, tokenizer)}), "bench"
    )
    pool_size = args.window * args.windows * 2
    held_out = sample_chunks(corpus_texts("holdout"), pool_size, tokenizer, settings, seed=1)
    foreign = sample_chunks(package_description_texts(), args.window * args.drift_windows * 4, tokenizer, settings, 2)
    held_vectors = embedder.embed(held_out)
    foreign_vectors = embedder.embed(foreign)
    runs = []
    for run in range(args.runs):
        rng = np.random.default_rng(100 + run)
        monitor = Monitor(config, tokenizer, reference)
        order = rng.permutation(len(held_out))[: args.window * args.windows]
        foreign_order = rng.permutation(len(foreign))[: args.window * args.drift_windows]
        stream = [(held_vectors[i], held_out[i]) for i in order]
        stream += [(foreign_vectors[i], foreign[i]) for i in foreign_order]
        outputs = []
        for vector, text in stream:
            outputs += monitor.on_embedding({"op": "UPSERT", "vector": vector.tolist(), "text": text}, 0)
        snapshots = [r for kind, r in outputs if kind == "snapshot"]
        alerts = [r for kind, r in outputs if kind == "alert" and r["state"] == "FIRING"]
        alert_windows = sorted({int(a["window_id"].split(":")[1]) for a in alerts if a["metric"].startswith("drift.")})
        breaching = [
            s["seq"]
            for s in snapshots
            if s["seq"] <= args.windows and any(m["breached"] for m in s["metrics"] if m["name"].startswith("drift."))
        ]
        detections = [w - args.windows for w in alert_windows if w > args.windows]
        runs.append(
            {
                "false_alarm_windows": [w for w in alert_windows if w <= args.windows],
                "breaching_held_out_windows": breaching,
                "detection_delay_windows": detections[0] if detections else None,
            }
        )
    held_out_windows = args.runs * args.windows
    delays = [r["detection_delay_windows"] for r in runs]
    result = {
        "window_events": args.window,
        "reference_rows": settings.monitor_reference_size,
        "alert_after": config.alert_after,
        "drift_quantile": config.drift_quantile,
        "held_out_windows": held_out_windows,
        "false_alarm_rate": sum(len(r["false_alarm_windows"]) for r in runs) / held_out_windows,
        "raw_breach_rate": sum(len(r["breaching_held_out_windows"]) for r in runs) / held_out_windows,
        "detection_delay_windows": delays,
        "detection_delay_median": statistics.median(d for d in delays if d is not None) if any(delays) else None,
        "missed": sum(d is None for d in delays),
        "runs": runs,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "monitor_drift.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
