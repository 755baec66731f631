"""Quality of rag answers per answering version: abstention, groundedness and answer latency.

Why this exists:
    A new ranker, threshold or generator can quietly make answers worse: abstaining on
    everything, or citing passages that do not hold what the answer says. Each responses window
    reports, per answering version (the ranker and answerer or generator that answered, as a
    slice), the share of abstentions, the share of answers every sentence of which a cited
    passage supports, and answer latency; a rise in abstentions or a drop in groundedness alerts.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from streams.monitor.config import Metric, MonitorConfig

HINT_ABSTAIN = (
    "rag abstains more: compare this answering version's confidence with its ranker's abstain_below "
    "(`llmops models list`), check the index is complete (`llmops eval retrieval`), roll back the ranker "
    "if it changed (`llmops models rollback`)"
)
HINT_GROUNDED = (
    "rag answers cite passages that do not hold them: read the 'unsupported' sentences in "
    "inference.responses; a generator is inventing facts (switch it off or roll back), or the passages were withheld"
)


def answering_version(response: dict[str, Any]) -> str:
    """The slice of a rag answer: the models after the embedder (ranker, answerer or generator), as name@version."""
    parts = [f"{m['name']}@{m['version'][:12]}" for m in response["models"][1:]]
    return "+".join(parts) or "unknown"


def rag_metrics(items: list[dict[str, Any]], config: MonitorConfig) -> list[Metric]:
    """Per answering version: abstention rate, grounded rate, answer latency p50/p99."""
    answered: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for response in items:
        if response["task"] == "rag" and response["status"] == "OK":
            answered[answering_version(response)].append(response)
    metrics = []
    for version, responses in sorted(answered.items()):
        n = len(responses)
        enough = n >= config.min_slice_events
        abstained = sum(bool(r.get("abstained")) for r in responses)
        answers = [r for r in responses if not r.get("abstained") and r.get("answer")]
        latency = np.asarray([float(r["latency"]["total_ms"]) for r in responses])
        metrics += [
            Metric(
                "rag.abstention_rate",
                abstained / n,
                "share of rag answers that abstained ('not found in the indexed documents')",
                config.max_abstention_rate if enough else None,
                slice=version,
                count=n,
                hint=HINT_ABSTAIN,
            ),
            Metric(
                "rag.latency_p50_ms", float(np.percentile(latency, 50)), "rag end-to-end ms", slice=version, count=n
            ),
            Metric(
                "rag.latency_p99_ms", float(np.percentile(latency, 99)), "rag end-to-end ms", slice=version, count=n
            ),
        ]
        if answers:
            grounded = sum(r.get("grounded") == "true" for r in answers) / len(answers)
            metrics.append(
                Metric(
                    "rag.grounded_rate",
                    grounded,
                    "share of rag answers whose every sentence a cited passage supports",
                    config.min_grounded_rate if len(answers) >= config.min_slice_events else None,
                    direction="below",
                    slice=version,
                    count=len(answers),
                    severity="critical",
                    hint=HINT_GROUNDED,
                )
            )
    return metrics
