"""The monitor's drift reference: build it from a corpus, a file or a topic range; store and load it.

Why this exists:
    Drift is always "compared with what". ``llmops monitor set-reference`` fixes that sample and
    writes it to the compacted topic ``monitor.reference`` (key ``reference``): the latest record
    wins, restarts keep it, a worker on any machine reads it without a shared disk, and running
    monitors pick a new one up without a restart. The data dir was the other choice; it is lost
    with the machine and invisible to workers elsewhere.

Reference streams:
    ``documents`` (chunk vectors and text features, what ``docs.embeddings`` carries),
    ``requests`` (text features of questions), ``responses.scores`` (top-1 retrieval scores) and
    ``responses.labels`` (predicted labels). Setting one keeps the others.

Held-out split of the stdlib corpus:
    :func:`corpus_split` puts each document in ``reference`` or ``holdout`` by a hash of its id,
    so a reference and a stream of held-out documents never share a document.

Every block, in publication order:
    A documents reference from a corpus (``set-reference --corpus``, the demo) holds a share of
    every block (package) in proportion to its size, whole documents at a time, kept in publication
    order, with the block of each row (``groups``) and the corpus size (``drawn_from``); see
    :func:`stratified_blocks`. A reference of whole packages drawn at random missed some (the
    demo's tkinter and turtle windows then alarmed). From a file or docs.embeddings, where there
    are no packages, it holds whole texts or documents drawn at random. Thresholds are calibrated
    on windows of consecutive rows of shuffled blocks, as many blocks as a stream window holds:
    the way a corpus published in order reaches the monitor (see :mod:`streams.monitor.drift`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from streams.index.embed import Embedder
from streams.ingest.chunk import WordPieceTokenizer, chunk_text
from streams.ingest.clean import clean_text
from streams.ingest.corpus import stdlib_documents
from streams.ingest.redact import redact_pii
from streams.kafka.admin import ensure_topics, producer, read_topic
from streams.kafka.avro import AvroCodec, codec_from_settings
from streams.kafka.topics import Topics, TopicSpec
from streams.monitor.detectors import Reference, with_reference_id
from streams.monitor.drift import ReferenceSample
from streams.monitor.index_versions import sample_name, top1_scores_by_index
from streams.monitor.text_features import DRIFT_FEATURES, text_features
from streams.records import now_ms
from streams.settings import Settings

MIN_REFERENCE_ROWS = 50  # fewer rows than this make no reference sample

REFERENCE_KEY = b"reference"
T = TypeVar("T")


def corpus_split(doc_id: str) -> str:
    """``reference`` or ``holdout``: a stable half of the corpus each, by sha256 of the id."""
    return "reference" if hashlib.sha256(doc_id.encode()).digest()[0] % 2 == 0 else "holdout"


def document_chunks(texts: Iterable[str], tokenizer: WordPieceTokenizer, settings: Settings) -> list[str]:
    """Texts as the ingest agent would chunk them: cleaned, redacted, cut by tokens."""
    chunks = []
    for text in texts:
        cleaned = redact_pii(clean_text(text), settings.redact_pii).text
        if cleaned:
            chunks += [c.text for c in chunk_text(cleaned, tokenizer, settings.chunk_tokens, settings.chunk_overlap)]
    return chunks


def sample_rows(rows: Sequence[Any], size: int, seed: int = 0) -> list[Any]:
    """At most ``size`` rows drawn without replacement, in a seeded random order."""
    order = np.random.default_rng(seed).permutation(len(rows))[:size]
    return [rows[i] for i in order]


def corpus_texts(split: str = "reference") -> list[str]:
    """Texts of the stdlib corpus documents in one half (``reference``, ``holdout``) or ``all``."""
    return [d["text"] for d in stdlib_documents() if split == "all" or corpus_split(d["id"]) == split]


def corpus_blocks(split: str = "reference", by: str = "top_level") -> list[list[str]]:
    """Texts of one half of the stdlib corpus (or ``all``) in publication order, one block per package.

    ``by`` is ``top_level`` (``email`` holds ``email.mime.text``: a package's modules are published
    one after another and read alike) or ``module``.
    """
    blocks: dict[str, list[str]] = {}
    for document in stdlib_documents():
        if split == "all" or corpus_split(document["id"]) == split:
            blocks.setdefault(document["metadata"][by], []).append(document["text"])
    return list(blocks.values())


def whole_blocks(
    blocks: Sequence[Sequence[Any]], size: int, seed: int = 0, expand: Callable[[Sequence[Any]], Sequence[T]] = list
) -> tuple[list[T], list[int]]:
    """Rows of whole blocks drawn at random until there are ``size``, in publication order, and each row's block.

    Args:
        blocks: The blocks in publication order.
        size: Rows wanted; the last block drawn is cut to fit.
        seed: Seeds the draw.
        expand: A block's rows (e.g. its texts chunked); only drawn blocks are expanded.
    """
    chosen: list[tuple[int, Sequence[T]]] = []
    total = 0
    for index in np.random.default_rng(seed).permutation(len(blocks)):
        if total >= size:
            break
        rows = expand(blocks[int(index)])[: size - total]
        if len(rows):
            chosen.append((int(index), rows))
            total += len(rows)
    chosen.sort(key=lambda pair: pair[0])
    rows_out = [row for _, rows in chosen for row in rows]
    groups = [block for block, (_, rows) in enumerate(chosen) for _ in rows]
    return rows_out, groups


def stratified_blocks(
    blocks: Sequence[Sequence[Any]], size: int, seed: int = 0, expand: Callable[[Any], Sequence[T]] = list
) -> tuple[list[T], list[int], int]:
    """Rows of whole items (documents) drawn from every block (package), in publication order, and each row's block.

    Each block gets a share of ``size`` proportional to its rows (largest remainders, so the
    shares add up to ``size``); within a block, whole items are drawn at random until its share
    is filled (the last one cut to fit) and kept in publication order. Every block large enough
    for one row is in the reference, so no package of the corpus is new to the monitor, and a
    block's rows still come whole items at a time, as the stream brings them.

    Args:
        blocks: The blocks in publication order, each a sequence of items (e.g. texts).
        size: Rows wanted (all rows when the blocks hold fewer).
        seed: Seeds the draw.
        expand: An item's rows (e.g. a text chunked).

    Returns:
        The rows, each row's block, and the rows of all blocks (what the share was taken of).
    """
    expanded = [[expand(item) for item in block] for block in blocks]
    counts = np.array([sum(len(rows) for rows in block) for block in expanded], dtype=np.float64)
    total = counts.sum()
    if total <= size:
        quotas = counts.astype(int)
    else:
        exact = counts * size / total
        quotas = np.floor(exact).astype(int)
        for index in np.argsort(-(exact - quotas), kind="stable")[: size - int(quotas.sum())]:
            quotas[index] += 1
    rng = np.random.default_rng(seed)
    rows_out: list[T] = []
    groups: list[int] = []
    for block, quota in zip(expanded, quotas, strict=True):
        if quota <= 0:
            continue
        taken, chosen = 0, []
        for item in rng.permutation(len(block)):
            if taken >= quota:
                break
            if len(block[int(item)]):
                chosen.append(int(item))
                taken += len(block[int(item)])
        block_rows = [row for item in sorted(chosen) for row in block[item]][:quota]
        groups += [groups[-1] + 1 if groups else 0] * len(block_rows)
        rows_out += block_rows
    return rows_out, groups, int(total)


def sample_chunks(
    texts: Sequence[str], size: int, tokenizer: WordPieceTokenizer, settings: Settings, seed: int = 0
) -> list[str]:
    """``size`` chunks of randomly drawn texts (texts are drawn first, so only those are chunked)."""
    chunks = document_chunks(sample_rows(texts, size, seed), tokenizer, settings)
    return sample_rows(chunks, size, seed)


def documents_sample(
    chunks: Sequence[str],
    embedder: Embedder,
    tokenizer: WordPieceTokenizer,
    groups: Sequence[int] | None = None,
    drawn_from: int = 0,
) -> ReferenceSample:
    """Vectors and text features of chunk texts (``groups``: each chunk's block, chunks in publication order).

    ``drawn_from``: rows of the corpus the chunks are a share of, block by block (0 = whole blocks).
    """
    features = text_features(chunks, tokenizer, redacted=True)
    vectors = np.asarray(embedder.embed(list(chunks)), dtype=np.float64)
    numeric = {k: features[k] for k in DRIFT_FEATURES}
    return ReferenceSample(vectors=vectors, numeric=numeric, groups=groups, drawn_from=drawn_from)


def requests_sample(texts: Sequence[str], tokenizer: WordPieceTokenizer) -> ReferenceSample:
    features = text_features(texts, tokenizer)
    return ReferenceSample(numeric={k: features[k] for k in DRIFT_FEATURES})


def responses_samples(responses: Sequence[dict[str, Any]]) -> dict[str, ReferenceSample]:
    """Top-1 retrieval scores per index version that answered, and predicted labels of OK responses.

    Scores are kept per index version (``responses.scores@VERSION``, see
    :mod:`streams.monitor.index_versions`); only labels and scores are taken, each when present.
    """
    labels = [r["label"] for r in responses if r["status"] == "OK" and r.get("label")]
    samples = {}
    for version, scores in top1_scores_by_index(responses).items():
        samples[sample_name("responses.scores", version)] = ReferenceSample(
            numeric={"top1_score": np.asarray(scores, dtype=np.float64)}
        )
    if labels:
        samples["responses.labels"] = ReferenceSample(categorical={"predicted_label": list(labels)})
    return samples


# --- codec -------------------------------------------------------------------------------------


def reference_to_avro(reference: Reference) -> dict[str, Any]:
    samples = {}
    for name, sample in reference.samples.items():
        vectors = sample.vectors
        samples[name] = {
            "rows": sample.size,
            "dimension": 0 if vectors is None else int(vectors.shape[1]),
            "vectors_f16": b"" if vectors is None else np.asarray(vectors, dtype="<f2").tobytes(),
            "numeric": {k: [float(x) for x in v] for k, v in sample.numeric.items()},
            "categorical": {k: list(v) for k, v in sample.categorical.items()},
            "groups": [] if sample.groups is None else [int(g) for g in sample.groups],
            "drawn_from_rows": sample.drawn_from,
        }
    return {
        "reference_id": reference.reference_id,
        "description": reference.description,
        "created_at_ms": reference.created_at_ms,
        "samples": samples,
    }


def reference_from_avro(record: dict[str, Any]) -> Reference:
    samples = {}
    for name, raw in record["samples"].items():
        vectors = None
        if raw["dimension"]:
            flat = np.frombuffer(raw["vectors_f16"], dtype="<f2").astype(np.float64)
            vectors = flat.reshape(raw["rows"], raw["dimension"])
        samples[name] = ReferenceSample(
            vectors=vectors,
            numeric={k: np.asarray(v, dtype=np.float64) for k, v in raw["numeric"].items()},
            categorical={k: list(v) for k, v in raw["categorical"].items()},
            groups=list(raw["groups"]) or None,
            drawn_from=raw.get("drawn_from_rows", 0),
        )
    return Reference(record["reference_id"], record["description"], samples, record["created_at_ms"])


def summary(reference: Reference) -> dict[str, Any]:
    """What a person wants to know about a reference (no vectors)."""
    return {
        "reference_id": reference.reference_id,
        "description": reference.description,
        "created_at_ms": reference.created_at_ms,
        "samples": {
            name: {"rows": s.size, "vectors": s.vectors is not None, "features": sorted([*s.numeric, *s.categorical])}
            for name, s in reference.samples.items()
        },
    }


# --- storage on monitor.reference --------------------------------------------------------------


def reference_topic_spec(settings: Settings) -> TopicSpec:
    topics = Topics(settings.namespace)
    return next(
        s for s in topics.specs(settings.partitions, settings.replication_factor) if s.name == topics.monitor_reference
    )


async def load_reference(settings: Settings, codec: AvroCodec | None = None) -> Reference | None:
    """The latest reference on ``monitor.reference``, or None when none was set."""
    codec = codec or codec_from_settings(settings)
    latest = None
    async for message in read_topic(settings, Topics(settings.namespace).monitor_reference):
        if message.key == REFERENCE_KEY:
            latest = message.value
    await codec.prefetch([latest])
    return reference_from_avro(codec.decode(latest, "MonitorReference")) if latest else None


async def store_reference(
    settings: Settings,
    samples: dict[str, ReferenceSample],
    description: str,
    codec: AvroCodec | None = None,
) -> Reference:
    """Write a reference with ``samples`` (replacing those streams, keeping the others); returns it.

    A sample of one index version (``responses.scores@VERSION``) replaces an unversioned sample of
    its stream (see :mod:`streams.monitor.index_versions`).
    """
    codec = codec or codec_from_settings(settings)
    await ensure_topics(settings, [reference_topic_spec(settings)])
    previous = await load_reference(settings, codec)
    dropped = {name.split("@", 1)[0] for name in samples if "@" in name}
    merged = {name: s for name, s in (previous.samples if previous else {}).items() if name not in dropped}
    merged.update(samples)
    notes = json.loads(previous.description) if previous and previous.description.startswith("{") else {}
    notes = {name: note for name, note in notes.items() if name not in dropped}
    notes.update(dict.fromkeys(samples, description))
    reference = with_reference_id(Reference("", "", merged, now_ms()), json.dumps(notes, sort_keys=True))
    topic = Topics(settings.namespace).monitor_reference
    value = codec.encode("MonitorReference", reference_to_avro(reference), topic)
    kafka = producer(settings, max_request_size=4 * 1024 * 1024)
    await kafka.start()
    try:
        await kafka.send_and_wait(topic, value, key=REFERENCE_KEY)
    finally:
        await kafka.stop()
    return reference


def read_texts_file(path: Path) -> list[str]:
    """Texts of a JSONL file (``{"text": ...}`` per line) or of a plain text file (one per blank-line block)."""
    raw = path.read_text(encoding="utf-8")
    if path.suffix in (".jsonl", ".json"):
        texts = [json.loads(line).get("text", "") for line in raw.splitlines() if line.strip()]
    else:
        texts = [block.strip() for block in raw.split("\n\n")]
    return [t for t in texts if isinstance(t, str) and t.strip()]


# --- building from each kind of source ---------------------------------------------------------


def documents_from_blocks(
    settings: Settings, blocks: Sequence[Sequence[str]], size: int, seed: int = 0
) -> dict[str, ReferenceSample]:
    """The ``documents`` sample: ``size`` chunks of whole texts from every block, chunked and embedded as the agents do.

    See :func:`stratified_blocks`: each block (package) gives rows in proportion to its size.
    """
    from streams.ingest.chunk import default_tokenizer

    tokenizer = default_tokenizer()
    chunks, groups, total = stratified_blocks(
        blocks, size, seed, lambda text: document_chunks([text], tokenizer, settings)
    )
    return _embedded_documents(settings, chunks, groups, tokenizer, total)


def documents_from_texts(
    settings: Settings, texts: Sequence[str], size: int, seed: int = 0
) -> dict[str, ReferenceSample]:
    """The ``documents`` sample of ``size`` chunks of whole ``texts`` drawn at random (each text one block)."""
    from streams.ingest.chunk import default_tokenizer

    tokenizer = default_tokenizer()
    chunks, groups = whole_blocks(
        [[text] for text in texts], size, seed, lambda t: document_chunks(t, tokenizer, settings)
    )
    return _embedded_documents(settings, chunks, groups, tokenizer)


def _embedded_documents(
    settings: Settings,
    chunks: Sequence[str],
    groups: Sequence[int],
    tokenizer: WordPieceTokenizer,
    drawn_from: int = 0,
) -> dict[str, ReferenceSample]:
    from streams.index.embed import OnnxEmbedder

    if len(chunks) < MIN_REFERENCE_ROWS:
        raise ValueError(f"only {len(chunks)} chunks to sample from; a reference needs at least {MIN_REFERENCE_ROWS}")
    embedder = OnnxEmbedder.from_settings(settings)
    return {"documents": documents_sample(chunks, embedder, tokenizer, groups, drawn_from)}


async def samples_from_topic(
    settings: Settings, topic: str, from_offset: int, to_offset: int | None, size: int, seed: int = 0
) -> dict[str, ReferenceSample]:
    """Reference samples from a topic range: docs.embeddings, docs.raw, inference.requests or .responses."""
    from streams.inference.requests import RequestRejected, parse_request
    from streams.ingest.chunk import default_tokenizer
    from streams.kafka.admin import offsets, read_range

    topics = Topics(settings.namespace)
    codec = codec_from_settings(settings)
    _, end = await offsets(settings, [topic])
    if not end:
        raise ValueError(f"topic {topic} does not exist in this cluster")
    start = {tp: from_offset for tp in end}
    stop = {tp: min(e, to_offset) if to_offset is not None else e for tp, e in end.items()}
    values = [m.value async for m in read_range(settings, start, stop) if m.value]
    if topic == topics.docs_embeddings:
        by_document: dict[str, list[dict[str, Any]]] = {}
        for value in values:
            record = codec.decode(value, "ChunkEmbedding")
            if record["op"] == "UPSERT" and record["vector"]:
                by_document.setdefault(record["doc_id"], []).append(record)
        rows: list[dict[str, Any]]
        rows, groups = whole_blocks(list(by_document.values()), size, seed)
        tokenizer = default_tokenizer()
        features = text_features([r["text"] for r in rows], tokenizer, redacted=True)
        vectors = np.asarray([r["vector"] for r in rows], dtype=np.float64)
        numeric = {k: features[k] for k in DRIFT_FEATURES}
        return {"documents": ReferenceSample(vectors=vectors, numeric=numeric, groups=groups)}
    if topic == topics.docs_raw:
        texts = []
        for value in values:
            try:
                texts.append(str(json.loads(value).get("text") or ""))
            except (ValueError, AttributeError):
                continue  # not a JSON document: the ingest agent dead-letters it
        return documents_from_texts(settings, [t for t in texts if t], size, seed)
    if topic == topics.inference_requests:
        texts = []
        for value in values:
            try:
                texts.append(parse_request(value, codec).text)
            except RequestRejected:
                continue
        return {"requests": requests_sample(sample_rows(texts, size, seed), default_tokenizer())}
    if topic == topics.inference_responses:
        return responses_samples(sample_rows([codec.decode(v, "InferenceResponse") for v in values], size, seed))
    raise ValueError(
        f"a reference is read from {topics.docs_embeddings}, {topics.docs_raw}, {topics.inference_requests} "
        f"or {topics.inference_responses}, not {topic}"
    )


def set_stdlib_reference(settings: Settings, split: str = "reference", seed: int = 0) -> Reference:
    """Store a ``documents`` reference of stdlib docstring chunks (what ``make run`` and the tests use)."""
    import asyncio

    samples = documents_from_blocks(settings, corpus_blocks(split), settings.monitor_reference_size, seed)
    description = (
        f"stdlib corpus ({split}), {settings.monitor_reference_size} chunks of whole documents from every package "
        f"in proportion to its size, seed {seed}"
    )
    return asyncio.run(store_reference(settings, samples, description))


def package_description_texts(min_chars: int = 500) -> list[str]:
    """Long descriptions from installed packages' METADATA: real text unlike stdlib docstrings.

    Used to show that drift is caught (tests, benchmark); sorted for a stable order.
    """
    from importlib import metadata

    texts = set()
    for distribution in metadata.distributions():
        body = distribution.metadata.get_payload() or distribution.metadata.get("Description") or ""  # type: ignore[attr-defined]
        if isinstance(body, str) and len(body) >= min_chars:
            texts.add(body)
    return sorted(texts)
