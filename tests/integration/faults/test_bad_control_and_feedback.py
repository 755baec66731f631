"""Thousands of bad records on models.control and feedback beside good ones, through a real worker.

Issue 18's fuzz test covers every topic the workers read: docs.raw (test_bad_input.py),
inference.requests (test_bad_requests.py), and here the registry's control topic and feedback.
One worker runs the infer agent (which follows models.control) and the monitor (which reads
feedback). Every bad record must get exactly one dead letter with a reason, no good one may get
any, the registry never stalls or changes production on a bad event, and the worker lives.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from streams.ingest.publish import publish_records
from streams.kafka.admin import ensure_topics, offsets
from streams.kafka.avro import codec_from_settings
from streams.kafka.progress import wait_until_consumed
from streams.kafka.topics import Topics
from streams.models.registry import Kind, ModelVersion, Stage, files_version
from streams.models.signing import Signer, signer_from_settings
from streams.settings import Settings

from ...fuzz import feedback_target, generate, good_feedback, interleave, raw_document, volume
from ..conftest import WorkerProcess, production_classifier, run, wait_for
from ..test_model_control import classify_version
from .helpers import read_topic_messages, report

BAD_CONTROL, GOOD_CONTROL = 2500, 30
BAD_FEEDBACK, GOOD_FEEDBACK = 2500, 500
# What a worker may answer for each kind of bad control record.
CONTROL_REASONS = {
    "random_bytes": {"MALFORMED"},
    "truncated_avro": {"MALFORMED"},
    "json_object": {"MALFORMED"},
    "wrong_schema_avro": {"MALFORMED"},
    "unsigned": {"UNSIGNED"},
    "unknown_key": {"UNKNOWN_KEY"},
    "tampered": {"BAD_SIGNATURE"},
    "production_without_qa": {"RULE_VIOLATION"},
}


def registered(name: str, seed: str) -> ModelVersion:
    version, digests = files_version({"model.onnx": seed.encode()})
    return ModelVersion(name, version, Kind.CLASSIFIER, Stage.REGISTERED, 1, digests, ("x", "y"))


def control_records(settings: Settings, seed: int) -> list[tuple[str, bytes, bytes]]:
    """(kind, key, value): good signed registrations and bad records of every kind, interleaved."""
    rng = random.Random(seed)
    codec, topic = codec_from_settings(settings), Topics(settings.namespace).models_control
    trusted, attacker = signer_from_settings(settings), Signer.of(Ed25519PrivateKey.generate())
    ns = settings.namespace

    def encoded(version: ModelVersion) -> bytes:
        return codec.encode("ModelVersion", version.to_avro(), topic)

    good = [registered("fuzz-good", f"good-{i}") for i in range(GOOD_CONTROL)]
    records = [("good", v.key.encode(), encoded(trusted.sign(v, ns))) for v in good]
    kinds = sorted(CONTROL_REASONS)
    for i in range(BAD_CONTROL):
        kind = kinds[i % len(kinds)]
        version = registered("fuzz-bad", f"bad-{i}")
        key = version.key.encode()
        if kind == "random_bytes":
            value = rng.randbytes(rng.randint(1, 400))
        elif kind == "truncated_avro":
            whole = encoded(trusted.sign(version, ns))
            value = whole[: rng.randrange(1, len(whole) - 1)]
        elif kind == "json_object":
            value = b'{"name": "fuzz-bad", "stage": "production", "approved_by": "mallory"}'
        elif kind == "wrong_schema_avro":
            value = codec.encode("RawDocument", raw_document(rng, i), topic)
        elif kind == "unsigned":
            value = encoded(version)
        elif kind == "unknown_key":
            value = encoded(attacker.sign(version, ns))
        elif kind == "tampered":
            value = encoded(replace(trusted.sign(version, ns), labels=("x", "y", "z")))
        else:  # production_without_qa: the real key, but the lifecycle is skipped
            value = encoded(trusted.sign(replace(version, stage=Stage.PRODUCTION, approved_by="mallory"), ns))
        records.append((kind, key, value))
    rng.shuffle(records)
    return records


def letters_by_source(settings: Settings) -> dict[tuple[str, int, int], list[dict[str, Any]]]:
    codec = codec_from_settings(settings)
    by_source: dict[tuple[str, int, int], list[dict[str, Any]]] = defaultdict(list)
    for message in read_topic_messages(settings, Topics(settings.namespace).deadletter):
        letter = codec.decode(message.value, "DeadLetter")
        by_source[(letter["source_topic"], letter["source_partition"], letter["source_offset"])].append(letter)
    return by_source


def test_fuzzed_control_events_and_feedback_every_bad_record_dead_lettered_and_nothing_stalls(
    settings: Settings,
) -> None:
    topics = Topics(settings.namespace)
    run(ensure_topics(settings))
    production = production_classifier(settings, "fuzz-prod", classes=3)
    control = control_records(settings, seed=23)
    feedback = interleave(
        good_feedback(GOOD_FEEDBACK, seed=23), generate(feedback_target(topics.feedback), BAD_FEEDBACK, seed=23), 23
    )
    worker = WorkerProcess(settings, agents="infer,monitor").start()
    try:
        assert wait_for(lambda: classify_version(settings, "fuzz-prod") == production.version, 180), worker.log_tail()
        _, before = run(offsets(settings, [topics.models_control]))
        control_start = sum(before.values())  # models.control has one partition
        run(publish_records(settings, [(key, value) for _, key, value in control], topic=topics.models_control))
        run(publish_records(settings, [(r.key, r.value) for r in feedback], topic=topics.feedback))
        _, feedback_end = run(offsets(settings, [topics.feedback]))
        group = topics.app_id("infer", "monitor")
        assert run(wait_until_consumed(settings, group, feedback_end, 300.0, alive=worker.alive)), worker.log_tail()

        def control_letters() -> int:
            return sum(1 for source in letters_by_source(settings) if source[0] == topics.models_control)

        assert wait_for(lambda: control_letters() >= BAD_CONTROL, 300.0), (control_letters(), worker.log_tail())
        assert classify_version(settings, "fuzz-prod") == production.version, "a bad event changed production"
        assert worker.alive(), worker.log_tail()
    finally:
        code = worker.stop()
    assert code == 0, worker.log_tail()

    letters = letters_by_source(settings)
    wrong: list[Any] = []
    control_reasons: Counter[str] = Counter()
    for offset, (kind, _, _) in enumerate(control, start=control_start):
        got = [letter["reason"] for letter in letters.get((topics.models_control, 0, offset), [])]
        control_reasons.update(got)
        expected = set() if kind == "good" else CONTROL_REASONS[kind]
        if (len(got) != (0 if kind == "good" else 1)) or not set(got) <= expected:
            wrong.append(("control", offset, kind, got))
    feedback_reasons: Counter[str] = Counter()
    expect_of = {(r.key, r.value): r.expect for r in feedback}
    for message in read_topic_messages(settings, topics.feedback):
        got = [letter["reason"] for letter in letters.get((topics.feedback, message.partition, message.offset), [])]
        feedback_reasons.update(got)
        expect = expect_of[(message.key, message.value)]
        if len(got) > 1 or (expect == "dead_letter" and not got) or (expect == "output" and got):
            wrong.append(("feedback", message.offset, expect, got, (message.value or b"")[:60]))
    assert not wrong, wrong[:10]
    assert sum(control_reasons.values()) == BAD_CONTROL
    report(
        "bad input at volume on models.control and feedback",
        control_bad=BAD_CONTROL,
        control_good=GOOD_CONTROL,
        control_dead_letters=dict(control_reasons),
        feedback_bad=BAD_FEEDBACK,
        feedback_good=GOOD_FEEDBACK,
        feedback_dead_letters=dict(feedback_reasons),
        **{f"feedback_{k}": v for k, v in volume(feedback).items()},
        production_unchanged=True,
        worker_exit_code=code,
    )
