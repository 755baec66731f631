"""Index versions: the spec in a registry record, the id check, the retrieval gate, and which index a search reads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from streams.index.embed import OnnxEmbedder
from streams.index.spec import INDEX_MODEL, IndexSpec
from streams.inference.requests import RequestRejected
from streams.inference.service import InferenceService, LoadedIndex, ModelSet, load_indexes
from streams.kafka.avro import AvroCodec, EmbeddedRegistry
from streams.models.indexes import IndexGate, check_index_version, index_record, live_index_record, spec_of
from streams.models.registry import Registry, RegistryError, Stage
from streams.models.rejections import ControlRejected, Reason
from streams.settings import Settings

from .test_inference import MemoryStore, embedder, request

SHIPPED = OnnxEmbedder.default(workers=1)


def settings(tmp_path: Path) -> Settings:
    return Settings(namespace="unit", data_dir=tmp_path, embed_model="shipped")


def candidate_spec(**changes: object) -> IndexSpec:
    return replace(IndexSpec("shipped", SHIPPED.version), **changes)  # type: ignore[arg-type]


def test_a_spec_survives_its_labels_and_every_part_changes_the_version(tmp_path: Path) -> None:
    spec = candidate_spec(chunk_tokens=64, chunk_overlap=8, max_chunks=2, index_type="IVF_FLAT")
    assert IndexSpec.from_labels(spec.labels(), spec.embedder_version) == spec
    record = index_record(settings(tmp_path), spec, actor="t", note="n")
    assert record.kind.value == "index" and record.name == INDEX_MODEL
    assert record.uri == f"chunks_v2_unit_{record.version[:16]}" and spec_of(record) == spec
    others = {
        index_record(settings(tmp_path), candidate_spec(**c), actor="t", note="n").version
        for c in ({"chunk_tokens": 32}, {"chunk_overlap": 0}, {"max_chunks": 1}, {"index_type": "HNSW_SQ"}, {})
    }
    assert len(others | {record.version}) == 6
    codec = AvroCodec(EmbeddedRegistry())
    decoded = codec.decode(codec.encode("ModelVersion", record.to_avro(), "models.control"), "ModelVersion")
    assert decoded["kind"] == "index" and tuple(decoded["labels"]) == spec.labels()


def test_a_bad_spec_names_the_flag_to_change() -> None:
    with pytest.raises(ValueError, match="--embedder"):
        candidate_spec(embedder="bf16")
    with pytest.raises(ValueError, match="--chunk-tokens"):
        candidate_spec(chunk_tokens=8)
    with pytest.raises(ValueError, match="--index-type"):
        candidate_spec(index_type="FLAT")


def test_an_index_version_whose_spec_or_collection_was_changed_is_refused(tmp_path: Path) -> None:
    record = index_record(settings(tmp_path), candidate_spec(), actor="t", note="n")
    check_index_version(record, "unit")
    tampered = replace(record, labels=candidate_spec(max_chunks=1).labels())
    with pytest.raises(ControlRejected) as refused:
        check_index_version(tampered, "unit")
    assert refused.value.reason is Reason.DIGEST_MISMATCH
    with pytest.raises(ControlRejected, match="collection"):
        check_index_version(replace(record, uri="chunks_v2_unit_elsewhere"), "unit")
    live = live_index_record(settings(tmp_path), SHIPPED.version)
    check_index_version(live, "unit")
    assert live.uri == f"chunks_v2_unit_{SHIPPED.version[:16]}"  # the live pipeline's collection, as before


def test_the_gate_refuses_only_a_candidate_worse_beyond_the_interval() -> None:
    gate = IndexGate(metric="recall@5", max_drop=0.0)
    production = {"recall@5": 0.8}

    def metrics(diff: float, low: float, high: float) -> dict[str, float]:
        return {"recall@5": 0.8 + diff, "recall@5_diff": diff, "recall@5_diff_low": low, "recall@5_diff_high": high}

    assert gate.judge(metrics(-0.02, -0.08, 0.03), production)[0]  # not distinguishable from production
    passed, report = gate.judge(metrics(-0.3, -0.45, -0.15), production)
    assert not passed and "below the allowed drop" in report
    assert IndexGate(max_drop=0.2).judge(metrics(-0.3, -0.45, -0.15), production)[0]
    assert IndexGate(min_value=0.9).judge(metrics(0.0, 0.0, 0.0), None) == (
        False,
        "recall@5 0.800 is below the gate's floor 0.900",
    )


def test_an_index_reaches_production_only_with_a_passed_gate_and_rolls_back(tmp_path: Path) -> None:
    registry = Registry([live_index_record(settings(tmp_path), SHIPPED.version)])
    candidate = index_record(settings(tmp_path), candidate_spec(chunk_tokens=64), actor="t", note="n")
    t = candidate.updated_at_ms
    for event in registry.register(candidate):
        registry.apply(event)
    for event in registry.promote(INDEX_MODEL, candidate.version, Stage.QA, actor="t", now_ms=t + 2):
        registry.apply(event)
    with pytest.raises(RegistryError, match="no QA evaluation"):
        registry.promote(INDEX_MODEL, candidate.version, Stage.PRODUCTION, actor="t", now_ms=t + 3, approved_by="ana")
    worse = {"recall@5": 0.2, "recall@5_diff": -0.6, "recall@5_diff_low": -0.7, "recall@5_diff_high": -0.5}
    for event in registry.record_evaluation(
        INDEX_MODEL, candidate.version, worse, IndexGate(), actor="t", now_ms=t + 3, against={"recall@5": 0.8}
    ):
        registry.apply(event)
    with pytest.raises(RegistryError, match="failed its QA gate"):
        registry.promote(INDEX_MODEL, candidate.version, Stage.PRODUCTION, actor="t", now_ms=t + 4, approved_by="ana")
    same = {"recall@5": 0.8, "recall@5_diff": 0.0, "recall@5_diff_low": -0.05, "recall@5_diff_high": 0.05}
    for event in registry.record_evaluation(
        INDEX_MODEL, candidate.version, same, IndexGate(), actor="t", now_ms=t + 5, against={"recall@5": 0.8}
    ):
        registry.apply(event)
    for event in registry.promote(
        INDEX_MODEL, candidate.version, Stage.PRODUCTION, actor="t", now_ms=t + 6, approved_by="ana"
    ):
        registry.apply(event)
    assert registry.production(INDEX_MODEL).version == candidate.version  # type: ignore[union-attr]
    for event in registry.rollback(INDEX_MODEL, actor="t", now_ms=t + 7):
        registry.apply(event)
    assert spec_of(registry.production(INDEX_MODEL)).live  # type: ignore[arg-type]
    assert registry.get(INDEX_MODEL, candidate.version).stage is Stage.ARCHIVED


async def test_a_search_reads_the_production_index_or_the_one_it_pins_and_names_it(tmp_path: Path) -> None:
    live = live_index_record(settings(tmp_path), embedder().version)
    candidate = replace(
        index_record(settings(tmp_path), candidate_spec(chunk_tokens=64), actor="t", note="n"), stage=Stage.QA
    )
    registry = Registry([live, candidate])
    stores = {
        live.key: MemoryStore(embedder(), [("json-doc", "", "Decode a JSON document into Python objects.")]),
        candidate.key: MemoryStore(embedder(), [("zip-doc", "", "Read and write ZIP archive files.")]),
    }
    opened: list[str] = []

    def open_index(version: object) -> LoadedIndex:
        opened.append(version.key)  # type: ignore[attr-defined]
        return LoadedIndex(version, embedder(), stores[version.key])  # type: ignore[arg-type, attr-defined]

    production, indexes = load_indexes(registry, {}, open_index)
    assert production is not None and production.version == live and set(indexes) == {live.key, candidate.key}
    assert load_indexes(registry, indexes, open_index)[1].keys() == indexes.keys() and len(opened) == 2  # reused
    service = InferenceService(ModelSet(embedder(), None, registry, index=production, indexes=indexes))

    answer, _ = await service.answer(request("decode json"), 0)
    pinned, _ = await service.answer(request("decode json", model=f"chunks@{candidate.version[:12]}"), 0)

    assert [h["doc_id"] for h in answer["hits"]] == ["json-doc"]
    assert {"name": INDEX_MODEL, "version": live.version, "stage": "production"} in answer["models"]
    assert [h["doc_id"] for h in pinned["hits"]] == ["zip-doc"]
    assert {"name": INDEX_MODEL, "version": candidate.version, "stage": "qa"} in pinned["models"]
    with pytest.raises(RequestRejected, match="not registered"):
        service.models.index_for(request("x", model="chunks@ffff"))
