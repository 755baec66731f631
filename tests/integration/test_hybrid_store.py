"""The hybrid store on real Milvus Lite: both sides change together, tenants stay apart, v1 data migrates.

No broker is needed: these are the store's guarantees (the Kafka path is covered by
test_answers_flow.py). The embedder is the real ONNX model.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from streams.index.embed import OnnxEmbedder
from streams.index.lexical import query_text
from streams.index.retrieval import retrieve
from streams.index.vectorstore import ChunkRow, MilvusStore, legacy_collection_name


@lru_cache(maxsize=1)
def embedder() -> OnnxEmbedder:
    return OnnxEmbedder.default(workers=1)


def rows(doc_id: str, texts: list[str], tenant: str = "", title: str = "") -> list[ChunkRow]:
    vectors = embedder().embed(texts)
    return [
        ChunkRow(f"{doc_id}#{i}", doc_id, i, tenant, text, title or doc_id, "test", "h", 1, 2, vector.tolist())
        for i, (text, vector) in enumerate(zip(texts, vectors, strict=True))
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MilvusStore]:
    opened = MilvusStore(str(tmp_path / "milvus.db"), "chunks_v2_test_0123456789abcdef", embedder().dimension)
    yield opened
    opened.close()


def ids(hits: list) -> list[str]:
    return [hit.doc_id for hit in hits]


def everywhere(store: MilvusStore, question: str, tenant: str | None = None) -> dict[str, list[str]]:
    """Document ids each side returns for ``question``."""
    vector = embedder().embed([question])[0].tolist()
    terms = query_text(question)
    return {
        "dense": ids(store.search(vector, 10, tenant)),
        "bm25": ids(store.lexical_search(terms, 10, tenant)),
        "hybrid": ids(store.hybrid(vector, terms, 10, tenant)),
        "candidates": sorted({c.doc_id for c in store.candidates(vector, terms, 10, tenant)}),
    }


def test_an_upsert_and_a_delete_change_the_dense_and_the_bm25_side_together(store: MilvusStore) -> None:
    store.upsert(rows("tool", ["Run frobnicate --zorblatt to rebuild the cache of the widget compiler."]))
    store.upsert(rows("other", ["Parse command line options and print usage on error."]))
    found = everywhere(store, "what does --zorblatt do")
    assert found["bm25"] == ["tool"] and found["hybrid"][0] == "tool" and "tool" in found["dense"]

    store.upsert(rows("tool", ["Run frobnicate --quuxify to rebuild the cache of the widget compiler."]))
    assert everywhere(store, "zorblatt")["bm25"] == []  # the old text left the BM25 side with the upsert
    assert everywhere(store, "quuxify")["bm25"] == ["tool"]

    store.delete_document("tool")
    gone = everywhere(store, "frobnicate quuxify widget compiler cache")
    assert all("tool" not in found for found in gone.values()), gone


def test_tenants_never_see_each_others_documents_on_either_side(store: MilvusStore) -> None:
    store.upsert(rows("acme-plan", ["Acme compresses every quarterly report with gzip."], tenant="acme"))
    store.upsert(rows("public", ["gzip compresses files; quarterly reports are not special."]))
    for side, found in everywhere(store, "quarterly report gzip", tenant="acme").items():
        assert found == ["acme-plan"], side
    for side, found in everywhere(store, "quarterly report gzip").items():
        assert found == ["public"], side
    assert all(found == [] for found in everywhere(store, "quarterly report gzip", tenant="globex").values())


def test_results_are_distinct_documents_with_their_chunks_as_evidence(store: MilvusStore) -> None:
    long_doc = [f"Section {i}: the archive tool stores files in tar format with gzip compression." for i in range(6)]
    store.upsert(rows("archive-manual", long_doc, title="tarfile"))
    store.upsert(rows("zip-manual", ["Read and write ZIP archives with zipfile."], title="zipfile"))
    store.upsert(rows("json-manual", ["Decode JSON documents into Python objects."], title="json"))
    vector = embedder().embed(["store files in a tar archive"])[0].tolist()
    for mode in ("ranked", "hybrid", "dense", "bm25"):
        found = retrieve(store, vector, "store files in a tar archive", top_k=3, tenant=None, mode=mode)
        doc_ids = [d.doc_id for d in found.documents]
        assert doc_ids[0] == "archive-manual" and len(doc_ids) == len(set(doc_ids)), (mode, doc_ids)
        assert len(found.documents[0].evidence) > 1  # several chunks of one document: evidence, not crowding
    chunks = retrieve(store, vector, "store files in a tar archive", top_k=4, tenant=None, mode="dense", chunks=True)
    assert [hit.doc_id for hit in chunks.chunks] == ["archive-manual"] * 4  # chunk level on request
    question = "tarfile gzip compression"
    vector = embedder().embed([question])[0].tolist()
    best = retrieve(store, vector, question, top_k=3, tenant=None, mode="ranked").documents[0]
    assert best.doc_id == "archive-manual" and set(best.features) == set(best.attributions)
    assert best.features["title_match"] > 0 and best.features["bm25_found"] == 1.0


def test_a_v1_collection_migrates_with_its_vectors_and_gains_a_bm25_side(tmp_path: Path) -> None:
    from pymilvus import DataType, MilvusClient

    uri = str(tmp_path / "milvus.db")
    version = "ab" * 32
    legacy = legacy_collection_name("live", version)
    client = MilvusClient(uri)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=512)
    schema.add_field("chunk_index", DataType.INT64)
    for name in ("tenant", "title", "source", "text", "content_hash"):
        schema.add_field(name, DataType.VARCHAR, max_length=4096)
    schema.add_field("raw_timestamp_ms", DataType.INT64)
    schema.add_field("indexed_at_ms", DataType.INT64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=4)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="HNSW", metric_type="COSINE", params={"M": 16, "efConstruction": 200})
    client.create_collection(legacy, schema=schema, index_params=index)
    rng = np.random.default_rng(0)
    old = [
        {
            "chunk_id": f"d{i}#0",
            "doc_id": f"d{i}",
            "chunk_index": 0,
            "tenant": "",
            "title": f"doc {i}",
            "source": "",
            "text": f"zorblatt entry number{i}",
            "content_hash": "h",
            "raw_timestamp_ms": i,
            "indexed_at_ms": i + 1,
            "vector": rng.random(4).tolist(),
        }
        for i in range(1200)  # more than one iterator batch
    ]
    client.insert(legacy, old)
    client.close()
    from milvus_lite import server_manager_instance

    server_manager_instance.release_server(uri)
    store = MilvusStore(uri, f"chunks_v2_live_{version[:16]}", 4)
    try:
        assert store.migrate_from(legacy) == 1200 and store.count() == 1200
        assert ids(store.lexical_search(query_text("number17"), 1, None)) == ["d17"]
        (copied,) = store.get(["d5#0"])
        assert np.allclose(copied["vector"], old[5]["vector"]) and copied["indexed_at_ms"] == 6
        assert store.migrate_from(legacy) == 1200 and store.count() == 1200  # a re-run changes nothing
    finally:
        store.close()


def test_remembered_openings_follow_this_process_s_upserts_and_deletes(store: MilvusStore) -> None:
    store.upsert(rows("guide", ["Guide opening, first edition.", "Guide body."]))
    assert store.first_chunks(["guide", "absent"]) == {"guide": "Guide opening, first edition."}
    store.upsert(rows("guide", ["Guide opening, second edition."]))
    assert store.first_chunks(["guide"]) == {"guide": "Guide opening, second edition."}
    store.delete_chunks(["guide#0"])
    assert store.first_chunks(["guide"]) == {}
    store.upsert(rows("guide", ["Guide opening, third edition."]))
    assert store.first_chunks(["guide"]) == {"guide": "Guide opening, third edition."}
    store.delete_document("guide")
    assert store.first_chunks(["guide"]) == {}


def test_stored_vectors_come_back_by_chunk_id(store: MilvusStore) -> None:
    written = rows("doc", ["One chunk about gzip.", "Another about tarfile."])
    store.upsert(written)
    found = store.chunk_vectors(["doc#1", "doc#9"])
    assert list(found) == ["doc#1"]
    assert np.allclose(found["doc#1"], written[1].vector, atol=1e-6)
