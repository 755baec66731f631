"""The vector store: Milvus (Lite by default), one collection per namespace and model version.

Why this exists:
    The index agent and search need one small API over Milvus: idempotent upserts keyed by
    chunk id, deletes by chunk id or document, and tenant-scoped search. Vectors of different
    model versions never share a collection (the collection name carries the version), so a
    search never compares vectors from two models.

Hybrid retrieval:
    Each row holds a dense vector (HNSW) and a ``lexical`` text field that Milvus's own BM25
    ``Function`` turns into a sparse vector, so one upsert or delete changes both sides at once
    and tenants and versions stay one operation in one store. The text field gets text already
    normalised by :mod:`streams.index.lexical` (Milvus Lite's analyzers cannot stem or drop stop
    words); BM25 distances come back negative from Milvus Lite and are returned here positive
    (higher = better). :meth:`MilvusStore.hybrid` fuses the two sides in Milvus with RRF;
    :meth:`MilvusStore.candidates` returns both sides' scores for the learned ranker.

Usage:
    >>> store = MilvusStore.from_settings(settings, model_version=embedder.version)
    >>> store.upsert([ChunkRow(...)])
    >>> store.search(vector, top_k=5, tenant="acme")

Notes:
    Milvus Lite (a local file under ``LLMOPS_DATA_DIR``) allows one process to open it; agents
    that touch it share a worker process. ``LLMOPS_MILVUS_URI`` (+ token) selects a Milvus server.
    Filters are built here from typed arguments with string escaping, never from user text.
    (pymilvus's templated ``filter_params`` would be the cleaner way, but Milvus Lite 3.2's
    expression parser refuses templates: ``unexpected character '{'``.)
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from streams.index.lexical import lexical_text
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
BM25_PARAMS = {"bm25_k1": 1.2, "bm25_b": 0.75}
RRF_K = 60
OPENINGS_KEPT = 8192  # documents whose chunk 0 is remembered for the ranker's opening feature
OPENING_MAX_AGE_S = 60.0  # how long a remembered opening may lag a write made by another process
SCHEMA_VERSION = "v2"  # v2: the lexical text field and its BM25 sparse vector
_HIT_FIELDS = ["chunk_id", "doc_id", "chunk_index", "text", "title", "tenant"]


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
    text: str = field(default="", repr=False, compare=False)  # the whole chunk, for answers; not sent


@dataclass(frozen=True)
class Candidate:
    """A chunk found by the dense side, the BM25 side or both, with each side's score and rank.

    ``dense`` is the cosine of the query and chunk vectors, known for every candidate (the
    stored vector comes back with a BM25 hit); ``bm25`` is 0.0 and ``bm25_rank`` None when the
    BM25 side did not return the chunk.
    """

    chunk_id: str
    doc_id: str
    chunk_index: int
    title: str
    text: str
    dense: float
    bm25: float
    dense_rank: int | None
    bm25_rank: int | None

    def hit(self, score: float, tenant: str | None) -> Hit:
        return Hit(self.chunk_id, self.doc_id, score, _snippet(self.text), self.title, tenant or "", self.text)


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
    """``chunks_v2_<namespace>_<first 16 hex of the model version>``, letters/digits/underscores only."""
    return f"chunks_{SCHEMA_VERSION}_{_safe(namespace)}_{model_version[:16]}"


def production_alias(namespace: str) -> str:
    """The Milvus alias that names the production index's collection of ``namespace`` (flipped on a switch)."""
    return f"chunks_{_safe(namespace)}_production"


def legacy_collection_name(namespace: str, model_version: str) -> str:
    """The collection of schema v1 (dense only), which ``llmops index migrate`` copies from."""
    return f"chunks_{_safe(namespace)}_{model_version[:16]}"


