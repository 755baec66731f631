"""``make run``'s monitor on its own corpus, in process: no drift alert on the corpus, one on the shifted batch.

The demo's reference exactly as ``set_stdlib_reference(split="all")`` builds it (a share of every
package, seed 0, ``LLMOPS_MONITOR_REFERENCE_SIZE`` rows), then every chunk of the stdlib corpus in
publication order through :class:`streams.monitor.monitor.Monitor` (windows of
``LLMOPS_MONITOR_WINDOW_EVENTS``), then the demo's labelled shifted batch
(:func:`streams.cli.demo_monitor.shifted_documents`). Prints each window's packages, its novel
share and centroid distance against their thresholds, every breaching drift statistic and every
drift alert. Strict publication order is the hard case: the real worker interleaves partitions.
Vectors are cached under bench/out like bench/monitor_drift.py's; no broker is needed, so it runs
where ``make run`` cannot catch up with the corpus (a loaded machine).

    python bench/monitor_demo_replay.py
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.monitor_drift import embedded  # noqa: E402
from streams.cli.demo_monitor import shifted_documents  # noqa: E402
from streams.index.embed import OnnxEmbedder  # noqa: E402
from streams.ingest.chunk import default_tokenizer  # noqa: E402
from streams.ingest.corpus import stdlib_documents  # noqa: E402
from streams.monitor.config import MonitorConfig  # noqa: E402
from streams.monitor.detectors import Reference, with_reference_id  # noqa: E402
from streams.monitor.drift import ReferenceSample  # noqa: E402
from streams.monitor.monitor import Monitor  # noqa: E402
from streams.monitor.reference import corpus_blocks, document_chunks, stratified_blocks  # noqa: E402
from streams.monitor.text_features import DRIFT_FEATURES, text_features  # noqa: E402
from streams.settings import Settings  # noqa: E402


def metric(snapshot: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in snapshot["metrics"] if m["name"] == name)


def main() -> None:
    settings = Settings()
    tokenizer = default_tokenizer()
    embedder = OnnxEmbedder.from_settings(settings)

    def chunked(text: str) -> list[str]:
        return document_chunks([text], tokenizer, settings)

    stream = [(c, d["metadata"]["top_level"]) for d in stdlib_documents() for c in chunked(d["text"])]
    shifted = [(c, "SHIFTED BATCH") for d in shifted_documents(settings) for c in chunked(d["text"])]
    rows = stream + shifted
    vectors = np.concatenate([embedded(embedder, [c for c, _ in part])[0] for part in (stream, shifted)])
    by_text = {text: vector for (text, _), vector in zip(rows, vectors, strict=True)}
    chunks, groups, total = stratified_blocks(corpus_blocks("all"), settings.monitor_reference_size, 0, chunked)
    features = text_features(chunks, tokenizer, redacted=True)
    sample = ReferenceSample(  # float16, as stored on monitor.reference
        vectors=np.asarray([by_text[c] for c in chunks], dtype=np.float16).astype(np.float64),
        numeric={k: features[k] for k in DRIFT_FEATURES},
        groups=groups,
        drawn_from=total,
    )
    reference = with_reference_id(Reference("", "", {"documents": sample}), "make run's reference")
    config = MonitorConfig.from_settings(settings)
    thresholds = reference.thresholds("documents", config.window_events, config)
    assert thresholds is not None
    packages = {p for _, p in stream}
    print(
        f"reference {sample.size} rows of {len(set(groups))} of {len(packages)} packages, corpus {total} chunks; "
        f"null windows of {thresholds.span} rows; stream {len(stream)} chunks, then {len(shifted)} shifted"
    )
    monitor = Monitor(config, tokenizer, reference)
    in_window: list[set[str]] = []
    alerts = []
    for index, ((text, package), vector) in enumerate(zip(rows, vectors, strict=True)):
        if index % config.window_events == 0:
            in_window.append(set())
        in_window[-1].add(package)
        for kind, record in monitor.on_embedding({"op": "UPSERT", "vector": vector.tolist(), "text": text}, 0):
            if kind == "alert" and record["state"] == "FIRING" and record["metric"].startswith("drift."):
                alerts.append(record)
                print(f"  ALERT {record['metric']} = {record['value']:.4g} > {record['threshold']:.4g}")
            if kind != "snapshot":
                continue
            novel = metric(record, "drift.embedding.novel_share")
            centroid = metric(record, "drift.embedding.centroid_cosine")
            breached = [
                f"{m['name']} {m['value']:.4g} > {m['threshold']:.4g} (p {m['p_value']:.3g})"
                for m in record["metrics"]
                if m["name"].startswith("drift.") and m["breached"]
            ]
            names = sorted(in_window[record["seq"] - 1])
            print(
                f"window {record['seq']:3d} {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}: novel share "
                f"{novel['value']:.3f} / {novel['threshold']:.3f}, centroid {centroid['value']:.3f} / "
                f"{centroid['threshold']:.3f}; breaching: {'; '.join(breached) or 'none'}"
            )
    own = [a for a in alerts if int(a["window_id"].split(":")[1]) * config.window_events <= len(stream)]
    print(f"drift alerts on the corpus: {len(own)}; on the shifted batch: {len(alerts) - len(own)}")


if __name__ == "__main__":
    main()
