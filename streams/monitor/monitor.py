"""Online monitoring: tumbling windows, drift, quality, fairness, latency, cost, and alerts.

Why this exists:
    The monitor agent only wires four topics to :class:`Monitor`; every decision lives here as
    plain code that tests drive with a list of records and a fake clock. Each stream has its own
    tumbling window, closed by count or by time (whichever comes first); a closed window becomes
    one snapshot of statistics, and :class:`AlertManager` turns breaching statistics into alerts.

Streams and what their snapshots hold:
    * ``documents`` (``docs.embeddings`` UPSERTs): embedding drift (MMD, centroid distance), input
      drift on text features (KS and PSI), chunks/s, tokens, worker CPU seconds per 1,000 chunks.
    * ``requests`` (``inference.requests``): input drift of the request texts, requests/s, tokens.
    * ``responses`` (``inference.responses``): latency p50/p95/p99 per stage and end to end, share
      not OK, compute milliseconds per request, output drift (predicted labels, top-1 retrieval
      score), and the label-free quality estimate (mean max-probability of classify answers).
    * ``feedback`` (``feedback`` joined with responses by request id in a table with a TTL):
      accuracy overall and per tenant, source and language; the best-worst slice gap (fairness).

Alerts (one incident = one FIRING and one RESOLVED event):
    raised after ``alert_after`` breaching windows in a row, resolved after ``clear_after``
    healthy windows in a row, then not raised again for ``cooldown_windows`` windows.

Usage:
    >>> monitor = Monitor(MonitorConfig.from_settings(settings), tokenizer)
    >>> outputs = monitor.on_embedding(record, timestamp_ms) + monitor.tick()
    >>> for kind, record in outputs: ...   # kind is "snapshot" or "alert"
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from streams.index.spec import INDEX_MODEL
from streams.monitor.alerts import AlertManager
from streams.monitor.answers import rag_metrics
from streams.monitor.config import STREAMS, Metric, MonitorConfig, Output
from streams.monitor.detectors import (
    Reference,
    accuracy_metrics,
    drift_metrics,
    feature_means,
    rate_metric,
    response_metrics,
)
from streams.monitor.drift import WindowSample
from streams.monitor.index_versions import REFERENCE_CLIENT, sample_name_for, top1_scores_by_index
from streams.monitor.text_features import DRIFT_FEATURES, UnknownTokenCounter, text_features
from streams.monitor.windows import TtlTable, TumblingWindow, Window
from streams.records import now_ms as epoch_ms


@dataclass(frozen=True)
class _Answer:
    label: str | None
    tenant: str | None


class Monitor:
    """Every window of every stream, the feedback join, drift against the reference, and alerts."""

    def __init__(
        self,
        config: MonitorConfig,
        tokenizer: UnknownTokenCounter,
        reference: Reference | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
        now_ms: Callable[[], int] | None = None,
        on_outputs: Callable[[list[Output]], None] | None = None,
    ) -> None:
        self.config, self.tokenizer, self.reference = config, tokenizer, reference
        self.clock, self.cpu_clock = clock, cpu_clock
        self.now_ms = now_ms or epoch_ms
        self.on_outputs = on_outputs
        self.alerts = AlertManager(config.alert_after, config.clear_after, config.cooldown_windows, self.now_ms)
        self.windows: dict[str, TumblingWindow[Any]] = {
            s: TumblingWindow(s, config.window_events, config.window_seconds) for s in STREAMS
        }
        self.answers: TtlTable[_Answer] = TtlTable(config.feedback_ttl_seconds)
        self.pending_feedback: TtlTable[dict[str, Any]] = TtlTable(config.feedback_ttl_seconds)
        self.unmatched_feedback = 0
        self._cpu_mark = cpu_clock()

    def set_reference(self, reference: Reference | None) -> None:
        self.reference = reference

    # --- inputs ------------------------------------------------------------------------------
    def on_embedding(self, record: Mapping[str, Any], timestamp_ms: int) -> list[Output]:
        """A ``ChunkEmbedding``; deletions are not monitored."""
        if record["op"] != "UPSERT" or not record["vector"]:
            return []
        return self._add("documents", (record["vector"], record["text"]), timestamp_ms)

    def on_request(self, record: Mapping[str, Any], timestamp_ms: int) -> list[Output]:
        """An ``InferenceRequest`` (as decoded from Avro or JSON); the monitor's own questions are not counted."""
        if record.get("client_id") == REFERENCE_CLIENT:
            return []
        return self._add("requests", str(record.get("text") or ""), timestamp_ms)

    def on_response(self, record: Mapping[str, Any], timestamp_ms: int) -> list[Output]:
        """An ``InferenceResponse``: windowed, and kept for the feedback join (not the monitor's own questions)."""
        if record.get("client_id") == REFERENCE_CLIENT:
            return []
        outputs: list[Output] = []
        answer = _Answer(record.get("label"), record.get("tenant"))
        pending = self.pending_feedback.pop(record["request_id"])
        if pending is not None:
            outputs += self._judge(pending, answer, timestamp_ms)
        else:
            self.answers.put(record["request_id"], answer, self.clock())
        return outputs + self._add("responses", dict(record), timestamp_ms)

    def on_feedback(self, record: Mapping[str, Any], timestamp_ms: int) -> list[Output]:
        """A ``Feedback``: judged now if its response was seen, else kept until it arrives or expires."""
        answer = self.answers.get(record["request_id"])
        if answer is None:
            self.pending_feedback.put(record["request_id"], dict(record), self.clock())
            return []
        return self._judge(record, answer, timestamp_ms)

    def flush(self, how: Literal["stop", "rebalance"] = "stop") -> list[Output]:
        """Close every window that has events: nothing seen goes unreported.

        ``how`` says why: the worker is stopping, or it is giving up partitions at a rebalance (the
        records it counted are committed; the next owner counts from there).
        """
        outputs: list[Output] = []
        for window in self.windows.values():
            closed = window.close_now(how)
            if closed is not None:
                outputs += self._snapshot(closed)
        return outputs

    def tick(self) -> list[Output]:
        """Close windows whose time is up and expire the join tables; call about once a second."""
        now = self.clock()
        self.answers.expire(now)
        self.unmatched_feedback += self.pending_feedback.expire(now)
        outputs: list[Output] = []
        for window in self.windows.values():
            closed = window.due(now)
            if closed is not None:
                outputs += self._snapshot(closed)
        return outputs

    # --- internals ---------------------------------------------------------------------------
    def _judge(self, feedback: Mapping[str, Any], answer: _Answer, timestamp_ms: int) -> list[Output]:
        if feedback.get("label") is not None and answer.label is not None:
            correct = feedback["label"] == answer.label
        elif feedback.get("rating") is not None:
            correct = float(feedback["rating"]) >= 0.5
        else:
            return []  # nothing to judge by (a label for an answer that has none, and no rating)
        item = {
            "correct": correct,
            "tenant": feedback.get("tenant") or answer.tenant,
            "source": feedback.get("source"),
            "language": feedback.get("language"),
        }
        return self._add("feedback", item, timestamp_ms)

    def _add(self, stream: str, item: Any, timestamp_ms: int) -> list[Output]:
        closed = self.windows[stream].add(item, timestamp_ms, self.clock())
        return self._snapshot(closed) if closed is not None else []

    def _snapshot(self, window: Window[Any]) -> list[Output]:
        builders: dict[str, Callable[[Window[Any]], list[Metric]]] = {
            "documents": self._documents,
            "requests": self._requests,
            "responses": self._responses,
            "feedback": lambda w: accuracy_metrics(w.items, self.config),
        }
        metrics = [rate_metric(window), *builders[window.stream](window)]
        snapshot = {
            "window_id": window.window_id,
            "stream": window.stream,
            "seq": window.seq,
            "start_ms": window.start_ms,
            "end_ms": window.end_ms,
            "events": len(window.items),
            "closed_by": window.closed_by,
            "reference_id": self.reference.reference_id if self.reference else None,
            "metrics": [m.to_avro() for m in metrics],
            "created_at_ms": self.now_ms(),
        }
        outputs: list[Output] = [("snapshot", snapshot)]
        outputs += [("alert", alert) for alert in self.alerts.observe(metrics, window)]
        if self.on_outputs is not None:
            self.on_outputs(outputs)
        return outputs

    def _documents(self, window: Window[Any]) -> list[Metric]:
        texts = [text for _, text in window.items]
        features = text_features(texts, self.tokenizer, redacted=True)
        vectors = np.asarray([vector for vector, _ in window.items], dtype=np.float32)
        sample = WindowSample(vectors=vectors, numeric={k: features[k] for k in DRIFT_FEATURES})
        cpu_now = self.cpu_clock()
        cpu, self._cpu_mark = cpu_now - self._cpu_mark, cpu_now
        n = len(texts)
        return [
            Metric("tokens.processed", float(features["tokens"].sum()), "WordPiece tokens of the chunks", count=n),
            Metric(
                "cost.cpu_seconds_per_1000_chunks",
                cpu / n * 1000,
                "process CPU seconds of the monitor's worker (every agent it runs) since the previous "
                "documents window, per 1,000 chunks",
                count=n,
            ),
            *feature_means(features, "documents", n),
            *drift_metrics(self.reference, "documents", sample, self.config),
        ]

    def _requests(self, window: Window[Any]) -> list[Metric]:
        features = text_features(window.items, self.tokenizer)
        n = len(window.items)
        sample = WindowSample(numeric={k: features[k] for k in DRIFT_FEATURES})
        return [
            Metric("tokens.processed", float(features["tokens"].sum()), "WordPiece tokens of request texts", count=n),
            *feature_means(features, "requests", n),
            *drift_metrics(self.reference, "requests", sample, self.config),
        ]

    def _responses(self, window: Window[Any]) -> list[Metric]:
        items = window.items
        metrics = response_metrics(items, self.config) + rag_metrics(items, self.config)
        labels = [r["label"] for r in items if r["status"] == "OK" and r.get("label")]
        # Scores are compared only with the reference of the index version that answered them.
        for version, scores in sorted(top1_scores_by_index(items).items(), key=lambda pair: pair[0] or ""):
            name = sample_name_for(self.reference, "responses.scores", version)
            if name is None:
                continue  # no reference of this index version (yet): not compared
            sample = WindowSample(numeric={"top1_score": np.asarray(scores, dtype=np.float64)})
            found = drift_metrics(self.reference, name, sample, self.config)
            metrics += [replace(m, slice=f"{INDEX_MODEL}@{version[:12]}") for m in found] if version else found
        if labels:
            sample = WindowSample(categorical={"predicted_label": labels})
            metrics += drift_metrics(self.reference, "responses.labels", sample, self.config)
        return metrics
