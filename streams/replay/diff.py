"""``llmops replay diff``: compare what a replay produced with live traffic or another replay.

Why this exists:
    A replay proves a result reproducible only if someone compares, record by record. This
    module reads both sides from Kafka (the final chunk set and vectors from
    ``docs.embeddings``, dead letters and duplicate notices, responses to replayed requests)
    and from the replay's Milvus collection, then sorts every difference into *explained*
    (with the reason: a duplicate of a document outside the range, a live index that held other
    documents) and *unexplained*. Any unexplained difference makes the command exit non-zero.

Comparison rules:
    Chunks: same ids and content hashes. Vectors: bitwise when both sides ran the same embedder
    version; when the versions differ the diff says so and compares by cosine against
    ``tolerance`` (default 0.999), and vectors below it are differences. Requests: status,
    label, ranked chunk ids, and scores (within float32 rounding, 1e-6, with the same models,
    else within 1e-4). Not bitwise: two replays of the same range were seen one float32 ulp
    (5.96e-08) apart on one response with identical ranked ids, the kind of rounding that the
    search path can produce when timing differs (which segment, growing or indexed, Milvus
    scores a chunk on); which step rounded was not pinned down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streams.kafka.admin import read_topic, response_topics
from streams.kafka.avro import codec_from_settings
from streams.kafka.topics import DOCS_RAW, INFERENCE_REQUESTS, Topics
from streams.records import SOURCE_HEADER
from streams.replay.runner import Manifest, ReplayError, read_manifests, read_ranges, replay_dir, replay_settings
from streams.settings import Settings

SAME_MODEL_SCORE_TOLERANCE = 1e-6  # float32 rounding: see the module docstring

MAX_LISTED = 50


@dataclass
class Side:
    """What one namespace produced for the replayed range."""

    label: str
    embedder_version: str
    chunks: dict[str, tuple[str, str]] = field(default_factory=dict)  # chunk_id -> (doc_id, content_hash)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    dead_letters: Counter[str] = field(default_factory=Counter)
    duplicates: dict[str, str] = field(default_factory=dict)  # doc_id -> duplicate_of
    responses: dict[str, dict[str, Any]] = field(default_factory=dict)
    index_ids: set[str] | None = None
    index_note: str = ""


def _source(message: Any) -> str:
    value: bytes = dict(message.headers or ()).get(SOURCE_HEADER, b"")
    return value.decode()


async def _messages(settings: Settings, topic: str, sources: set[str] | None) -> list[Any]:
    """Records of ``topic`` (all of it), kept when their source is in ``sources`` (None = all)."""
    return [m async for m in read_topic(settings, topic) if sources is None or _source(m) in sources]


async def load_side(
    settings: Settings, label: str, embedder_version: str, sources: set[str] | None, request_ids: set[str] | None
) -> Side:
    """Read one namespace's outputs; ``sources`` limits them to records from the replayed range."""
    codec = codec_from_settings(settings)
    topics = Topics(settings.namespace)
    side = Side(label, embedder_version)
    for message in await _messages(settings, topics.docs_embeddings, sources):
        record = codec.decode(message.value, "ChunkEmbedding")
        doc_id = record["doc_id"]
        if record["op"] == "UPSERT":
            side.chunks[record["chunk_id"]] = (doc_id, record["content_hash"])
            side.vectors[record["chunk_id"]] = np.asarray(record["vector"], dtype=np.float32)
        elif record["chunk_index"] < 0:
            for chunk_id in [c for c, (d, _) in side.chunks.items() if d == doc_id]:
                side.chunks.pop(chunk_id)
                side.vectors.pop(chunk_id, None)
        else:
            side.chunks.pop(record["chunk_id"], None)
            side.vectors.pop(record["chunk_id"], None)
    for message in await _messages(settings, topics.deadletter, sources):
        letter = codec.decode(message.value, "DeadLetter")
        side.dead_letters[f"{letter['stage']}:{letter['reason']}"] += 1
    for message in await _messages(settings, topics.docs_duplicates, sources):
        notice = codec.decode(message.value, "DuplicateNotice")
        side.duplicates[notice["doc_id"]] = notice["duplicate_of"]
    if request_ids is not None:
        for topic in await response_topics(settings):  # the shared one and each tenant's
            async for message in read_topic(settings, topic):
                response = codec.decode(message.value, "InferenceResponse")
                if response["request_id"] in request_ids:
                    side.responses[response["request_id"]] = response
    return side


def load_index(settings: Settings, side: Side) -> None:
    """Chunk ids in the side's Milvus collection, or a note saying why they could not be read."""
    import logging

    from streams.index.vectorstore import MilvusStore

    quiet = logging.getLogger("milvus_lite")
    level, quiet.level = quiet.level, logging.CRITICAL  # a held lock is expected here, not an error to log
    try:
        store = MilvusStore.from_settings(settings, side.embedder_version)
    except Exception:  # noqa: BLE001 - Milvus Lite held by a running worker, or no server
        side.index_note = (
            f"index of {side.label} not compared: its Milvus could not be opened (a running worker holds the "
            "Milvus Lite file; stop it, or use a Milvus server)"
        )
        return
    finally:
        quiet.setLevel(level)
    try:
        side.index_ids = set(store.all_chunk_ids())
    finally:
        store.close()


