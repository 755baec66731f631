"""Classification heads on sentence embeddings: training, ONNX export, inference, explanations.

Why this exists:
    Model customization: a team labels records (or gathers labelled feedback) and wants a
    classifier without training a transformer. A logistic-regression head on the embedder's
    vectors trains in seconds on CPU, is exported to ONNX with ``skl2onnx`` (a maintained
    converter), and runs in the infer agent with ONNX Runtime beside the embedder.

Data:
    JSONL records ``{"text": str, "label": str}`` (an ``id`` is used for the split when
    present), or the stdlib docstring corpus labelled by top-level module. The split is by a
    hash of each record's id (or text), so training and every later QA evaluation agree on
    which records are held out, on any machine.

Usage:
    >>> data = stdlib_topic_dataset(classes=10, per_class=120)
    >>> trained = train_classifier(embedder, data)          # holdout metrics included
    >>> head = OnnxClassifier(trained.onnx, trained.labels)
    >>> head.predict(embedder.embed(["Return the path's parent directory."]))
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streams.index.embed import Embedder
from streams.models.artifacts import DEFAULT_MAX_BYTES, check_onnx_bytes

EXPLAIN_METHOD = "leave-one-out word occlusion: drop in the predicted label's probability without the word"
EXPLAIN_MAX_WORDS = 64
HOLDOUT_BUCKETS = 5  # one record in five is held out


@dataclass(frozen=True)
class LabelledText:
    """One training or evaluation record."""

    key: str
    text: str
    label: str

    @property
    def held_out(self) -> bool:
        digest = hashlib.sha256(self.key.encode("utf-8", "surrogatepass")).digest()
        return digest[0] % HOLDOUT_BUCKETS == 0


def read_labelled_jsonl(path: Path) -> list[LabelledText]:
    """``{"text", "label"[, "id"]}`` per line; a bad line is an error that names it."""
    records = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                text, label = obj["text"], obj["label"]
                if not isinstance(text, str) or not isinstance(label, str) or not text.strip():
                    raise TypeError("'text' and 'label' must be non-empty strings")
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: expected {{'text': str, 'label': str}}: {error!r}") from None
            records.append(LabelledText(str(obj.get("id") or text), text, label))
    return records


def stdlib_topic_dataset(classes: int = 10, per_class: int = 120) -> list[LabelledText]:
    """Stdlib docstrings labelled by top-level module: the ``classes`` largest modules, capped."""
    from streams.ingest.corpus import stdlib_documents

    by_module: dict[str, list[LabelledText]] = defaultdict(list)
    for document in stdlib_documents():
        module = document["id"].split(":", 1)[1].split(".")[0]
        by_module[module].append(LabelledText(document["id"], document["text"], module))
    largest = sorted(by_module, key=lambda m: (-len(by_module[m]), m))[:classes]
    return [
        record for module in sorted(largest) for record in sorted(by_module[module], key=lambda r: r.key)[:per_class]
    ]


def split(records: Sequence[LabelledText]) -> tuple[list[LabelledText], list[LabelledText]]:
    """(train, holdout) by the records' hashed keys."""
    return [r for r in records if not r.held_out], [r for r in records if r.held_out]


@dataclass(frozen=True)
class TrainedClassifier:
    """An exported head and how it did on the held-out split."""

    onnx: bytes
    labels: tuple[str, ...]
    metrics: dict[str, float]


