"""Thousands of generated bad requests interleaved with good ones on inference.requests, through a real
worker running the infer agent: every record is accounted for (a response, a dead letter, or both, as
the request's parse decides), each good request gets exactly one answer, instruction-style prompt
injections are BLOCKED, and the worker never dies."""

from __future__ import annotations

from collections import Counter, defaultdict
from functools import cache
from typing import Any

from streams.index.embed import OnnxEmbedder
from streams.inference.injection import InjectionClassifier
from streams.inference.requests import RequestRejected, parse_request
from streams.ingest.publish import publish_records
from streams.kafka.admin import ensure_topics, offsets, response_topics
from streams.kafka.avro import codec_from_settings
from streams.kafka.progress import wait_until_consumed
from streams.kafka.topics import Topics
from streams.settings import Settings

from ...fuzz import generate, good_inference_requests, inference_target, interleave, volume
from ..conftest import WorkerProcess, production_classifier, run
from .helpers import read_topic_messages, report

BAD, GOOD = 2000, 400


@cache
def injection_screen(settings: Settings) -> InjectionClassifier:
    """The screen the worker runs (same embedder graph, same models folder, same thresholds)."""
    return InjectionClassifier.load(
        settings.models_dir or settings.data_dir / "models",
        OnnxEmbedder.from_settings(settings),
        block_at=settings.injection_block_score,
        flag_at=settings.injection_flag_score,
    )


def expected_outcome(value: bytes | None, settings: Settings) -> tuple[str | None, str | None, list[str]]:
    """What the pure core decides for one request: (request id to answer, status, dead-letter reasons)."""
    try:
        request = parse_request(value, codec_from_settings(settings))
    except RequestRejected as error:
        return error.request_id, "INVALID" if error.request_id else None, [error.reason]
    blocked = injection_screen(settings).screen(request.text).blocked
    return request.request_id, "BLOCKED" if blocked else "OK", ["PROMPT_INJECTION"] if blocked else []


def test_fuzzed_inference_requests_every_record_answered_or_dead_lettered_and_the_worker_lives(
    settings: Settings,
) -> None:
    topics = Topics(settings.namespace)
    codec = codec_from_settings(settings)
    good = good_inference_requests(GOOD, seed=11, codec=codec)
    records = interleave(good, generate(inference_target(topics.inference_requests), BAD, seed=11), seed=11)
    kind_of: dict[tuple[bytes | None, bytes | None], tuple[str, str]] = {
        (r.key, r.value): (r.kind, r.expect) for r in records
    }
    run(ensure_topics(settings))
    # An operator provisions the reply topic of each tenant the good requests name.
    tenants = {parse_request(r.value, codec).tenant for r in good} - {None}
    run(ensure_topics(settings, [topics.tenant_responses_spec(t, 1, 1) for t in sorted(tenants)]))
    production_classifier(settings, settings.default_classifier, classes=3)  # what `classify` answers with

    worker = WorkerProcess(settings, agents="infer").start()
    try:
        run(publish_records(settings, [(r.key, r.value) for r in records], topic=topics.inference_requests))
        _, end = run(offsets(settings, [topics.inference_requests]))
        consumed = run(wait_until_consumed(settings, topics.requests_group("infer"), end, 240.0, alive=worker.alive))
        assert consumed, f"the infer agent did not catch up (alive={worker.alive()}); log:\n{worker.log_tail()}"
        assert worker.alive(), worker.log_tail()
    finally:
        code = worker.stop()
    assert code == 0, worker.log_tail()

    responses: dict[str, list[dict[str, Any]]] = defaultdict(list)
    reply_topics = run(response_topics(settings))  # the shared one and each tenant's own
    assert len(reply_topics) > 1, reply_topics  # some good requests name a tenant
    for topic in reply_topics:
        for message in read_topic_messages(settings, topic):
            response = codec.decode(message.value, "InferenceResponse")
            assert topic == topics.responses_for(response["tenant"]), (topic, response["tenant"])
            responses[response["request_id"]].append(response)
    letters: dict[str, list[str]] = defaultdict(list)
    for message in read_topic_messages(settings, topics.deadletter):
        letter = codec.decode(message.value, "DeadLetter")
        assert letter["stage"] == "infer" and letter["reason"] and letter["detail"], letter
        letters[f"{letter['source_topic']}:{letter['source_partition']}:{letter['source_offset']}"].append(
            letter["reason"]
        )

    requests = read_topic_messages(settings, topics.inference_requests)
    assert len(requests) == len(records)
    wrong: list[tuple[Any, ...]] = []
    statuses: Counter[str] = Counter()
    answered, neither = 0, 0
    for message in requests:
        source = f"{message.topic}:{message.partition}:{message.offset}"
        kind, expect = kind_of[(message.key, message.value)]
        request_id, status, reasons = expected_outcome(message.value, settings)
        got = [r["status"] for r in responses.get(request_id or "", [])] if status else []
        answered += len(got)
        neither += not got and not letters.get(source)
        statuses.update(got)
        if sorted(letters.get(source, [])) != reasons or got != ([status] if status else []):
            wrong.append((source, kind, status, reasons, got, letters.get(source), (message.value or b"")[:60]))
        # Independent of the core's decision: what the generator says each kind must come to.
        if expect == "dead_letter" and not letters.get(source):
            wrong.append((source, kind, "expected a dead letter"))
        if expect == "output" and len(got) != 1:
            wrong.append((source, kind, "expected exactly one response", got))
        if kind == "injection" and got != ["BLOCKED"]:
            wrong.append((source, kind, "an instruction-style injection was not blocked", got))
        if kind == "good" and got != ["OK"]:
            wrong.append((source, kind, "a good request was not answered OK", got))
    assert not wrong, wrong[:10]
    assert neither == 0
    assert answered == sum(len(group) for group in responses.values()), "responses nobody asked for"
    assert not any("INTERNAL_ERROR" in reasons for reasons in letters.values())

    reasons = Counter(reason for group in letters.values() for reason in group)
    report(
        "bad input at volume on inference.requests",
        bad=BAD,
        good=GOOD,
        **volume(records),
        responses=dict(statuses),
        dead_letters=dict(reasons),
        records_with_neither=neither,
        worker_exit_code=code,
    )
