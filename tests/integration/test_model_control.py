"""models.control on the real broker: refused control events never change what answers (issue 18).

The follower each infer worker runs reads the compacted control topic; a record it refuses
(malformed, or whose models fail to load) is reported once, and the next good record applies.
"""

from __future__ import annotations

import asyncio
from typing import Any

from streams.kafka.admin import ensure_topics, producer
from streams.kafka.avro import codec_from_settings
from streams.kafka.topics import Topics
from streams.models.lifecycle import control_check
from streams.models.registry import Kind, ModelVersion, RegistryFollower, Stage, files_version
from streams.models.rejections import ControlRejected, Reason
from streams.settings import Settings

from .conftest import run


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

    def value(v: ModelVersion) -> bytes:
        return codec.encode("ModelVersion", v.to_avro(), Topics(settings.namespace).models_control)

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

    follower = RegistryFollower(settings, control_check(codec), on_change, on_reject)
    run(follow_until(follower, lambda: last.key in changes))
    assert changes == [first.key, last.key]
    assert rejections == [(1, Reason.MALFORMED), (2, Reason.LOAD_FAILED)], "each bad record is reported once"
    assert {v.key for v in follower.registry.all()} == {first.key, last.key}
