"""The registry follower applies good control records and refuses bad ones without stalling (issue 18, finding 3)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.kafka.avro import AvroCodec, EmbeddedRegistry
from streams.models.artifacts import DEFAULT_MAX_BYTES
from streams.models.lifecycle import control_check
from streams.models.registry import Kind, ModelVersion, RegistryFollower, Stage, files_version
from streams.models.rejections import ControlRejected, Reason
from streams.models.signing import Signer, TrustedKeys
from streams.settings import Settings

CODEC = AvroCodec(EmbeddedRegistry.from_directory())
SIGNER = Signer.of(Ed25519PrivateKey.generate())
CHECK = control_check(CODEC, TrustedKeys.of([SIGNER.private_key.public_key()]), DEFAULT_MAX_BYTES)


def version(seed: str) -> ModelVersion:
    vid, digests = files_version({"model.onnx": seed.encode()})
    return ModelVersion("topic", vid, Kind.CLASSIFIER, Stage.REGISTERED, 1, digests, ("x", "y"))


def message(offset: int, key: str, value: bytes | None) -> Any:
    return SimpleNamespace(
        topic="models.control", partition=0, offset=offset, key=key.encode(), value=value, timestamp=5
    )


def encoded(v: ModelVersion) -> bytes:
    return CODEC.encode("ModelVersion", SIGNER.sign(v).to_avro(), "models.control")


class Recorder:
    def __init__(self, fail_for: str = "") -> None:
        self.fail_for = fail_for
        self.changes: list[str] = []
        self.rejections: list[tuple[int, Reason]] = []

    def on_change(self, v: ModelVersion | None, key: str) -> None:
        if key == self.fail_for:
            raise RuntimeError("onnxruntime: cannot load the graph")
        self.changes.append(key)

    async def on_reject(self, msg: Any, rejected: ControlRejected) -> None:
        self.rejections.append((msg.offset, rejected.reason))


async def test_a_record_whose_models_fail_to_load_is_refused_and_the_next_one_applies() -> None:
    good, bad, later = version("a"), version("b"), version("c")
    recorder = Recorder(fail_for=bad.key)
    follower = RegistryFollower(Settings(), CHECK, recorder.on_change, recorder.on_reject)
    await follower.take(message(0, good.key, encoded(good)))
    await follower.take(message(1, bad.key, encoded(bad)))  # used to raise out of the follower
    await follower.take(message(2, later.key, encoded(later)))
    assert recorder.rejections == [(1, Reason.LOAD_FAILED)]
    assert recorder.changes == [good.key, later.key]
    assert {v.key for v in follower.registry.all()} == {good.key, later.key}, "the refused version is not kept"


async def test_a_refused_update_of_a_known_version_keeps_the_version_it_had() -> None:
    first = version("a")
    update = ModelVersion.from_avro({**first.to_avro(), "stage": "qa", "updated_at_ms": 2})
    recorder = Recorder(fail_for=first.key)
    follower = RegistryFollower(Settings(), CHECK, lambda v, k: None, recorder.on_reject)
    await follower.take(message(0, first.key, encoded(first)))
    follower._on_change = recorder.on_change
    await follower.take(message(1, first.key, encoded(update)))
    assert follower.registry.find(first.key) == SIGNER.sign(first)


async def test_malformed_records_are_refused_with_a_reason_and_do_not_stop_the_follower() -> None:
    good = version("a")
    recorder = Recorder()
    follower = RegistryFollower(Settings(), CHECK, recorder.on_change, recorder.on_reject)
    await follower.take(message(0, "topic@x", b"\x00\x00\x00\x00\x07garbage"))
    await follower.take(message(1, "topic@not-the-version", encoded(good)))
    await follower.take(message(2, good.key, encoded(good)))
    assert recorder.rejections == [(0, Reason.MALFORMED), (1, Reason.MALFORMED)]
    assert recorder.changes == [good.key]
    assert follower.rejected == 2


async def test_a_failing_rejection_report_does_not_stop_the_follower() -> None:
    good = version("a")

    async def broken_report(msg: Any, rejected: ControlRejected) -> None:
        raise RuntimeError("the dead-letter producer is down")

    follower = RegistryFollower(Settings(), CHECK, lambda v, k: None, broken_report)
    await follower.take(message(0, "k", b"garbage"))
    await follower.take(message(1, good.key, encoded(good)))
    assert follower.registry.find(good.key) == SIGNER.sign(good)
