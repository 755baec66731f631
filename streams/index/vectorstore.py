"""The vector store: Milvus (Lite by default), one collection per namespace and model version.

Why this exists:
    The index agent and search need one small API over Milvus: idempotent upserts keyed by
    chunk id, deletes by chunk id or document, and tenant-scoped search. Vectors of different
    model versions never share a collection (the collection name carries the version), so a
    search never compares vectors from two models.

Usage:
    >>> store = MilvusStore.from_settings(settings, model_version=embedder.version)
    >>> store.upsert([ChunkRow(...)])
    >>> store.search(vector, top_k=5, tenant="acme")

Notes:
    Milvus Lite (a local file under ``LLMOPS_DATA_DIR``) allows one process to open it; agents
    that touch it share a worker process. ``LLMOPS_MILVUS_URI`` (+ token) selects a Milvus server.
    Filters are built here from typed arguments with string escaping, never from user text.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from streams.records import (
    MAX_CHUNK_ID_BYTES,
    MAX_CHUNK_TEXT_BYTES,
    MAX_SOURCE_BYTES,
    MAX_TITLE_BYTES,
    TENANT_COLUMN_BYTES,
)
from streams.settings import Settings, mask_url_credentials

INDEX_TYPES = {
    "HNSW": {"M": 16, "efConstruction": 200},
    "HNSW_SQ": {"M": 16, "efConstruction": 200, "sq_type": "SQ8"},
    "IVF_FLAT": {"nlist": 128},
    "IVF_SQ8": {"nlist": 128},
}
SEARCH_PARAMS = {"HNSW": {"ef": 64}, "HNSW_SQ": {"ef": 64}, "IVF_FLAT": {"nprobe": 16}, "IVF_SQ8": {"nprobe": 16}}


class StoreUnavailable(RuntimeError):
    """The vector store cannot be reached or opened; the message says what to do."""


class RecordRejected(ValueError):
    """The store is up but refuses what was written (a value it cannot hold): a bad record, not an outage."""


# Legacy Milvus status codes that mean "this request's data is wrong", not "the server is down":
# ILLEGAL_ARGUMENT, ILLEGAL_RANGE (a VARCHAR over its max_length), ILLEGAL_DIMENSION,
# ILLEGAL_ROWRECORD, ILLEGAL_VECTOR_ID; and 1100, the newer ErrParameterInvalid.
_BAD_DATA_CODES = frozenset({5, 6, 7, 11, 12, 1100})


@contextlib.contextmanager
def _bad_data_rejected() -> Iterator[None]:
    """Turn pymilvus's errors about the data written into :class:`RecordRejected`; others pass."""
    from pymilvus.exceptions import (
        DataNotMatchException,
        DataTypeNotMatchException,
        FieldTypeException,
        MilvusException,
        ParamError,
        PrimaryKeyException,
    )

    client_side = (
        ParamError,
        DataTypeNotMatchException,
        DataNotMatchException,
        FieldTypeException,
        PrimaryKeyException,
    )
    try:
        yield
    except client_side as error:
        raise RecordRejected(str(error)) from error
    except MilvusException as error:
        if error.code in _BAD_DATA_CODES:
            raise RecordRejected(error.message) from error
        raise


@dataclass(frozen=True)
class ChunkRow:
    """One chunk as stored beside its vector."""

    chunk_id: str
    doc_id: str
    chunk_index: int
    tenant: str
    text: str
    title: str
    source: str
    content_hash: str
    raw_timestamp_ms: int
    indexed_at_ms: int
    vector: Sequence[float]


@dataclass(frozen=True)
class Hit:
    """One search result."""

    chunk_id: str
    doc_id: str
    score: float
    snippet: str
    title: str
    tenant: str


class VectorStore(Protocol):
    """What the index agent and search need of a vector store."""

    def upsert(self, rows: Sequence[ChunkRow]) -> None: ...

    def delete_chunks(self, chunk_ids: Sequence[str]) -> None: ...

    def delete_document(self, doc_id: str, from_index: int = 0) -> None: ...

    def search(self, vector: Sequence[float], top_k: int, tenant: str | None) -> list[Hit]: ...

    def count(self) -> int: ...


