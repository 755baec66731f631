"""The registry's lifecycle rules, and control events through the real Avro codec."""

from __future__ import annotations

import pytest

from streams.kafka.avro import AvroCodec, EmbeddedRegistry
from streams.models.registry import Kind, ModelVersion, QaGate, Registry, RegistryError, Stage, files_version

GATE = QaGate(min_accuracy=0.6, max_drop=0.02)


def version(name: str = "topic", seed: str = "a", accuracy: float = 0.9) -> ModelVersion:
    vid, digests = files_version({"model.onnx": seed.encode(), "labels.json": b"x\ny"})
    return ModelVersion(
        name, vid, Kind.CLASSIFIER, Stage.REGISTERED, 1, digests, ("x", "y"), metrics={"holdout_accuracy": accuracy}
    )


def apply(registry: Registry, events: list[ModelVersion]) -> list[ModelVersion]:
    for event in events:
        registry.apply(event)
    return events


def to_production(registry: Registry, v: ModelVersion, accuracy: float, now: int) -> None:
    apply(registry, registry.register(v))
    apply(registry, registry.promote(v.name, v.version, Stage.QA, actor="t", now_ms=now))
    apply(registry, registry.record_evaluation(v.name, v.version, {"accuracy": accuracy}, GATE, actor="t", now_ms=now))
    apply(registry, registry.promote(v.name, v.version, Stage.PRODUCTION, actor="t", now_ms=now, approved_by="ana"))


def test_versions_are_named_by_their_files() -> None:
    assert version(seed="a").version == version(seed="a").version != version(seed="b").version
    assert len(version().version) == 64


def test_production_needs_qa_a_passed_gate_and_an_approver() -> None:
    registry = Registry()
    v = version()
    apply(registry, registry.register(v))
    with pytest.raises(RegistryError, match="promote it to qa"):
        registry.promote("topic", v.version, Stage.PRODUCTION, actor="t", now_ms=2, approved_by="ana")
    apply(registry, registry.promote("topic", v.version[:8], Stage.QA, actor="t", now_ms=2))
    with pytest.raises(RegistryError, match="no QA evaluation"):
        registry.promote("topic", v.version, Stage.PRODUCTION, actor="t", now_ms=3, approved_by="ana")
    apply(registry, registry.record_evaluation("topic", v.version, {"accuracy": 0.5}, GATE, actor="t", now_ms=3))
    with pytest.raises(RegistryError, match=r"failed its QA gate: accuracy 0\.500 is below"):
        registry.promote("topic", v.version, Stage.PRODUCTION, actor="t", now_ms=4, approved_by="ana")
    apply(registry, registry.record_evaluation("topic", v.version, {"accuracy": 0.8}, GATE, actor="t", now_ms=4))
    with pytest.raises(RegistryError, match="explicit approval"):
        registry.promote("topic", v.version, Stage.PRODUCTION, actor="t", now_ms=5, approved_by=" ")
    apply(registry, registry.promote("topic", v.version, Stage.PRODUCTION, actor="t", now_ms=5, approved_by="ana"))
    current = registry.production("topic")
    assert current is not None and current.version == v.version and current.approved_by == "ana"
    assert registry.resolve("topic").version == v.version


def test_a_candidate_worse_than_production_fails_the_gate() -> None:
    registry = Registry()
    to_production(registry, version(seed="a"), 0.9, now=10)
    worse = version(seed="b")
    apply(registry, registry.register(worse))
    apply(registry, registry.promote("topic", worse.version, Stage.QA, actor="t", now_ms=11))
    (evaluated,) = registry.record_evaluation("topic", worse.version, {"accuracy": 0.85}, GATE, actor="t", now_ms=12)
    assert evaluated.qa_passed is False
    assert "below production's 0.900" in (evaluated.qa_report or "")


