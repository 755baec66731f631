"""Model lifecycle operations over Kafka: what `llmops models ...` and the demo do.

Why this exists:
    The registry's rules live in :mod:`streams.models.registry`; this module reads the current
    registry from ``models.control``, writes the events a rule produced, and strings together
    the longer operations: train and register a classifier, evaluate it in QA against the gate,
    promote, roll back, and register the embedder a worker runs.

Usage:
    >>> registry = await load_registry(settings)
    >>> version = await train_and_register(settings, data, name="stdlib-topic", actor="ana")
    >>> await evaluate_version(settings, "stdlib-topic", version.version, data, actor="ana")
    >>> await promote(settings, "stdlib-topic", version.version, Stage.QA, actor="ana")
"""

from __future__ import annotations

import getpass
from collections.abc import Sequence

from streams.index.embed import Embedder, OnnxEmbedder, graph_for
from streams.ingest.chunk import default_tokenizer_path
from streams.kafka.admin import producer, read_topic
from streams.kafka.avro import AvroCodec, codec_from_settings
from streams.kafka.topics import Topics
from streams.models.artifacts import verify_digest
from streams.models.classifier import LabelledText, OnnxClassifier, evaluate, split, train_classifier
from streams.models.registry import ControlCheck, Kind, ModelVersion, QaGate, Registry, Stage, files_version
from streams.models.rejections import ControlRejected, Reason
from streams.records import now_ms
from streams.settings import Settings

MAX_INLINE_ARTIFACT = 900_000  # under Kafka's default 1 MiB message limit, with room for the rest


def default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


def control_check(codec: AvroCodec) -> ControlCheck:
    """What a worker checks before it applies a ``models.control`` record (see RegistryFollower)."""

    def check(registry: Registry, key: str, value: bytes | None) -> ModelVersion | None:
        if value is None:
            return None
        try:
            version = ModelVersion.from_avro(codec.decode(value, "ModelVersion"))
        except Exception as error:  # noqa: BLE001 - any undecodable value is refused the same way
            raise ControlRejected(Reason.MALFORMED, f"not a ModelVersion record: {error!r}") from None
        if version.key != key:
            raise ControlRejected(Reason.MALFORMED, f"the record is {version.short} but its key is {key!r}")
        return version

    return check


async def load_registry(settings: Settings) -> Registry:
    """The registry as ``models.control`` holds it now."""
    codec = codec_from_settings(settings)
    registry = Registry()
    async for message in read_topic(settings, Topics(settings.namespace).models_control):
        key = (message.key or b"").decode("utf-8", "replace")
        if message.value is None:
            registry.remove(key)
        else:
            registry.apply(ModelVersion.from_avro(codec.decode(message.value, "ModelVersion")))
    return registry


async def write_events(settings: Settings, events: Sequence[ModelVersion]) -> None:
    """Append control events (acks=all, in order) to ``models.control``."""
    codec = codec_from_settings(settings)
    topic = Topics(settings.namespace).models_control
    kafka = producer(settings, linger_ms=0)
    await kafka.start()
    try:
        for event in events:
            value = codec.encode("ModelVersion", event.to_avro(), topic)
            await kafka.send_and_wait(topic, value, key=event.key.encode())
    finally:
        await kafka.stop()


def classifier_version(
    name: str, trained_onnx: bytes, labels: Sequence[str], embedder_version: str, *, actor: str, note: str
) -> ModelVersion:
    """A registrable classifier version whose id is the digest of its graph, labels and embedder."""
    files = {"model.onnx": trained_onnx, "labels.json": "\n".join(labels).encode()}
    version, digests = files_version(files, config=f"embedder={embedder_version}")
    if len(trained_onnx) > MAX_INLINE_ARTIFACT:
        raise ValueError(
            f"the graph is {len(trained_onnx)} bytes; inline artifacts are limited to {MAX_INLINE_ARTIFACT}"
        )
    return ModelVersion(
        name=name,
        version=version,
        kind=Kind.CLASSIFIER,
        stage=Stage.REGISTERED,
        updated_at_ms=now_ms(),
        files=digests,
        labels=tuple(labels),
        embedder_version=embedder_version,
        artifact=trained_onnx,
        actor=actor,
        note=note,
    )


async def train_and_register(
    settings: Settings,
    records: Sequence[LabelledText],
    name: str,
    *,
    actor: str,
    embedder: Embedder | None = None,
    note: str = "trained by llmops models train-classifier",
) -> ModelVersion:
    """Train a head on ``records`` (holdout metrics recorded) and register it."""
    embedder = embedder or OnnxEmbedder.from_settings(settings)
    trained = train_classifier(embedder, records)
    candidate = classifier_version(name, trained.onnx, trained.labels, embedder.version, actor=actor, note=note)
    return await _register(settings, ModelVersion.from_avro({**candidate.to_avro(), "metrics": trained.metrics}))


