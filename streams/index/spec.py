"""What an index version is made of: embedder, chunker, Milvus index, collection.

Why this exists:
    Changing the embedder, the chunker or the Milvus index type means a new index, built beside
    the one that answers (blue-green). An :class:`IndexSpec` names everything that decides the
    vectors and rows of an index; the registry stores it in an index version's ``labels`` (as
    sorted ``key=value`` strings, covered by the version id), so a worker that loads an index
    version loads the embedder that built it: a query is embedded by the embedder of the index it
    searches, by construction.

Usage:
    >>> spec = IndexSpec(embedder="fp32", embedder_version=version_for(settings_fp32))
    >>> spec.labels()                     # what the registry record carries
    >>> IndexSpec.from_labels(record.labels, record.embedder_version)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace

from streams.index.vectorstore import INDEX_TYPES, collection_name
from streams.ingest.pipeline import IngestConfig
from streams.settings import Settings

INDEX_MODEL = "chunks"  # the registry name of every index version
EMBEDDERS = ("int8", "fp32", "shipped")  # values of LLMOPS_EMBED_MODEL
QUANTIZATION = {"int8": "int8-dynamic", "fp32": "none", "shipped": "int8-dynamic"}


@dataclass(frozen=True)
class IndexSpec:
    """Everything that decides an index's rows and vectors.

    ``live`` marks the index the live pipeline writes (ingest -> embed -> index agents): its
    collection is named by the embedder version, as it always was; any other index version is
    built by the re-index builder into a collection named by the index version.
    """

    embedder: str
    embedder_version: str
    chunk_tokens: int = 128
    chunk_overlap: int = 16
    index_type: str = "HNSW"
    live: bool = False
    max_chunks: int = 0  # index only each document's first chunks (0 = all)

    def __post_init__(self) -> None:
        if self.embedder not in EMBEDDERS:
            raise ValueError(f"embedder {self.embedder!r} is not one of {', '.join(EMBEDDERS)} (--embedder)")
        if self.index_type not in INDEX_TYPES:
            raise ValueError(f"index type {self.index_type!r} is not one of {', '.join(INDEX_TYPES)} (--index-type)")
        if self.max_chunks < 0:
            raise ValueError(f"max_chunks {self.max_chunks} must be 0 (all) or more (--max-chunks)")
        if not 16 <= self.chunk_tokens <= 512 or not 0 <= self.chunk_overlap < self.chunk_tokens - 2:
            raise ValueError(
                f"chunker {self.chunk_tokens} tokens with {self.chunk_overlap} overlap: tokens must be 16..512 and "
                "overlap 0..tokens-3 (--chunk-tokens, --chunk-overlap)"
            )

    @classmethod
    def live_of(cls, settings: Settings, embedder_version: str) -> IndexSpec:
        """The index the live pipeline of ``settings`` writes."""
        return cls(
            embedder=settings.embed_model,
            embedder_version=embedder_version,
            chunk_tokens=settings.chunk_tokens,
            chunk_overlap=settings.chunk_overlap,
            index_type=settings.milvus_index_type,
            live=True,
        )

    def labels(self) -> tuple[str, ...]:
        """The spec as sorted ``key=value`` strings (what an index version's ``labels`` hold)."""
        fields = {
            "embedder": self.embedder,
            "quantization": QUANTIZATION[self.embedder],
            "chunk_tokens": str(self.chunk_tokens),
            "chunk_overlap": str(self.chunk_overlap),
            "max_chunks": str(self.max_chunks),
            "index_type": self.index_type,
            "index_params": json.dumps(INDEX_TYPES[self.index_type], sort_keys=True),
            "live": "true" if self.live else "false",
        }
        return tuple(sorted(f"{key}={value}" for key, value in fields.items()))

    def config(self) -> str:
        """The config string an index version id covers (with the embedder's file digests)."""
        return "index\n" + "\n".join(self.labels())

    @classmethod
    def from_labels(cls, labels: Iterable[str], embedder_version: str | None) -> IndexSpec:
        fields = dict(label.partition("=")[::2] for label in labels)
        try:
            return cls(
                embedder=fields["embedder"],
                embedder_version=embedder_version or "",
                chunk_tokens=int(fields["chunk_tokens"]),
                chunk_overlap=int(fields["chunk_overlap"]),
                index_type=fields["index_type"],
                live=fields.get("live") == "true",
                max_chunks=int(fields.get("max_chunks", "0")),
            )
        except (KeyError, ValueError) as error:
            raise ValueError(f"not an index spec: {sorted(labels)} ({error})") from None

    def collection(self, namespace: str, index_version: str) -> str:
        """The Milvus collection of this index: the live one by embedder, others by index version."""
        return collection_name(namespace, self.embedder_version if self.live else index_version)

    def store_key(self, index_version: str) -> str:
        """What names the collection in :func:`streams.index.vectorstore.shared_store`."""
        return self.embedder_version if self.live else index_version

    def ingest_config(self, settings: Settings) -> IngestConfig:
        """The ingest stage's settings with this spec's chunker (what a re-index runs)."""
        return replace(IngestConfig.from_settings(self.settings_for(settings)), max_chunks=self.max_chunks)

    def settings_for(self, settings: Settings) -> Settings:
        """``settings`` with this spec's embedder and chunker (what ``graph_for`` and the chunker read)."""
        return settings.model_copy(
            update={
                "embed_model": self.embedder,
                "chunk_tokens": self.chunk_tokens,
                "chunk_overlap": self.chunk_overlap,
                "milvus_index_type": self.index_type,
            }
        )