@dataclass
class DiffReport:
    """Counts per category, every difference listed (up to a limit), explained or not."""

    left: str
    right: str
    counts: dict[str, int] = field(default_factory=dict)
    explained: list[dict[str, Any]] = field(default_factory=list)
    unexplained: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.unexplained

    def add(self, kind: str, record: str, detail: str, reason: str | None = None) -> None:
        entry = {"kind": kind, "record": record, "detail": detail}
        if reason:
            self.explained.append({**entry, "reason": reason})
        else:
            self.unexplained.append(entry)

    def to_json(self) -> dict[str, Any]:
        return {
            "left": self.left,
            "right": self.right,
            "identical": self.identical,
            "counts": self.counts,
            "notes": self.notes,
            "unexplained": self.unexplained[:MAX_LISTED],
            "unexplained_total": len(self.unexplained),
            "explained": self.explained[:MAX_LISTED],
            "explained_total": len(self.explained),
        }


def compare(left: Side, right: Side, tolerance: float = 0.999, in_range_docs: set[str] | None = None) -> DiffReport:
    """Every difference between two sides, explained where a reason is known."""
    report = DiffReport(left.label, right.label)
    same_model = left.embedder_version == right.embedder_version
    if not same_model:
        report.notes.append(
            f"embedder differs: {left.label} {left.embedder_version[:12]} vs {right.label} "
            f"{right.embedder_version[:12]}; vectors compared by cosine >= {tolerance}"
        )
    _compare_chunks(report, left, right, in_range_docs or set())
    _compare_vectors(report, left, right, same_model, tolerance)
    if left.dead_letters != right.dead_letters:
        report.add("dead_letters", "*", f"{dict(left.dead_letters)} vs {dict(right.dead_letters)}")
    _compare_index(report, left, right)
    _compare_responses(report, left, right, same_model)
    return report


def _compare_chunks(report: DiffReport, left: Side, right: Side, in_range_docs: set[str]) -> None:
    ids = set(left.chunks) | set(right.chunks)
    equal = 0
    for chunk_id in sorted(ids):
        a, b = left.chunks.get(chunk_id), right.chunks.get(chunk_id)
        if a == b:
            equal += 1
            continue
        doc_id = (a or b or ("", ""))[0]
        reason = None
        for side, other in ((left, right), (right, left)):
            original = side.duplicates.get(doc_id)
            if original is not None and original not in in_range_docs and chunk_id in other.chunks:
                reason = (
                    f"{side.label} skipped {doc_id} as a duplicate of {original}, which is outside the replayed "
                    "range (dedup state from before the range)"
                )
        if a is None or b is None:
            where = left.label if a is not None else right.label
            report.add("chunk_only_in", chunk_id, f"only in {where}", reason)
        else:
            report.add("chunk_content", chunk_id, f"content hash {a[1][:12]} vs {b[1][:12]}", reason)
    report.counts["chunks_equal"] = equal
    report.counts["chunks_total"] = len(ids)


def _compare_vectors(report: DiffReport, left: Side, right: Side, same_model: bool, tolerance: float) -> None:
    bitwise = close = 0
    worst = 1.0
    for chunk_id in sorted(set(left.vectors) & set(right.vectors)):
        a, b = left.vectors[chunk_id], right.vectors[chunk_id]
        if a.shape == b.shape and np.array_equal(a, b):
            bitwise += 1
            continue
        cosine = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)) if a.shape == b.shape else 0.0
        worst = min(worst, cosine)
        if not same_model and cosine >= tolerance:
            close += 1
            continue
        why = "same embedder version, yet the bits differ" if same_model else f"cosine {cosine:.5f} < {tolerance}"
        report.add("vector", chunk_id, why)
    report.counts["vectors_bitwise_equal"] = bitwise
    report.counts["vectors_within_tolerance"] = close
    if bitwise + close < len(set(left.vectors) & set(right.vectors)):
        report.notes.append(f"lowest vector cosine between the sides: {worst:.5f}")


def _compare_index(report: DiffReport, left: Side, right: Side) -> None:
    for side in (left, right):
        if side.index_note:
            report.notes.append(side.index_note)
        elif side.index_ids is not None:
            missing = set(side.chunks) - side.index_ids
            for chunk_id in sorted(missing):
                report.add("index_missing", chunk_id, f"in {side.label}'s final chunk set but not in its index")
            report.counts[f"index_{side.label}"] = len(side.index_ids)


