"""Feedback events: what people (or labelling jobs) say about answers, on the ``feedback`` topic.

Why this exists:
    Quality cannot be measured without someone saying which answers were right. Applications
    send a :func:`feedback_record` per judged answer (key = request id), as Avro ``Feedback`` or
    the same fields as a JSON object; the monitor joins it with the response.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from streams.kafka.admin import producer
from streams.kafka.avro import MAGIC_BYTE, AvroCodec, codec_from_settings
from streams.kafka.topics import Topics
from streams.records import now_ms, tenant_problem
from streams.settings import Settings


class BadFeedback(ValueError):
    """A feedback value that cannot be read; ``reason`` is a dead-letter reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def feedback_record(
    request_id: str,
    *,
    label: str | None = None,
    rating: float | None = None,
    tenant: str | None = None,
    source: str | None = None,
    language: str | None = None,
) -> dict[str, Any]:
    """A ``Feedback`` record; give the true ``label`` (classify) or a ``rating`` in [0, 1]."""
    if label is None and rating is None:
        raise ValueError("feedback needs a label or a rating")
    if rating is not None and not 0.0 <= rating <= 1.0:
        raise ValueError(f"rating must be in [0, 1], got {rating}")
    return {
        "request_id": request_id,
        "label": label,
        "rating": rating,
        "tenant": tenant,
        "source": source,
        "language": language,
        "created_at_ms": now_ms(),
    }


def decode_feedback(value: bytes | None, codec: AvroCodec) -> dict[str, Any]:
    """A feedback value (framed Avro or a JSON object) as a ``Feedback`` record.

    Raises:
        BadFeedback: with a reason code when the value is not feedback.
    """
    if not value:
        raise BadFeedback("NULL_VALUE", "feedback needs a value")
    if value[:1] == bytes([MAGIC_BYTE]):
        return _tenant_checked(codec.decode(value, "Feedback"))
    try:
        text = value.decode("utf-8")  # strict: json.loads(bytes) would let encoded surrogates through
    except UnicodeDecodeError as error:
        raise BadFeedback("BAD_ENCODING", f"feedback is neither Avro nor UTF-8 JSON: {error}") from None
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise BadFeedback("BAD_JSON", f"feedback is neither Avro nor a JSON object: {error}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("request_id"), str):
        raise BadFeedback("MISSING_FIELD", "feedback must be an object with a string 'request_id'")
    for name, types in _JSON_TYPES.items():
        field = obj.get(name)
        if field is not None and (not isinstance(field, types) or isinstance(field, bool)):
            expected = " or ".join(t.__name__ for t in types)
            raise BadFeedback("WRONG_TYPE", f"'{name}' must be {expected} or null, got {type(field).__name__}")
    try:
        record = feedback_record(
            obj["request_id"],
            label=obj.get("label"),
            rating=obj.get("rating"),
            tenant=obj.get("tenant"),
            source=obj.get("source"),
            language=obj.get("language"),
        )
    except (ValueError, TypeError) as error:
        raise BadFeedback("WRONG_TYPE", str(error)) from None
    return _tenant_checked(record)


# The Feedback schema's optional fields, as JSON must spell them (unknown fields are ignored).
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "label": (str,),
    "rating": (int, float),
    "tenant": (str,),
    "source": (str,),
    "language": (str,),
    "created_at_ms": (int,),
}


def _tenant_checked(record: dict[str, Any]) -> dict[str, Any]:
    """``record``, unless its tenant is no identifier (slices per tenant must stay a bounded set)."""
    tenant = record.get("tenant")
    if not isinstance(tenant, str) or not tenant:
        return record
    why = tenant_problem(tenant)
    if why:
        raise BadFeedback("INVALID_TENANT", why)
    return record


async def send_feedback(settings: Settings, records: Iterable[dict[str, Any]]) -> int:
    """Publish feedback records (Avro, key = request id); how many were sent."""
    codec = codec_from_settings(settings)
    topic = Topics(settings.namespace).feedback
    kafka = producer(settings)
    await kafka.start()
    sent = 0
    try:
        for record in records:
            await kafka.send(topic, codec.encode("Feedback", record, topic), key=record["request_id"].encode())
            sent += 1
        await kafka.flush()
    finally:
        await kafka.stop()
    return sent
