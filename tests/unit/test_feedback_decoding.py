"""Feedback decoding against generated bad input: every bad record is refused with a reason code."""

from __future__ import annotations

from collections import Counter

from streams.inference.feedback import BadFeedback, decode_feedback
from streams.kafka.avro import AvroCodec, CodecError, EmbeddedRegistry

from ..fuzz import feedback_target, generate, good_feedback

CODEC = AvroCodec(EmbeddedRegistry.from_directory())


def outcome(value: bytes | None) -> tuple[str, str | None]:
    try:
        decode_feedback(value, CODEC)
    except (BadFeedback, CodecError) as error:
        return "dead_letter", error.reason
    return "output", None


def test_generated_bad_feedback_is_refused_with_a_reason_and_good_feedback_is_taken() -> None:
    wrong: Counter[tuple[str, str, str]] = Counter()
    reasons: Counter[str | None] = Counter()
    for record in generate(feedback_target(), 1500, seed=5) + good_feedback(300, seed=5):
        got, reason = outcome(record.value)
        reasons[reason] += 1
        if record.expect != "either" and record.expect != got:
            wrong[(record.kind, record.expect, got)] += 1
    assert not wrong, wrong
    # Wrong types, broken encodings and invalid tenants each have their own code.
    assert {"WRONG_TYPE", "BAD_ENCODING", "BAD_JSON", "INVALID_TENANT", "MISSING_FIELD"} <= set(reasons)
