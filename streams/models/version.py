"""One model version's state: the record on ``models.control`` and how its id is computed.

Why this exists:
    The registry, the lifecycle rules, signing and the CLI all read and write the same record;
    it lives here, below all of them, so that none of them imports another to get it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class Stage(StrEnum):
    REGISTERED = "registered"
    QA = "qa"
    PRODUCTION = "production"
    ARCHIVED = "archived"


class Kind(StrEnum):
    EMBEDDER = "embedder"
    CLASSIFIER = "classifier"
    RANKER = "ranker"
    INDEX = "index"


# Kinds whose versions carry a small ONNX graph inline, checked and QA-gated the same way.
INLINE_KINDS = frozenset({Kind.CLASSIFIER, Kind.RANKER})
# Kinds whose production versions need a passed QA evaluation (an index: its retrieval gate).
GATED_KINDS = INLINE_KINDS | {Kind.INDEX}


@dataclass(frozen=True)
class ModelVersion:
    """One version's current state: the value of a ``models.control`` record."""

    name: str
    version: str
    kind: Kind
    stage: Stage
    updated_at_ms: int
    files: Mapping[str, str] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    embedder_version: str | None = None
    artifact: bytes | None = None
    uri: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    qa_metrics: Mapping[str, float] = field(default_factory=dict)
    qa_passed: bool | None = None
    qa_report: str | None = None
    shadow: bool = False
    approved_by: str | None = None
    promoted_at_ms: int | None = None
    actor: str = ""
    note: str | None = None
    key_id: str | None = None
    signature: bytes | None = None

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def short(self) -> str:
        return f"{self.name}@{self.version[:12]}"

    def to_avro(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "kind": self.kind.value,
            "stage": self.stage.value,
            "files": dict(self.files),
            "labels": list(self.labels),
            "embedder_version": self.embedder_version,
            "artifact": self.artifact,
            "uri": self.uri,
            "metrics": dict(self.metrics),
            "qa_metrics": dict(self.qa_metrics),
            "qa_passed": self.qa_passed,
            "qa_report": self.qa_report,
            "shadow": self.shadow,
            "approved_by": self.approved_by,
            "promoted_at_ms": self.promoted_at_ms,
            "updated_at_ms": self.updated_at_ms,
            "actor": self.actor,
            "note": self.note,
            "key_id": self.key_id,
            "signature": self.signature,
        }

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> ModelVersion:
        return cls(
            name=record["name"],
            version=record["version"],
            kind=Kind(record["kind"]),
            stage=Stage(record["stage"]),
            updated_at_ms=record["updated_at_ms"],
            files=dict(record.get("files") or {}),
            labels=tuple(record.get("labels") or ()),
            embedder_version=record.get("embedder_version"),
            artifact=record.get("artifact"),
            uri=record.get("uri"),
            metrics=dict(record.get("metrics") or {}),
            qa_metrics=dict(record.get("qa_metrics") or {}),
            qa_passed=record.get("qa_passed"),
            qa_report=record.get("qa_report"),
            shadow=bool(record.get("shadow", False)),
            approved_by=record.get("approved_by"),
            promoted_at_ms=record.get("promoted_at_ms"),
            actor=record.get("actor") or "",
            note=record.get("note"),
            key_id=record.get("key_id"),
            signature=record.get("signature"),
        )

    def summary(self) -> dict[str, Any]:
        """What `llmops models list --json` shows (no artifact or signature bytes)."""
        data = self.to_avro()
        data["artifact_bytes"] = len(self.artifact) if self.artifact else 0
        data["signed"] = self.signature is not None
        del data["artifact"], data["signature"]
        return data

    def unsigned(self) -> ModelVersion:
        """This state without its signature (what a new event starts from)."""
        return replace(self, key_id=None, signature=None)


def files_version(files: Mapping[str, bytes], config: str = "") -> tuple[str, dict[str, str]]:
    """A version id (sha256 over sorted file digests and a config string) and the per-file digests."""
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}
    return digests_version(digests, config), digests


def digests_version(digests: Mapping[str, str], config: str = "") -> str:
    """The version id of files with these sha256 digests (what :func:`files_version` computes)."""
    overall = hashlib.sha256()
    for name, digest in sorted(digests.items()):
        overall.update(f"{name}={digest}\n".encode())
    overall.update(config.encode())
    return overall.hexdigest()


def classifier_config(embedder_version: str | None) -> str:
    """The config string a classifier's version id covers: the embedder its inputs come from."""
    return f"embedder={embedder_version}" if embedder_version else ""