async def _register(settings: Settings, candidate: ModelVersion) -> ModelVersion:
    registry = await load_registry(settings)
    events = registry.register(candidate)
    await write_events(settings, events)
    return events[-1]


async def register_file(
    settings: Settings,
    name: str,
    data: bytes,
    labels: Sequence[str],
    *,
    actor: str,
    embedder_version: str,
    source: str = "a file",
) -> ModelVersion:
    """Register an existing ONNX classifier head (vectors in; 'probabilities' out)."""
    # Refuse a graph ONNX Runtime cannot load, or one that reads files, before anyone depends on it.
    OnnxClassifier(data, labels, max_bytes=settings.model_max_bytes)
    note = f"registered from {source}"
    return await _register(settings, classifier_version(name, data, labels, embedder_version, actor=actor, note=note))


async def evaluate_version(
    settings: Settings,
    name: str,
    version: str,
    records: Sequence[LabelledText],
    *,
    actor: str,
    embedder: Embedder | None = None,
) -> ModelVersion:
    """Score a version on the held-out split of ``records`` and record whether it passes the gate."""
    registry = await load_registry(settings)
    target = registry.get(name, version)
    if not target.artifact:
        raise ValueError(f"{target.short} has no inline artifact to evaluate")
    embedder = embedder or OnnxEmbedder.from_settings(settings)
    if target.embedder_version and target.embedder_version != embedder.version:
        raise ValueError(
            f"{target.short} was trained on embedder {target.embedder_version[:12]}, this worker runs "
            f"{embedder.version[:12]}: set LLMOPS_EMBED_MODEL to the matching graph"
        )
    _, holdout = split(records)
    if not holdout:
        raise ValueError("the data has no held-out records to evaluate on")
    verify_digest("model.onnx", target.artifact, target.files)
    head = OnnxClassifier(target.artifact, target.labels, max_bytes=settings.model_max_bytes)
    metrics = evaluate(head, embedder, holdout)
    gate = QaGate(settings.qa_min_accuracy, settings.qa_max_drop)
    events = registry.record_evaluation(name, target.version, metrics, gate, actor=actor, now_ms=now_ms())
    await write_events(settings, events)
    return events[-1]


async def promote(
    settings: Settings,
    name: str,
    version: str,
    to: Stage,
    *,
    actor: str,
    approved_by: str | None = None,
    shadow: bool = False,
) -> list[ModelVersion]:
    registry = await load_registry(settings)
    events = registry.promote(name, version, to, actor=actor, now_ms=now_ms(), approved_by=approved_by, shadow=shadow)
    await write_events(settings, events)
    return events


async def rollback(settings: Settings, name: str, *, actor: str) -> list[ModelVersion]:
    registry = await load_registry(settings)
    events = registry.rollback(name, actor=actor, now_ms=now_ms())
    await write_events(settings, events)
    return events


def embedder_version_record(settings: Settings, embedder: Embedder) -> ModelVersion:
    """The registry entry of the embedder a worker runs (its files' digests and where they are)."""
    graph = graph_for(settings)
    _, digests = files_version(
        {"model.onnx": graph.read_bytes(), "tokenizer.json": default_tokenizer_path().read_bytes()}
    )
    return ModelVersion(
        name=embedder.name,
        version=embedder.version,
        kind=Kind.EMBEDDER,
        stage=Stage.PRODUCTION,
        updated_at_ms=now_ms(),
        files=digests,
        uri=str(graph),
        approved_by="bootstrap",
        promoted_at_ms=now_ms(),
        actor="llmops worker",
        note="the embedder this deployment indexes with (registered by the worker that runs it)",
    )


async def shadow_report(settings: Settings, name: str) -> dict[str, dict[str, float]]:
    """Per shadowing version of ``name``: answers on ``inference.shadow`` and agreement with production."""
    codec = codec_from_settings(settings)
    answers: dict[str, list[bool]] = {}
    async for message in read_topic(settings, Topics(settings.namespace).inference_shadow):
        if message.value is None:
            continue
        response = codec.decode(message.value, "InferenceResponse")
        for model in response["models"]:
            if model["name"] == name and model["stage"] == "qa" and response["agrees"] is not None:
                answers.setdefault(model["version"], []).append(bool(response["agrees"]))
    return {
        version: {"answers": float(len(votes)), "agreement": sum(votes) / len(votes)}
        for version, votes in answers.items()
    }
