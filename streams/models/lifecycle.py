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
from collections.abc import Mapping, Sequence

from streams.index.embed import Embedder, OnnxEmbedder, graph_for
from streams.index.spec import INDEX_MODEL, IndexSpec
from streams.ingest.chunk import default_tokenizer_path
from streams.kafka.admin import producer, read_topic
from streams.kafka.avro import AvroCodec, codec_from_settings
from streams.kafka.topics import Topics
from streams.logs import get_logger
from streams.models.artifacts import check_onnx_bytes, verify_digest
from streams.models.classifier import LabelledText, OnnxClassifier, evaluate, split, train_classifier
from streams.models.indexes import IndexGate, check_index_version, index_record, live_index_record
from streams.models.registry import (
    ControlCheck,
    Kind,
    ModelVersion,
    QaGate,
    Registry,
    Stage,
    classifier_config,
    digests_version,
    files_version,
)
from streams.models.rejections import ControlRejected, Reason
from streams.models.rules import check_event, check_production, check_removal
from streams.models.signing import TrustedKeys, signer_from_settings, trusted_keys_from_settings
from streams.models.version import INLINE_KINDS
from streams.records import now_ms
from streams.settings import Settings

log = get_logger(__name__)
MAX_INLINE_ARTIFACT = 900_000  # under Kafka's default 1 MiB message limit, with room for the rest


def default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


def check_version(
    registry: Registry, version: ModelVersion, trusted: TrustedKeys, max_bytes: int, namespace: str = ""
) -> None:
    """Every check a control event passes before it is applied or written, in this order.

    The signature (a trusted key signed exactly this record), then the artifact (no larger than
    ``max_bytes``, its sha256 the record's ``model.onnx`` digest, the digests the version id, a
    self-contained ONNX graph; for an index version, the digest of its embedder files and spec),
    then the lifecycle rules against the registry built so far.

    Raises:
        ControlRejected: with the reason code of the first check that failed.
    """
    trusted.verify(version, namespace)
    if version.kind in INLINE_KINDS:
        if version.artifact is not None:
            if len(version.artifact) > max_bytes:
                raise ControlRejected(
                    Reason.TOO_LARGE,
                    f"{version.short}: the artifact is {len(version.artifact)} bytes, above the {max_bytes}-byte "
                    "cap (LLMOPS_MODEL_MAX_BYTES)",
                )
            verify_digest("model.onnx", version.artifact, version.files)
        if "labels.json" in version.files:
            verify_digest("labels.json", "\n".join(version.labels).encode(), version.files)
        if digests_version(version.files, classifier_config(version.embedder_version)) != version.version:
            raise ControlRejected(
                Reason.DIGEST_MISMATCH,
                f"{version.short}: the version id is not the digest of its files and embedder; register the "
                "model again",
            )
        if version.artifact is not None:
            check_onnx_bytes(version.artifact, max_bytes)
    if version.kind is Kind.INDEX:
        check_index_version(version, namespace)
    check_event(registry.find(version.key), version)
    check_production(registry.production(version.name), version)


def control_check(codec: AvroCodec, trusted: TrustedKeys, max_bytes: int, namespace: str = "") -> ControlCheck:
    """What a worker checks before it applies a record of ``namespace``'s ``models.control`` (see RegistryFollower)."""

    def check(registry: Registry, key: str, value: bytes | None) -> ModelVersion | None:
        if value is None:
            check_removal(registry.find(key))
            return None
        try:
            version = ModelVersion.from_avro(codec.decode(value, "ModelVersion"))
        except Exception as error:  # noqa: BLE001 - any undecodable value is refused the same way
            raise ControlRejected(Reason.MALFORMED, f"not a ModelVersion record: {error!r}") from None
        if version.key != key:
            raise ControlRejected(Reason.MALFORMED, f"the record is {version.short} but its key is {key!r}")
        check_version(registry, version, trusted, max_bytes, namespace)
        return version

    return check


def control_check_from_settings(settings: Settings, codec: AvroCodec | None = None) -> ControlCheck:
    return control_check(
        codec or codec_from_settings(settings),
        trusted_keys_from_settings(settings),
        settings.model_max_bytes,
        settings.namespace,
    )


async def load_registry(settings: Settings) -> Registry:
    """The registry as ``models.control`` holds it now: only events that pass a worker's checks.

    A refused event is skipped with a warning (the workers dead-letter it), so the CLI builds on
    exactly the state the workers answer with.
    """
    check = control_check_from_settings(settings)
    registry = Registry()
    async for message in read_topic(settings, Topics(settings.namespace).models_control):
        key = (message.key or b"").decode("utf-8", "replace")
        try:
            version = check(registry, key, message.value)
        except ControlRejected as rejected:
            log.warning("model_control_skipped", key=key, offset=message.offset, reason=rejected.reason.value)
            continue
        if version is None:
            registry.remove(key)
        else:
            registry.apply(version)
    return registry


