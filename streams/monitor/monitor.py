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

Records held until their window is reported:
    Each input may carry a ``token`` (the agent's handle on the record's offset). The monitor holds
    the tokens of the records in a window while it is open; when it closes (by count, time, stop or
    rebalance) they move to :meth:`Monitor.take_released`, in the same call that returned its
    snapshot, so the caller acknowledges a record only after publishing the window that counted it.
    A record the monitor does not window (a deletion, the monitor's own questions, feedback with
    nothing to judge by or waiting in the join for its response) is released at once.

Usage:
    >>> monitor = Monitor(MonitorConfig.from_settings(settings), tokenizer)
    >>> outputs = monitor.on_embedding(record, timestamp_ms, token=offset) + monitor.tick()
    >>> for kind, record in outputs: ...   # kind is "snapshot" or "alert"
    >>> acknowledge(monitor.take_released())   # after the outputs were published
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
        self._held: dict[str, list[object]] = {s: [] for s in STREAMS}  # tokens of each open window
        self._released: list[object] = []

    @property
    def holding(self) -> int:
        """Tokens of records in open windows (not yet released)."""
        return sum(len(tokens) for tokens in self._held.values())

    def take_released(self) -> list[object]:
        """Tokens of the records whose windows closed (or that no window holds) since the last call."""
        released, self._released = self._released, []
        return released

    def set_reference(self, reference: Reference | None) -> None:
        self.reference = reference

    # --- inputs ------------------------------------------------------------------------------
    def on_embedding(self, record: Mapping[str, Any], timestamp_ms: int, token: object = None) -> list[Output]:
        """A ``ChunkEmbedding``; deletions are not monitored."""
        if record["op"] != "UPSERT" or not record["vector"]:
            return self._release(token)
        return self._add("documents", (record["vector"], record["text"]), timestamp_ms, token)

    def on_request(self, record: Mapping[str, Any], timestamp_ms: int, token: object = None) -> list[Output]:
        """An ``InferenceRequest`` (as decoded from Avro or JSON); the monitor's own questions are not counted."""
        if record.get("client_id") == REFERENCE_CLIENT:
            return self._release(token)
        return self._add("requests", str(record.get("text") or ""), timestamp_ms, token)

    def on_response(self, record: Mapping[str, Any], timestamp_ms: int, token: object = None) -> list[Output]:
        """An ``InferenceResponse``: windowed, and kept for the feedback join (not the monitor's own questions)."""
        if record.get("client_id") == REFERENCE_CLIENT:
            return self._release(token)
        outputs: list[Output] = []
        answer = _Answer(record.get("label"), record.get("tenant"))
        pending = self.pending_feedback.pop(record["request_id"])
        if pending is not None:
            outputs += self._judge(pending, answer, timestamp_ms)
        else:
            self.answers.put(record["request_id"], answer, self.clock())
        return outputs + self._add("responses", dict(record), timestamp_ms, token)

    def on_feedback(self, record: Mapping[str, Any], timestamp_ms: int, token: object = None) -> list[Output]:
        """A ``Feedback``: judged now if its response was seen, else kept until it arrives or expires.

        Feedback waiting for its response is released at once: the join lives in this worker's
        memory (a restarted worker has lost the responses it would be judged by anyway), and
        holding it would hold back the commits of its partition for up to the join's TTL.
        """
        answer = self.answers.get(record["request_id"])
        if answer is None:
            self.pending_feedback.put(record["request_id"], dict(record), self.clock())
            return self._release(token)
        return self._judge(record, answer, timestamp_ms, token)

    def flush(self, how: Literal["stop", "rebalance"] = "stop") -> list[Output]:
        """Close every window that has events: nothing seen goes unreported.

        ``how`` says why: the worker is stopping, or it is giving up partitions at a rebalance (the
        records it counted are committed; the next owner counts from there).
        """
        outputs: list[Output] = []
        for window in self.windows.values():
            closed = window.close_now(how)
            if closed is not None:
                outputs += self._closed(closed)
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
                outputs += self._closed(closed)
        return outputs

    # --- internals ---------------------------------------------------------------------------
    def _judge(
        self, feedback: Mapping[str, Any], answer: _Answer, timestamp_ms: int, token: object = None
    ) -> list[Output]:
        if feedback.get("label") is not None and answer.label is not None:
            correct = feedback["label"] == answer.label
        elif feedback.get("rating") is not None:
            correct = float(feedback["rating"]) >= 0.5
        else:
            return self._release(token)  # nothing to judge by (a label for an answer that has none, and no rating)
        item = {
            "correct": correct,
            "tenant": feedback.get("tenant") or answer.tenant,
            "source": feedback.get("source"),
            "language": feedback.get("language"),
        }
        return self._add("feedback", item, timestamp_ms, token)

    def _add(self, stream: str, item: Any, timestamp_ms: int, token: object = None) -> list[Output]:
        if token is not None:
            self._held[stream].append(token)  # before add: the window it may close holds this record
        closed = self.windows[stream].add(item, timestamp_ms, self.clock())
        return self._closed(closed) if closed is not None else []

    def _release(self, token: object) -> list[Output]:
        if token is not None:
            self._released.append(token)
        return []

    def _closed(self, window: Window[Any]) -> list[Output]:
        """The outputs of a closed window; the tokens of its records are released."""
        self._released += self._held[window.stream]
        self._held[window.stream] = []
        return self._snapshot(window)

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