def _safe(namespace: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", namespace or "live")


def tenant_filter(tenant: str | None) -> str:
    return f"tenant == {quote(tenant or '')}"


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

        _skip_per_character_checks()
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
        # doc_id -> (chunk 0's text, when read): this process's writes update it.
        self._openings: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._openings_lock = threading.Lock()
        self._openings_writes = 0  # this process's writes of openings, so a read racing one is not kept
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
        from pymilvus import DataType, Function, FunctionType, MilvusClient

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
            schema.add_field(
                "lexical",
                DataType.VARCHAR,
                max_length=MAX_CHUNK_TEXT_BYTES,
                enable_analyzer=True,
                analyzer_params={"type": "standard"},
            )
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["lexical"],
                    output_field_names=["sparse"],
                )
            )
            index = self._client.prepare_index_params()
            index.add_index(
                "vector", index_type=self.index_type, metric_type=self.metric, params=INDEX_TYPES[self.index_type]
            )
            index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25", params=BM25_PARAMS)
            self._client.create_collection(self.collection, schema=schema, index_params=index)
        # After a restart the collection exists but may not be loaded into memory.
        self._client.load_collection(self.collection)

    def upsert(self, rows: Sequence[ChunkRow]) -> None:
        if rows:
            values = [_row_dict(row) for row in rows]
            with _bad_data_rejected(), self._writing_openings([row.doc_id for row in rows if row.chunk_index == 0]):
                self._client.upsert(self.collection, values)

    def delete_chunks(self, chunk_ids: Sequence[str]) -> None:
        if chunk_ids:
            first = [chunk_id[:-2] for chunk_id in chunk_ids if chunk_id.endswith("#0")]
            with _bad_data_rejected(), self._writing_openings(first):
                self._client.delete(self.collection, ids=list(chunk_ids))

    def delete_document(self, doc_id: str, from_index: int = 0) -> None:
        """Delete a document's chunks whose index is ``from_index`` or more (0 = all)."""
        with _bad_data_rejected(), self._writing_openings([doc_id] if from_index <= 0 else []):
            self._client.delete(
                self.collection, filter=f"doc_id == {quote(doc_id)} and chunk_index >= {int(from_index)}"
            )

    def search(
        self, vector: Sequence[float], top_k: int, tenant: str | None, *, first_chunks_only: bool = False
    ) -> list[Hit]:
        """Dense search: the ``top_k`` chunks closest to ``vector`` within ``tenant``.

        ``first_chunks_only``: only each document's chunk 0 (the "first chunk per document" baseline).
        """
        where = tenant_filter(tenant) + (" and chunk_index == 0" if first_chunks_only else "")
        return [_hit(hit, float(hit["distance"])) for hit in self._dense_side(vector, top_k, where)]

    def lexical_search(self, query_terms: str, top_k: int, tenant: str | None) -> list[Hit]:
        """BM25 search on the lexical field (``query_terms`` from :func:`streams.index.lexical.query_text`)."""
        if not query_terms:
            return []
        return [_hit(hit, -float(hit["distance"])) for hit in self._lexical_side(query_terms, top_k, tenant)]

    def _dense_side(self, vector: Sequence[float], limit: int, where: str) -> Any:
        return self._client.search(
            self.collection,
            data=[list(vector)],
            anns_field="vector",
            limit=limit,
            filter=where,
            output_fields=_HIT_FIELDS,
            search_params={"params": SEARCH_PARAMS[self.index_type]},
            # Read-your-writes for this client: the index and infer agents of a worker share it,
            # so a search sees every chunk the worker has written without Strong's wait for a
            # cluster-wide timestamp.
            consistency_level="Session",
        )[0]

    def _lexical_side(self, query_terms: str, limit: int, tenant: str | None, with_vectors: bool = False) -> Any:
        return self._client.search(
            self.collection,
            data=[query_terms],
            anns_field="sparse",
            limit=limit,
            filter=tenant_filter(tenant),
            output_fields=[*_HIT_FIELDS, "vector"] if with_vectors else _HIT_FIELDS,
            consistency_level="Session",
        )[0]

    def hybrid(self, vector: Sequence[float], query_terms: str, top_k: int, tenant: str | None) -> list[Hit]:
        """Dense and BM25 fused by Milvus with reciprocal-rank fusion (score = RRF sum)."""
        from pymilvus import AnnSearchRequest, RRFRanker

        if not query_terms:
            return self.search(vector, top_k, tenant)
        requests = [
            AnnSearchRequest(
                data=[list(vector)],
                anns_field="vector",
                param={"params": SEARCH_PARAMS[self.index_type]},
                limit=top_k,
                expr=tenant_filter(tenant),
            ),
            AnnSearchRequest(
                data=[query_terms], anns_field="sparse", param={}, limit=top_k, expr=tenant_filter(tenant)
            ),
        ]
        results = self._client.hybrid_search(
            self.collection,
            requests,
            ranker=RRFRanker(RRF_K),
            limit=top_k,
            output_fields=_HIT_FIELDS,
            consistency_level="Session",
        )
        return [_hit(hit, float(hit["distance"])) for hit in results[0]]

    def candidates(self, vector: Sequence[float], query_terms: str, limit: int, tenant: str | None) -> list[Candidate]:
        """Chunks from both sides (``limit`` each), with both scores, for a ranker to order."""
        query = list(vector)
        query_array = np.asarray(query, dtype=np.float64)
        # The two sides run at once: each is a gRPC call that waits on the store (32 ms instead of
        # 43 ms for both here), and the BM25 side brings the vectors to score its hits by cosine.
        lexical_future = (
            _side_searches().submit(self._lexical_side, query_terms, limit, tenant, True) if query_terms else None
        )
        dense = self._dense_side(query, limit, tenant_filter(tenant))
        lexical = lexical_future.result() if lexical_future is not None else []
        found: dict[str, Candidate] = {}
        for rank, hit in enumerate(dense):
            # Stored vectors are unit length: squared L2 distances map onto cosines.
            distance = float(hit["distance"])
            cosine = 1.0 - distance / 2 if self.metric == "L2" else distance
            found[hit["entity"]["chunk_id"]] = _candidate(hit["entity"], cosine, 0.0, rank, None)
        for rank, hit in enumerate(lexical):
            entity = hit["entity"]
            bm25 = -float(hit["distance"])
            known = found.get(entity["chunk_id"])
            if known is not None:
                found[known.chunk_id] = replace(known, bm25=bm25, bm25_rank=rank)
            else:
                cosine = float(query_array @ np.asarray(entity["vector"], dtype=np.float64))
                found[entity["chunk_id"]] = _candidate(entity, cosine, bm25, None, rank)
        return list(found.values())

    def first_chunks(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """The text of chunk 0 of each document (its opening), by document id.

        Openings read before are remembered (up to :data:`OPENINGS_KEPT` documents): this
        process's own writes forget them at once, and one read no more than
        :data:`OPENING_MAX_AGE_S` ago is used, so another writer's change shows within that time.
        """
        found: dict[str, str] = {}
        now = time.monotonic()
        with self._openings_lock:
            writes = self._openings_writes
            for doc_id in doc_ids:
                known = self._openings.get(doc_id)
                if known is not None and now - known[1] <= OPENING_MAX_AGE_S:
                    found[doc_id] = known[0]
                    self._openings.move_to_end(doc_id)
        missing = [d for d in doc_ids if d not in found]
        if not missing:
            return found
        rows = self._client.get(self.collection, ids=[f"{d}#0" for d in missing], output_fields=["doc_id", "text"])
        read = {row["doc_id"]: row["text"] for row in rows}
        with self._openings_lock:
            if writes != self._openings_writes:  # an opening changed meanwhile: this read may predate it
                return found | read
            for doc_id, text in read.items():
                self._openings[doc_id] = (text, now)
                self._openings.move_to_end(doc_id)
            while len(self._openings) > OPENINGS_KEPT:
                self._openings.popitem(last=False)
        return found | read

    @contextlib.contextmanager
    def _writing_openings(self, doc_ids: Sequence[str]) -> Iterator[None]:
        """Around a write of these documents' chunk 0: their remembered openings are forgotten."""
        if not doc_ids:
            yield
            return
        try:
            yield
        finally:
            with self._openings_lock:
                self._openings_writes += 1
                for doc_id in doc_ids:
                    self._openings.pop(doc_id, None)

    def chunk_vectors(self, chunk_ids: Sequence[str]) -> dict[str, list[float]]:
        """The stored vector of each chunk, by chunk id (chunks not stored are left out)."""
        if not chunk_ids:
            return {}
        rows = self._client.get(self.collection, ids=list(chunk_ids), output_fields=["chunk_id", "vector"])
        return {row["chunk_id"]: row["vector"] for row in rows}

    def migrate_from(self, legacy: str, batch: int = 512, progress: Callable[[int], None] | None = None) -> int:
        """Copy every row of collection ``legacy`` (schema v1, dense only) into this one; returns rows copied.

        Rows keep their ids, vectors and timestamps; the lexical field (and so the BM25 side) is
        computed on the way in. Upserts make a re-run after a crash safe. The legacy collection
        is left in place: drop it with ``--drop`` once the new one answers.
        """
        if not self._client.has_collection(legacy):
            raise ValueError(f"no collection {legacy!r} at {mask_url_credentials(self.uri)}: nothing to migrate")
        self._client.load_collection(legacy)
        fields = [f for f in ChunkRow.__dataclass_fields__ if f != "vector"] + ["vector"]
        iterator = self._client.query_iterator(
            legacy, batch_size=batch, filter="chunk_index >= 0", output_fields=fields
        )
        copied = 0
        try:
            while rows := iterator.next():
                self.upsert([ChunkRow(**{name: row[name] for name in fields}) for row in rows])
                copied += len(rows)
                if progress:
                    progress(copied)
        finally:
            iterator.close()
        self.flush()
        return copied

    def point_alias(self, alias: str) -> str | None:
        """Make ``alias`` name this collection in one Milvus call; returns the collection it named before."""

        before = self.alias_target(alias)
        if before is None:
            self._client.create_alias(self.collection, alias)
        elif before != self.collection:
            self._client.alter_alias(self.collection, alias)
        return before

    def alias_target(self, alias: str) -> str | None:
        """The collection ``alias`` names, or None when there is no such alias."""
        from pymilvus.exceptions import MilvusException

        try:
            return str(self._client.describe_alias(alias)["collection_name"])
        except MilvusException:
            return None

    def drop_collection(self, name: str) -> None:
        self._client.drop_collection(name)

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


_side_pool: list[ThreadPoolExecutor] = []


def _side_searches() -> ThreadPoolExecutor:
    """Threads for the BM25 side of :meth:`MilvusStore.candidates` (one per concurrent request)."""
    with _shared_lock:
        if not _side_pool:
            _side_pool.append(ThreadPoolExecutor(4, thread_name_prefix="bm25-side"))
        return _side_pool[0]


_shared: dict[tuple[str, str], MilvusStore] = {}
_shared_lock = threading.Lock()


def shared_store(settings: Settings, model_version: str, dimension: int = 384) -> MilvusStore:
    """The open store of this process for ``settings`` and ``model_version``, opened on first use.

    ``model_version`` names the collection: the embedder version for the live pipeline's index,
    the index version for one built by the re-index builder (``streams.index.spec``).

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


def _hit(hit: dict[str, Any], score: float) -> Hit:
    entity = hit["entity"]
    return Hit(
        chunk_id=entity["chunk_id"],
        doc_id=entity["doc_id"],
        score=score,
        snippet=_snippet(entity["text"]),
        title=entity["title"],
        tenant=entity["tenant"],
        text=entity["text"],
    )


def _candidate(
    entity: dict[str, Any], dense: float, bm25: float, dense_rank: int | None, bm25_rank: int | None
) -> Candidate:
    return Candidate(
        chunk_id=entity["chunk_id"],
        doc_id=entity["doc_id"],
        chunk_index=int(entity["chunk_index"]),
        title=entity["title"],
        text=entity["text"],
        dense=dense,
        bm25=bm25,
        dense_rank=dense_rank,
        bm25_rank=bm25_rank,
    )


def _skip_per_character_checks() -> None:
    """Turn off pymilvus's string check on row writes: there it loops over every character.

    Its row path hands each string value alone to ``convert_to_str_array``, which then checks
    each *character* for being a ``str`` no longer than the field's ``max_length``: a check
    that can never fail, at about 60 us per 700-character field (two such fields per chunk,
    ``text`` and ``lexical``). Milvus itself still refuses an over-long value (the index agent
    dead-letters it as STORE_REJECTED), and :func:`_row_dict` truncates to the schema's lengths.
    """
    from pymilvus.client import entity_helper

    entity_helper.CHECK_STR_ARRAY = False


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
        "lexical": lexical_text(row.text[:16_000], row.title[:1000], MAX_CHUNK_TEXT_BYTES),
    }
