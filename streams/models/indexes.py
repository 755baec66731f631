"""Index versions in the registry: register a candidate index, gate it on retrieval, bootstrap the live one.

Why this exists:
    An index version (kind ``index``, name ``chunks``) goes through the same stages, signatures
    and worker-verified rules as a classifier: registered -> qa -> production -> archived on
    ``models.control``. Its id is the sha256 over the embedder's files (graph and tokenizer) and
    its spec (chunker, Milvus index type and parameters), so the same index is the same version.
    Registering one makes the worker that owns Milvus build it (agents/index_build.py); putting it
    in production switches every worker's searches to it, and a rollback switches them back.

Usage:
    >>> version = await register_index(settings, IndexSpec("fp32", version_for(fp32_settings)), actor="ana")
    >>> gate = IndexGate()                  # recall@5 not significantly below production's
    >>> passed, report = gate.judge(metrics, production_metrics)
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, replace

from streams.index.embed import OnnxEmbedder, graph_for
from streams.index.spec import INDEX_MODEL, IndexSpec
from streams.index.vectorstore import MilvusStore, shared_store
from streams.ingest.chunk import default_tokenizer_path
from streams.models.rejections import ControlRejected, Reason
from streams.models.version import Kind, ModelVersion, Stage, digests_version, files_version
from streams.records import now_ms
from streams.settings import Settings


@dataclass(frozen=True)
class IndexGate:
    """What a candidate index's retrieval evaluation must show against production on the same questions.

    ``metrics`` hold the candidate's means and, for ``metric``, the paired bootstrap interval of
    (candidate - production) as ``<metric>_diff``, ``<metric>_diff_low``, ``<metric>_diff_high``.
    The candidate fails when its mean is under ``min_value``, or when the whole 95% interval of
    the difference lies below ``-max_drop``: worse than production beyond what the questions can
    tell apart. With no production index there is nothing to compare with, only the floor.
    """

    metric: str = "recall@5"
    min_value: float = 0.0
    max_drop: float = 0.0

    def judge(self, metrics: Mapping[str, float], against: Mapping[str, float] | None) -> tuple[bool, str]:
        value = float(metrics[self.metric])
        if value < self.min_value:
            return False, f"{self.metric} {value:.3f} is below the gate's floor {self.min_value:.3f}"
        if against is None:
            return True, f"{self.metric} {value:.3f} >= floor {self.min_value:.3f}; no production index to compare"
        diff, low, high = (float(metrics[f"{self.metric}_diff{end}"]) for end in ("", "_low", "_high"))
        shown = (
            f"{self.metric} {value:.3f} against production's {float(against[self.metric]):.3f} on the same "
            f"questions: difference {diff:+.3f} [{low:+.3f}, {high:+.3f}]"
        )
        if high < -self.max_drop:
            return False, f"{shown} lies below the allowed drop {self.max_drop:.3f}"
        return True, f"{shown}, not below the allowed drop {self.max_drop:.3f}"


def index_record(
    settings: Settings, spec: IndexSpec, *, actor: str, note: str, stage: Stage = Stage.REGISTERED
) -> ModelVersion:
    """The registry record of ``spec``: id over the embedder's files and the spec; uri = its collection."""
    graph = graph_for(spec.settings_for(settings))
    version, digests = files_version(
        {"model.onnx": graph.read_bytes(), "tokenizer.json": default_tokenizer_path().read_bytes()}, spec.config()
    )
    return ModelVersion(
        name=INDEX_MODEL,
        version=version,
        kind=Kind.INDEX,
        stage=stage,
        updated_at_ms=now_ms(),
        files=digests,
        labels=spec.labels(),
        embedder_version=spec.embedder_version,
        uri=spec.collection(settings.namespace, version),
        actor=actor,
        note=note,
    )


def live_index_record(settings: Settings, embedder_version: str) -> ModelVersion:
    """The index the live pipeline writes, in production since before index versions existed.

    Nothing was evaluated against it (it is the baseline every candidate is judged against), so
    its QA record says so; the worker that runs the live embedder writes it once, signed.
    """
    record = index_record(
        settings,
        IndexSpec.live_of(settings, embedder_version),
        actor="llmops worker",
        note="the live pipeline's index (registered by the worker that runs it)",
        stage=Stage.PRODUCTION,
    )
    return replace(
        record,
        qa_passed=True,
        qa_report="the baseline: the index the live pipeline was writing when index versions began",
        approved_by="bootstrap",
        promoted_at_ms=record.updated_at_ms,
    )


def spec_of(version: ModelVersion) -> IndexSpec:
    """The spec an index version carries.

    Raises:
        ControlRejected: the version is not an index version with a readable spec.
    """
    if version.kind is not Kind.INDEX:
        raise ControlRejected(Reason.MALFORMED, f"{version.short} is a {version.kind}, not an index version")
    try:
        return IndexSpec.from_labels(version.labels, version.embedder_version)
    except ValueError as error:
        raise ControlRejected(Reason.MALFORMED, f"{version.short}: {error}") from None


def check_index_version(version: ModelVersion, namespace: str) -> None:
    """An index version's id is the digest of its embedder files and spec; its uri is the spec's collection.

    Raises:
        ControlRejected: DIGEST_MISMATCH or MALFORMED, with what to do.
    """
    spec = spec_of(version)
    if digests_version(version.files, spec.config()) != version.version:
        raise ControlRejected(
            Reason.DIGEST_MISMATCH,
            f"{version.short}: the version id is not the digest of its embedder files and spec; register it again",
        )
    if version.uri != spec.collection(namespace, version.version):
        raise ControlRejected(
            Reason.MALFORMED, f"{version.short}: collection {version.uri!r} is not the one its spec names"
        )


def index_embedder(
    settings: Settings, version: ModelVersion, loaded: MutableMapping[str, OnnxEmbedder] | None = None
) -> OnnxEmbedder:
    """The embedder index ``version`` names (one thread), refused when the files here are another version.

    ``loaded`` (by embedder version) is reused and filled, so each embedder loads once per process.

    Raises:
        ControlRejected: LOAD_FAILED when this machine's model files are not the ones the index was built with.
    """
    spec = spec_of(version)
    embedder = loaded.get(spec.embedder_version) if loaded is not None else None
    if embedder is None:
        embedder = OnnxEmbedder(graph_for(spec.settings_for(settings)), default_tokenizer_path(), workers=1)
        if embedder.version != spec.embedder_version:
            raise ControlRejected(
                Reason.LOAD_FAILED,
                f"{version.short} needs embedder {spec.embedder_version[:12]}; LLMOPS_EMBED_MODEL={spec.embedder} "
                f"here is {embedder.version[:12]}: install the same model files",
            )
        if loaded is not None:
            loaded[spec.embedder_version] = embedder
    return embedder


def index_store(settings: Settings, version: ModelVersion, dimension: int = 384) -> MilvusStore:
    """The open store (this process's shared one) of index ``version``'s collection."""
    spec = spec_of(version)
    return shared_store(spec.settings_for(settings), spec.store_key(version.version), dimension)