def quote(value: str) -> str:
    """A Milvus string literal: JSON escaping is accepted by Milvus' expression parser."""
    return json.dumps(value, ensure_ascii=False)


def collection_name(namespace: str, model_version: str) -> str:
    """``chunks_<namespace>_<first 16 hex of the model version>``, letters/digits/underscores only."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", namespace or "live")
    return f"chunks_{safe}_{model_version[:16]}"


class MilvusStore:
    """Milvus Lite or a Milvus server, one collection per namespace and model version."""

    def __init__(
        self,
        uri: str,
        collection: str,
        dimension: int,
        token: str | None = None,
        index_type: str = "HNSW",
        metric: str = "COSINE",
    ) -> None:
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        if index_type not in INDEX_TYPES:
            raise ValueError(f"index type {index_type!r} is not one of {sorted(INDEX_TYPES)}")
        try:
            self._client = MilvusClient(uri, token=token or "")
        except MilvusException as error:
            raise StoreUnavailable(
                f"cannot open Milvus at {mask_url_credentials(uri)}: {mask_url_credentials(str(error))}. "
                "Milvus Lite lets one process open its file: "
                "stop the worker that holds it, or point LLMOPS_MILVUS_URI at a Milvus server"
            ) from None
        self.uri, self.collection, self.dimension = uri, collection, dimension
        self.index_type, self.metric = index_type, metric
        self.closed = False
        self._ensure_collection()

    @classmethod
    def from_settings(cls, settings: Settings, model_version: str, dimension: int = 384) -> MilvusStore:
        if settings.milvus_uri:
            uri = settings.milvus_uri
        else:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            uri = str((settings.data_dir / "milvus.db").resolve())
        token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
        return cls(
            uri,
            collection_name(settings.namespace, model_version),
            dimension,
            token,
            settings.milvus_index_type,
            settings.milvus_metric,
        )

    def _ensure_collection(self) -> None:
        from pymilvus import DataType, MilvusClient

        if not self._client.has_collection(self.collection):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=MAX_CHUNK_ID_BYTES)
            schema.add_field("doc_id", DataType.VARCHAR, max_length=MAX_CHUNK_ID_BYTES)
            schema.add_field("chunk_index", DataType.INT64)
            schema.add_field("tenant", DataType.VARCHAR, max_length=TENANT_COLUMN_BYTES)
            schema.add_field("title", DataType.VARCHAR, max_length=MAX_TITLE_BYTES)
            schema.add_field("source", DataType.VARCHAR, max_length=MAX_SOURCE_BYTES)
            schema.add_field("text", DataType.VARCHAR, max_length=MAX_CHUNK_TEXT_BYTES)
            schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
            schema.add_field("raw_timestamp_ms", DataType.INT64)
            schema.add_field("indexed_at_ms", DataType.INT64)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dimension)
            index = self._client.prepare_index_params()
            index.add_index(
                "vector", index_type=self.index_type, metric_type=self.metric, params=INDEX_TYPES[self.index_type]
            )
            self._client.create_collection(self.collection, schema=schema, index_params=index)
        # After a restart the collection exists but may not be loaded into memory.
        self._client.load_collection(self.collection)

    def upsert(self, rows: Sequence[ChunkRow]) -> None:
        if rows:
            with _bad_data_rejected():
                self._client.upsert(self.collection, [_row_dict(row) for row in rows])

    def delete_chunks(self, chunk_ids: Sequence[str]) -> None:
        if chunk_ids:
            with _bad_data_rejected():
                self._client.delete(self.collection, ids=list(chunk_ids))

    def delete_document(self, doc_id: str, from_index: int = 0) -> None:
        """Delete a document's chunks whose index is ``from_index`` or more (0 = all)."""
        with _bad_data_rejected():
            self._client.delete(
                self.collection, filter=f"doc_id == {quote(doc_id)} and chunk_index >= {int(from_index)}"
            )

    def search(self, vector: Sequence[float], top_k: int, tenant: str | None) -> list[Hit]:
        results = self._client.search(
            self.collection,
            data=[list(vector)],
            limit=top_k,
            filter=f"tenant == {quote(tenant or '')}",
            output_fields=["chunk_id", "doc_id", "text", "title", "tenant"],
            search_params={"params": SEARCH_PARAMS[self.index_type]},
            # Read-your-writes for this client: the index and infer agents of a worker share it,
            # so a search sees every chunk the worker has written without Strong's wait for a
            # cluster-wide timestamp.
            consistency_level="Session",
        )
        return [
            Hit(
                chunk_id=hit["entity"]["chunk_id"],
                doc_id=hit["entity"]["doc_id"],
                score=float(hit["distance"]),
                snippet=_snippet(hit["entity"]["text"]),
                title=hit["entity"]["title"],
                tenant=hit["entity"]["tenant"],
            )
            for hit in results[0]
        ]

    def get(self, chunk_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Stored rows by chunk id (vectors included)."""
        if not chunk_ids:
            return []
        return list(self._client.get(self.collection, ids=list(chunk_ids)))

    def chunk_ids(self, doc_id: str) -> list[str]:
        rows = self._client.query(self.collection, filter=f"doc_id == {quote(doc_id)}", output_fields=["chunk_id"])
        return sorted(row["chunk_id"] for row in rows)

    def all_chunk_ids(self, limit: int = 16_384) -> list[str]:
        """Every chunk id in the collection (up to ``limit``, Milvus' largest query window)."""
        rows = self._client.query(self.collection, filter="chunk_index >= 0", output_fields=["chunk_id"], limit=limit)
        return sorted(row["chunk_id"] for row in rows)

    def timings(self, limit: int = 16_384) -> list[tuple[int, int]]:
        """Per chunk (up to ``limit``): (raw document's Kafka timestamp, time it was indexed), ms."""
        rows = self._client.query(
            self.collection, filter="chunk_index >= 0", output_fields=["raw_timestamp_ms", "indexed_at_ms"], limit=limit
        )
        return [(int(row["raw_timestamp_ms"]), int(row["indexed_at_ms"])) for row in rows]

    def freshness_ms(self, limit: int = 16_384) -> list[int]:
        """Per chunk, ms from the raw document's Kafka timestamp to its indexing (searchable)."""
        return [indexed - raw for raw, indexed in self.timings(limit)]

    def flush(self) -> None:
        """Seal the collection's growing segments so they get their index.

        Milvus Lite searches rows that are not yet sealed without an index: with about 1,300
        unsealed rows a search took 65 ms here, against 3 ms once sealed and indexed.
        """
        self._client.flush(self.collection)

    def count(self) -> int:
        rows = self._client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def close(self) -> None:
        """Close the client and, for Milvus Lite, stop its in-process server and release the file lock."""
        self.closed = True
        self._client.close()
        if not self.uri.startswith(("http://", "https://", "tcp://", "unix:")):
            from milvus_lite import server_manager_instance

            server_manager_instance.release_server(self.uri)


_shared: dict[tuple[str, str], MilvusStore] = {}
_shared_lock = threading.Lock()


def shared_store(settings: Settings, model_version: str, dimension: int = 384) -> MilvusStore:
    """The open store of this process for ``settings`` and ``model_version``, opened on first use.

    Milvus Lite lets one process open its file, and closing a client stops its in-process
    server, so the agents of one worker (index and infer) share one store; a closed one (after a
    failure) is reopened by the next caller.
    """
    with _shared_lock:
        key = (str(settings.milvus_uri or (settings.data_dir / "milvus.db").resolve()), model_version)
        store = _shared.get(key)
        if store is None or store.closed:
            store = _shared[key] = MilvusStore.from_settings(settings, model_version, dimension)
        return store


def _snippet(text: str, limit: int = 200) -> str:
    """The chunk on one line, cut at a word boundary."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"


def _row_dict(row: ChunkRow) -> dict[str, Any]:
    return {
        "chunk_id": row.chunk_id,
        "doc_id": row.doc_id,
        "chunk_index": row.chunk_index,
        "tenant": row.tenant,
        "title": row.title[:1000],
        "source": row.source[:1000],
        "text": row.text[:16_000],
        "content_hash": row.content_hash,
        "raw_timestamp_ms": row.raw_timestamp_ms,
        "indexed_at_ms": row.indexed_at_ms,
        "vector": list(row.vector),
    }
