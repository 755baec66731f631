"""Monitoring cost per event vs embedding cost per event, measured in the same run.

The events are real: held-out stdlib docstring chunks (what docs.embeddings carries). Each
round embeds N chunks with the production ONNX embedder (its default parallel workers), then
feeds the same N ``ChunkEmbedding`` records through :class:`streams.monitor.monitor.Monitor` with a
stdlib reference (windows of LLMOPS_MONITOR_WINDOW_EVENTS, default 200): text features (WordPiece
unknown tokens, PII scan), MMD and centroid distance against the reference, KS/PSI, alerts.
Threshold calibration happens once when a reference is loaded and is reported apart.

Also times responses and feedback (the join, latency percentiles, accuracy per slice), which
are much cheaper per event than documents.

Prints JSON (CPU and wall seconds per event, monitoring / embedding ratios; target <= 0.05)
and writes bench/out/monitor_cost.json.

    python bench/monitor_cost.py --chunks 1000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.index.embed import OnnxEmbedder  # noqa: E402
from streams.inference.feedback import feedback_record  # noqa: E402
from streams.inference.service import base_response  # noqa: E402
from streams.ingest.chunk import default_tokenizer  # noqa: E402
from streams.monitor.config import MonitorConfig  # noqa: E402
from streams.monitor.detectors import Reference, with_reference_id  # noqa: E402
from streams.monitor.monitor import Monitor  # noqa: E402
from streams.monitor.reference import corpus_texts, documents_sample, sample_chunks  # noqa: E402
from streams.settings import Settings  # noqa: E402

OUT = ROOT / "bench" / "out"


def timed(function: Any, *args: Any) -> tuple[Any, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    result = function(*args)
    return result, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = Settings()
    config = MonitorConfig.from_settings(settings)
    tokenizer = default_tokenizer()
    embedder = OnnxEmbedder.from_settings(settings)
    embedder.embed(["warm-up"] * 8)
    reference_chunks = sample_chunks(corpus_texts("reference"), settings.monitor_reference_size, tokenizer, settings)
    sample = documents_sample(reference_chunks, embedder, tokenizer)
    reference = with_reference_id(Reference("", "", {"documents": sample}), "bench")
    _, calibration_cpu, calibration_wall = timed(reference.thresholds, "documents", config.window_events, config)
    chunks = sample_chunks(corpus_texts("holdout"), args.chunks, tokenizer, settings, seed=1)
    rounds = []
    for _ in range(args.rounds):
        vectors, embed_cpu, embed_wall = timed(embedder.embed, chunks)
        records = [
            {"op": "UPSERT", "vector": [float(x) for x in vector], "text": text}
            for text, vector in zip(chunks, vectors, strict=True)
        ]
        monitor = Monitor(config, tokenizer, reference)

        def monitor_documents(monitor: Monitor = monitor, records: list[dict[str, Any]] = records) -> int:
            return sum(len(monitor.on_embedding(r, 0)) for r in records)

        snapshots, monitor_cpu, monitor_wall = timed(monitor_documents)

        def monitor_answers(monitor: Monitor = monitor) -> None:
            for i in range(len(chunks)):
                response = base_response(f"r{i}", "c", "classify", "OK", tenant=f"t{i % 4}")
                response.update(label="json", probabilities={"json": 0.9, "os": 0.1})
                monitor.on_response(response, 0)
                monitor.on_feedback(feedback_record(f"r{i}", label="json", source="app", language="en"), 0)

        _, answers_cpu, _ = timed(monitor_answers)
        n = len(chunks)
        rounds.append(
            {
                "embed_cpu_ms_per_chunk": embed_cpu / n * 1000,
                "embed_wall_ms_per_chunk": embed_wall / n * 1000,
                "monitor_cpu_ms_per_chunk": monitor_cpu / n * 1000,
                "monitor_wall_ms_per_chunk": monitor_wall / n * 1000,
                "monitor_cpu_ms_per_response_and_feedback": answers_cpu / n * 1000,
                "cpu_ratio": monitor_cpu / embed_cpu,
                "wall_ratio": monitor_wall / embed_wall,
                "snapshots": snapshots,
            }
        )
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0] if key != "snapshots"}
    result = {
        "chunks": len(chunks),
        "window_events": config.window_events,
        "reference_rows": sample.size,
        "calibration_seconds": {"cpu": round(calibration_cpu, 3), "wall": round(calibration_wall, 3)},
        "embedder_workers": embedder.workers,
        "median": {k: round(v, 4) for k, v in median.items()},
        "rounds": rounds,
        "target_ratio": 0.05,
        "met": median["cpu_ratio"] <= 0.05 and median["wall_ratio"] <= 0.05,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "monitor_cost.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