async def write_events(settings: Settings, events: Sequence[ModelVersion], registry: Registry) -> list[ModelVersion]:
    """Sign control events, check them as a worker will, and append them (acks=all, in order).

    ``registry`` is the state the events follow (what ``load_registry`` read). Nothing is written
    unless every event passes: a worker would refuse it anyway. Returns the signed events.
    """
    codec = codec_from_settings(settings)
    signer = signer_from_settings(settings)
    trusted = trusted_keys_from_settings(settings)
    if signer.key_id not in trusted.keys:
        raise ValueError(
            f"the signing key {signer.key_id} is not among the trusted keys ({', '.join(sorted(trusted.keys))}): "
            "workers would refuse its events; add its public key to LLMOPS_MODEL_TRUSTED_KEYS"
        )
    state = registry.copy()
    signed = []
    for event in events:
        event = signer.sign(event, settings.namespace)
        check_version(state, event, trusted, settings.model_max_bytes, settings.namespace)
        state.apply(event)
        signed.append(event)
    topic = Topics(settings.namespace).models_control
    kafka = producer(settings, linger_ms=0)
    await kafka.start()
    try:
        for event in signed:
            value = codec.encode("ModelVersion", event.to_avro(), topic)
            await kafka.send_and_wait(topic, value, key=event.key.encode())
    finally:
        await kafka.stop()
    return signed


def classifier_version(
    name: str, trained_onnx: bytes, labels: Sequence[str], embedder_version: str, *, actor: str, note: str
) -> ModelVersion:
    """A registrable classifier version whose id is the digest of its graph, labels and embedder."""
    files = {"model.onnx": trained_onnx, "labels.json": "\n".join(labels).encode()}
    return _inline_version(name, Kind.CLASSIFIER, files, embedder_version, actor=actor, note=note, labels=tuple(labels))


def ranker_version(
    name: str, graph: bytes, embedder_version: str, metrics: Mapping[str, float], *, actor: str, note: str
) -> ModelVersion:
    """A registrable ranker version: its id is the digest of its graph and the embedder it scores for.

    ``metrics`` travel with the version; ``abstain_below`` among them is the answerer's
    abstention threshold, calibrated on this ranker's score scale.
    """
    return _inline_version(
        name, Kind.RANKER, {"model.onnx": graph}, embedder_version, actor=actor, note=note, metrics=dict(metrics)
    )


def _inline_version(
    name: str,
    kind: Kind,
    files: Mapping[str, bytes],
    embedder_version: str,
    *,
    actor: str,
    note: str,
    labels: tuple[str, ...] = (),
    metrics: Mapping[str, float] | None = None,
) -> ModelVersion:
    """A registered version whose ONNX graph (``model.onnx``) travels inline in the control record."""
    graph = files["model.onnx"]
    if len(graph) > MAX_INLINE_ARTIFACT:
        raise ValueError(f"the graph is {len(graph)} bytes; inline artifacts are limited to {MAX_INLINE_ARTIFACT}")
    version, digests = files_version(dict(files), config=classifier_config(embedder_version))
    return ModelVersion(
        name=name,
        version=version,
        kind=kind,
        stage=Stage.REGISTERED,
        updated_at_ms=now_ms(),
        files=digests,
        labels=labels,
        embedder_version=embedder_version,
        artifact=graph,
        metrics=dict(metrics or {}),
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
    return await register_version(settings, ModelVersion.from_avro({**candidate.to_avro(), "metrics": trained.metrics}))


async def register_version(settings: Settings, candidate: ModelVersion) -> ModelVersion:
    """Register ``candidate`` on ``models.control`` (signed) and return the event written."""
    registry = await load_registry(settings)
    events = registry.register(candidate)
    return (await write_events(settings, events, registry))[-1]


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
    return await register_version(
        settings, classifier_version(name, data, labels, embedder_version, actor=actor, note=note)
    )


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
    return (await write_events(settings, events, registry))[-1]


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
    return await write_events(settings, events, registry)


async def rollback(settings: Settings, name: str, *, actor: str) -> list[ModelVersion]:
    registry = await load_registry(settings)
    events = registry.rollback(name, actor=actor, now_ms=now_ms())
    return await write_events(settings, events, registry)


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


def bootstrap_records(settings: Settings, embedder: Embedder, registry: Registry) -> list[ModelVersion]:
    """What a worker registers about itself when missing: its embedder, and the live index as production.

    The live index goes in only while no index version is in production (a fresh registry, or one
    written before index versions existed), so a worker never takes production back from a promoted one.
    """
    events = []
    if not any(v.version == embedder.version for v in registry.all(embedder.name)):
        events.append(embedder_version_record(settings, embedder))
    if registry.production(INDEX_MODEL) is None:
        live = live_index_record(settings, embedder.version)
        if registry.find(live.key) is None:
            events.append(live)
    return events


async def register_embedder(settings: Settings, embedder: Embedder) -> list[ModelVersion]:
    """Record the embedder this deployment runs and its live index (nothing when both are registered)."""
    registry = await load_registry(settings)
    events = bootstrap_records(settings, embedder, registry)
    return await write_events(settings, events, registry) if events else []


async def register_index(
    settings: Settings, spec: IndexSpec, *, actor: str, note: str = "registered by llmops models register-index"
) -> ModelVersion:
    """Register a candidate index version: the worker that owns Milvus starts building it."""
    return await register_version(settings, index_record(settings, spec, actor=actor, note=note))


async def record_index_evaluation(
    settings: Settings,
    version: str,
    metrics: Mapping[str, float],
    against: Mapping[str, float] | None,
    gate: IndexGate,
    *,
    actor: str,
) -> ModelVersion:
    """Record a candidate index's retrieval evaluation against production's on the same questions."""
    registry = await load_registry(settings)
    events = registry.record_evaluation(
        INDEX_MODEL, version, metrics, gate, actor=actor, now_ms=now_ms(), against=against
    )
    return (await write_events(settings, events, registry))[-1]


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