def _compare_responses(report: DiffReport, left: Side, right: Side, same_model: bool) -> None:
    if not left.responses and not right.responses:
        return
    equal = 0
    for request_id in sorted(set(left.responses) | set(right.responses)):
        a, b = left.responses.get(request_id), right.responses.get(request_id)
        if a is None or b is None:
            report.add("response_missing", request_id, f"no response in {right.label if a else left.label}")
            continue
        problems = _response_differences(a, b, tolerance=SAME_MODEL_SCORE_TOLERANCE if same_model else 1e-4)
        if not problems:
            equal += 1
            continue
        reason = None
        retrieval_only = a["task"] in ("search", "rag") and all(p.startswith(("hits", "scores")) for p in problems)
        if retrieval_only and "live" in (left.label, right.label):
            reason = "live searched the index as it was at request time; the replay searched its own"
        report.add("response", request_id, "; ".join(problems), reason)
    report.counts["responses_equal"] = equal


def _response_differences(a: dict[str, Any], b: dict[str, Any], tolerance: float) -> list[str]:
    problems = []
    if a["status"] != b["status"]:
        problems.append(f"status {a['status']} vs {b['status']}")
    if a.get("label") != b.get("label"):
        problems.append(f"label {a.get('label')} vs {b.get('label')}")
    ids_a, ids_b = [h["chunk_id"] for h in a["hits"]], [h["chunk_id"] for h in b["hits"]]
    if ids_a != ids_b:
        problems.append(f"hits {ids_a[:3]} vs {ids_b[:3]}")
    else:
        gap = max((abs(x["score"] - y["score"]) for x, y in zip(a["hits"], b["hits"], strict=True)), default=0.0)
        if gap > tolerance:
            problems.append(f"scores differ by up to {gap:.3g}")
    probabilities = set(a["probabilities"]) | set(b["probabilities"])
    if any(abs(a["probabilities"].get(k, 0.0) - b["probabilities"].get(k, 0.0)) > tolerance for k in probabilities):
        problems.append("probabilities differ")
    return problems


async def _range_facts(live: Settings, manifests: dict[str, Manifest]) -> tuple[set[str], set[str], set[str] | None]:
    """Source coordinates, document ids and request ids (None: no requests replayed) of the ranges."""
    from streams.inference.requests import RequestRejected, parse_request

    sources: set[str] = set()
    docs: set[str] = set()
    requests: set[str] | None = set() if INFERENCE_REQUESTS in manifests else None
    codec = codec_from_settings(live)
    for topic, manifest in manifests.items():
        async for message in read_ranges(live, manifest.ranges()):
            sources.add(f"{message.topic}:{message.partition}:{message.offset}")
            if topic == DOCS_RAW and message.key is not None:
                docs.add(message.key.decode("utf-8", "replace"))
            if requests is not None and topic == INFERENCE_REQUESTS and message.value:
                with contextlib.suppress(RequestRejected):
                    requests.add(parse_request(message.value, codec).request_id)
    return sources, docs, requests


def diff_replay(live: Settings, namespace: str, against: str = "live", tolerance: float = 0.999) -> DiffReport:
    """Compare replay ``namespace`` with live traffic for its ranges, or with replay ``against``.

    Every topic replayed into ``namespace`` is compared; ``against`` must have replayed the same
    ranges of those topics.
    """
    manifests = read_manifests(replay_dir(live, namespace))
    first = next(iter(manifests.values()))
    sources, docs, request_ids = asyncio.run(_range_facts(live, manifests))
    mine = replay_settings(live, namespace, embed_model=first.embed_model)
    right = asyncio.run(load_side(mine, namespace, _embedder(first), None, request_ids))
    load_index(mine, right)
    notes = []
    if against == "live":
        from streams.index.embed import version_for

        left = asyncio.run(load_side(live, "live", version_for(live), sources, request_ids))
        load_index(live, left)
    else:
        others = read_manifests(replay_dir(live, against))
        for topic, manifest in manifests.items():
            other = others.get(topic)
            if other is None or (other.source_topic, other.partitions) != (manifest.source_topic, manifest.partitions):
                theirs_range = f"{other.source_topic} {other.partitions}" if other else f"no {topic}"
                raise ReplayError(
                    f"{against} replayed {theirs_range}, {namespace} replayed {manifest.source_topic} "
                    f"{manifest.partitions}: diff replays of the same ranges"
                )
            if other.settings_digest != manifest.settings_digest:
                notes.append(f"{topic}: the replays ran with different result-shaping settings (digests differ)")
        other_first = others[next(iter(manifests))]
        theirs = replay_settings(live, against, embed_model=other_first.embed_model)
        left = asyncio.run(load_side(theirs, against, _embedder(other_first), None, request_ids))
        load_index(theirs, left)
    report = compare(left, right, tolerance, docs)
    report.notes.extend(notes)
    return report


def _embedder(manifest: Manifest) -> str:
    return str(next(m["version"] for m in manifest.models if m["kind"] == "embedder"))