def test_promotion_archives_the_old_version_and_rollback_restores_it() -> None:
    registry = Registry()
    first, second = version(seed="a"), version(seed="b")
    to_production(registry, first, 0.9, now=10)
    to_production(registry, second, 0.91, now=20)
    assert registry.get("topic", first.version).stage is Stage.ARCHIVED
    assert [v.version for v in registry.all("topic") if v.stage is Stage.PRODUCTION] == [second.version]
    events = apply(registry, registry.rollback("topic", actor="t", now_ms=30))
    assert [(e.version, e.stage) for e in events] == [
        (first.version, Stage.PRODUCTION),
        (second.version, Stage.ARCHIVED),
    ]
    assert registry.resolve("topic").version == first.version
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback("topic", actor="t", now_ms=40)


def promotion_of(registry: Registry, v: ModelVersion, accuracy: float) -> list[ModelVersion]:
    """Register ``v``, take it through QA (at times 20-21), and return its promotion's events (at 22)."""
    apply(registry, registry.register(v))
    apply(registry, registry.promote("topic", v.version, Stage.QA, actor="t", now_ms=20))
    apply(registry, registry.record_evaluation("topic", v.version, {"accuracy": accuracy}, GATE, actor="t", now_ms=21))
    return registry.promote("topic", v.version, Stage.PRODUCTION, actor="t", now_ms=22, approved_by="ana")


def test_a_worker_applying_one_event_at_a_time_always_has_a_production_version() -> None:
    # Workers follow models.control one event at a time and answer between two events of one
    # promotion: a classify request then must find a production version (a promotion used to
    # archive the old version first, and one request in 60 got UNKNOWN_MODEL).
    registry = Registry()
    first, second = version(seed="a"), version(seed="b")
    to_production(registry, first, 0.9, now=10)
    promotion = promotion_of(registry, second, 0.91)
    answered_by = []
    for event in promotion:
        registry.apply(event)
        answered_by.append(registry.resolve("topic").version)
    assert answered_by == [second.version, second.version], "the new version answers from its first event on"
    for event in registry.rollback("topic", actor="t", now_ms=30):
        registry.apply(event)
        answered_by.append(registry.resolve("topic").version)
    # The latest production event wins: the restored version answers from the rollback's first event.
    assert answered_by[2:] == [first.version, first.version], "rolled back from its first event on, never empty"


def test_registering_the_same_files_twice_is_refused_and_unknown_versions_say_what_exists() -> None:
    registry = Registry()
    v = version()
    apply(registry, registry.register(v))
    with pytest.raises(RegistryError, match="already registered"):
        registry.register(v)
    with pytest.raises(RegistryError, match=f"known versions: topic@{v.version[:12]}"):
        registry.get("topic", "ffff")
    with pytest.raises(RegistryError, match="has no production version"):
        registry.resolve("topic")


def test_a_registry_copy_does_not_see_later_events() -> None:
    registry = Registry()
    to_production(registry, version(seed="a"), 0.9, now=10)
    snapshot = registry.copy()
    to_production(registry, version(seed="b"), 0.9, now=20)
    assert snapshot.resolve("topic").version == version(seed="a").version
    assert registry.resolve("topic").version == version(seed="b").version


def test_control_events_round_trip_through_avro() -> None:
    codec = AvroCodec(EmbeddedRegistry.from_directory())
    v = ModelVersion.from_avro({**version().to_avro(), "artifact": b"\x00onnx", "shadow": True, "qa_passed": True})
    decoded = ModelVersion.from_avro(
        codec.decode(codec.encode("ModelVersion", v.to_avro(), "models.control"), "ModelVersion")
    )
    assert decoded == v
    assert "artifact" not in decoded.summary() and decoded.summary()["artifact_bytes"] == 5


def test_a_stale_production_event_cannot_take_production_back() -> None:
    # B, then A promoted, then rolled back to B: A's old (signed) production event, replayed after
    # A was deleted (so the worker has no history to check it against), must not make A answer.
    from streams.models.rules import RuleViolation, check_production

    registry = Registry()
    b, a = version(seed="b"), version(seed="a")
    to_production(registry, b, 0.9, now=10)
    promotion = promotion_of(registry, a, 0.95)
    apply(registry, promotion)
    old_a_event = next(e for e in promotion if e.version == a.version)
    apply(registry, registry.rollback("topic", actor="t", now_ms=30))
    assert registry.resolve("topic").version == b.version
    with pytest.raises(RuleViolation, match="stale"):
        check_production(registry.production("topic"), old_a_event)