class OnnxClassifier:
    """A classification head on ONNX Runtime: vectors in, probabilities per label out."""

    def __init__(self, graph: bytes, labels: Sequence[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        """Load ``graph`` from its bytes alone (never a file it names) after :func:`check_onnx_bytes`.

        Raises:
            ControlRejected: the graph is too large, malformed, or references external data.
        """
        import onnxruntime as ort

        check_onnx_bytes(graph, max_bytes)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.labels = tuple(labels)

    def probabilities(self, vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        outputs = self._session.run(["probabilities"], {self._input: np.ascontiguousarray(vectors, dtype=np.float32)})
        probabilities: npt.NDArray[np.float32] = np.asarray(outputs[0], dtype=np.float32)
        return probabilities

    def predict(self, vectors: npt.NDArray[np.float32]) -> list[tuple[str, dict[str, float]]]:
        """(label, probability per label) per row."""
        rows = self.probabilities(vectors)
        return [
            (self.labels[int(np.argmax(row))], {label: float(p) for label, p in zip(self.labels, row, strict=True)})
            for row in rows
        ]


def _label_ids(records: Sequence[LabelledText], labels: Sequence[str]) -> npt.NDArray[np.int64]:
    index = {label: i for i, label in enumerate(labels)}
    return np.asarray([index[r.label] for r in records], dtype=np.int64)


def evaluate(
    head: OnnxClassifier, embedder: Embedder, records: Sequence[LabelledText], vectors: Any = None
) -> dict[str, float]:
    """Accuracy and macro-F1 on ``records`` (labels unknown to the head count as errors)."""
    if not records:
        raise ValueError("no records to evaluate on")
    vectors = embedder.embed([r.text for r in records]) if vectors is None else vectors
    predicted = [label for label, _ in head.predict(vectors)]
    truth = [r.label for r in records]
    accuracy = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
    f1s = []
    for label in sorted(set(truth)):
        tp = sum(p == t == label for p, t in zip(predicted, truth, strict=True))
        fp = sum(p == label != t for p, t in zip(predicted, truth, strict=True))
        fn = sum(t == label != p for p, t in zip(predicted, truth, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {"accuracy": accuracy, "macro_f1": float(np.mean(f1s)), "records": float(len(records))}


def train_classifier(
    embedder: Embedder, records: Sequence[LabelledText], regularization: float = 4.0, seed: int = 0
) -> TrainedClassifier:
    """Fit a logistic-regression head on the training split, export it, score it on the holdout."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    train, holdout = split(records)
    counts = Counter(r.label for r in train)
    if len(counts) < 2:
        raise ValueError(f"need at least two labels in the training split, got {sorted(counts)}")
    labels = tuple(sorted(counts))
    train_vectors = embedder.embed([r.text for r in train])
    model = LogisticRegression(C=regularization, max_iter=2000, random_state=seed)
    model.fit(train_vectors, _label_ids(train, labels))
    graph = to_onnx(
        model,
        train_vectors[:1].astype(np.float32),
        options={id(model): {"zipmap": False}},
        target_opset={"": 17, "ai.onnx.ml": 3},
    ).SerializeToString()
    head = OnnxClassifier(graph, labels)
    known = [r for r in holdout if r.label in counts]
    metrics = {f"holdout_{k}": v for k, v in evaluate(head, embedder, known).items()} if known else {}
    metrics["train_records"] = float(len(train))
    metrics["classes"] = float(len(labels))
    return TrainedClassifier(graph, labels, metrics)


def explain(head: OnnxClassifier, embedder: Embedder, text: str, top: int = 8) -> tuple[list[tuple[str, float]], str]:
    """The words whose removal moves the predicted label's probability most (leave-one-out)."""
    words = text.split()[:EXPLAIN_MAX_WORDS]
    if len(words) < 2:
        return [], EXPLAIN_METHOD
    variants = [" ".join(words)] + [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]
    rows = head.probabilities(embedder.embed(variants))
    predicted = int(np.argmax(rows[0]))
    drops = rows[0, predicted] - rows[1:, predicted]
    ranked = sorted(range(len(words)), key=lambda i: -abs(float(drops[i])))[:top]
    return [(words[i], round(float(drops[i]), 4)) for i in ranked], EXPLAIN_METHOD


def unique_labels(records: Iterable[LabelledText]) -> list[str]:
    return sorted({r.label for r in records})
