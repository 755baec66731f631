"""models.control on the real broker: refused control events never change what answers (issue 18).

The follower each infer worker runs reads the compacted control topic; a record it refuses
(malformed, or whose models fail to load) is reported once, and the next good record applies.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.inference.client import InferenceClient
from streams.kafka.admin import ensure_topics, producer, read_topic
from streams.kafka.avro import codec_from_settings
from streams.kafka.topics import Topics
from streams.models.classifier import stdlib_topic_dataset
from streams.models.lifecycle import (
    control_check_from_settings,
    evaluate_version,
    load_registry,
    promote,
    train_and_register,
)
from streams.models.registry import Kind, ModelVersion, RegistryFollower, Stage, files_version
from streams.models.rejections import ControlRejected, Reason
from streams.models.signing import Signer, signer_from_settings
from streams.settings import Settings

from .conftest import WorkerProcess, production_classifier, run, wait_for


def version(seed: str) -> ModelVersion:
    vid, digests = files_version({"model.onnx": seed.encode()})
    return ModelVersion("topic", vid, Kind.CLASSIFIER, Stage.REGISTERED, 1, digests, ("x", "y"))


async def write_raw(settings: Settings, records: list[tuple[str, bytes | None]]) -> None:
    """What anyone with WRITE on models.control can do: produce straight to the topic."""
    kafka = producer(settings, linger_ms=0)
    await kafka.start()
    try:
        for key, value in records:
            await kafka.send_and_wait(Topics(settings.namespace).models_control, value, key=key.encode())
    finally:
        await kafka.stop()


async def follow_until(follower: RegistryFollower, done: Any, timeout: float = 60.0) -> None:
    await follower.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not done():
            assert asyncio.get_running_loop().time() < deadline, "the follower never reached the last good record"
            await asyncio.sleep(0.2)
        # Read on a little: a follower that seeks back would report the bad records again.
        await asyncio.sleep(2.0)
    finally:
        await follower.stop()


def test_a_bad_control_record_is_skipped_once_and_the_next_good_record_applies(settings: Settings) -> None:
    run(ensure_topics(settings))
    codec = codec_from_settings(settings)
    first, unloadable, last = version("a"), version("b"), version("c")

    signer = signer_from_settings(settings)

    def value(v: ModelVersion) -> bytes:
        return codec.encode(
            "ModelVersion", signer.sign(v, settings.namespace).to_avro(), Topics(settings.namespace).models_control
        )

    run(
        write_raw(
            settings,
            [
                (first.key, value(first)),
                ("topic@garbage", b"\x00\x00\x00\x00\x07not avro"),
                (unloadable.key, value(unloadable)),
                (last.key, value(last)),
            ],
        )
    )
    rejections: list[tuple[int, Reason]] = []
    changes: list[str] = []

    def on_change(v: ModelVersion | None, key: str) -> None:
        if key == unloadable.key:
            raise RuntimeError("onnxruntime cannot load this graph")
        changes.append(key)

    async def on_reject(message: Any, rejected: ControlRejected) -> None:
        rejections.append((message.offset, rejected.reason))

    follower = RegistryFollower(settings, control_check_from_settings(settings, codec), on_change, on_reject)
    run(follow_until(follower, lambda: last.key in changes))
    assert changes == [first.key, last.key]
    assert rejections == [(1, Reason.MALFORMED), (2, Reason.LOAD_FAILED)], "each bad record is reported once"
    assert {v.key for v in follower.registry.all()} == {first.key, last.key}


# --- forged events against a running infer worker (finding 1) -----------------------------------


def classify_version(settings: Settings, name: str) -> str | None:
    """The version of ``name`` that answers a classify request now (None if none answers)."""

    async def ask() -> dict[str, Any]:
        async with InferenceClient(settings) as client:
            future = await client.send(client.request("run the event loop", "classify", model=name))
            return dict(await asyncio.wait_for(future, 30))

    response = run(ask())
    if response["status"] != "OK":
        return None
    return next(m["version"] for m in response["models"] if m["name"] == name)


def control_letters(settings: Settings) -> list[dict[str, Any]]:
    codec = codec_from_settings(settings)
    topics = Topics(settings.namespace)

    async def read() -> list[dict[str, Any]]:
        letters = [codec.decode(m.value, "DeadLetter") async for m in read_topic(settings, topics.deadletter)]
        return [letter for letter in letters if letter["source_topic"] == topics.models_control]

    return run(read())


def rejection_alerts(settings: Settings) -> list[dict[str, Any]]:
    codec = codec_from_settings(settings)

    async def read() -> list[dict[str, Any]]:
        topic = Topics(settings.namespace).monitor_alerts
        alerts = [codec.decode(m.value, "Alert") async for m in read_topic(settings, topic)]
        return [alert for alert in alerts if alert["metric"] == "models.control.rejected"]

    return run(read())


def test_forged_control_events_change_nothing_and_a_signed_promotion_still_applies(settings: Settings) -> None:
    run(ensure_topics(settings))
    name = "forgery"
    first = production_classifier(settings, name, classes=3)
    worker = WorkerProcess(settings, agents="infer").start()
    try:
        assert wait_for(lambda: classify_version(settings, name) == first.version, 120), worker.log_tail()
        data = stdlib_topic_dataset(classes=4, per_class=30)
        second = run(train_and_register(settings, data, name, actor="test", note="the candidate"))
        registered = run(load_registry(settings)).get(name, second.version)
        dev = signer_from_settings(settings)
        attacker = Signer.of(Ed25519PrivateKey.generate())
        promoted = replace(
            registered.unsigned(),
            stage=Stage.PRODUCTION,
            qa_passed=True,
            approved_by="mallory",
            promoted_at_ms=registered.updated_at_ms + 1,
            updated_at_ms=registered.updated_at_ms + 1,
        )
        topic = Topics(settings.namespace).models_control
        codec = codec_from_settings(settings)
        ns = settings.namespace
        forged = {
            "UNSIGNED": promoted,
            "UNKNOWN_KEY": attacker.sign(promoted, ns),
            "BAD_SIGNATURE": replace(attacker.sign(promoted, ns), key_id=dev.key_id),
            "RULE_VIOLATION": dev.sign(promoted, ns),  # the real key, but registered -> production skips QA
            "DIGEST_MISMATCH": dev.sign(replace(registered.unsigned(), artifact=first_artifact(settings, first)), ns),
        }
        run(write_raw(settings, [(v.key, codec.encode("ModelVersion", v.to_avro(), topic)) for v in forged.values()]))
        assert wait_for(lambda: len(control_letters(settings)) >= len(forged), 60), worker.log_tail()
        letters = control_letters(settings)
        assert sorted(letter["reason"] for letter in letters) == sorted(forged)
        assert all(letter["stage"] == "infer" and letter["key"] == second.key.encode() for letter in letters)
        assert classify_version(settings, name) == first.version, "production did not change"
        assert wait_for(lambda: len(rejection_alerts(settings)) >= len(forged), 30)
        assert {a["severity"] for a in rejection_alerts(settings)} == {"critical"}
        # The next good, signed events apply: the worker did not stall on the forged ones.
        run(promote(settings, name, second.version, Stage.QA, actor="test"))
        assert run(evaluate_version(settings, name, second.version, data, actor="test")).qa_passed
        run(promote(settings, name, second.version, Stage.PRODUCTION, actor="test", approved_by="qa-lead"))
        assert wait_for(lambda: classify_version(settings, name) == second.version, 60), worker.log_tail()
        assert worker.alive()
    finally:
        assert worker.stop() == 0, worker.log_tail()


def first_artifact(settings: Settings, version: ModelVersion) -> bytes:
    artifact = run(load_registry(settings)).get(version.name, version.version).artifact
    assert artifact is not None
    return artifact
