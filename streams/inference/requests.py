"""The inference request contract: what a request may hold, and parsing it from JSON or Avro bytes.

Why this exists:
    The infer agent answers requests, the monitor observes them and replay re-sends them; all
    three parse the same bytes the same way, so the contract lives apart from the answering.
    A request that breaks it raises :class:`RequestRejected` with a reason code for the
    dead-letter topic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streams.kafka.avro import MAGIC_BYTE, AvroCodec, CodecError
from streams.records import tenant_problem

TASKS = ("search", "classify", "rag")
RETRIEVAL_MODES = ("ranked", "hybrid", "dense", "bm25")  # streams.index.retrieval.MODES
MAX_TOP_K = 50
MAX_REQUEST_TEXT = 20_000
MAX_ID = 256


class RequestRejected(ValueError):
    """A request that cannot be answered as asked; ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str, request_id: str | None = None, client_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail
        self.request_id, self.client_id = request_id, client_id
        self.tenant: str | None = None  # set when the request named a valid tenant: answer it there


@dataclass(frozen=True)
class InferenceRequest:
    """A checked request (see schemas/InferenceRequest.avsc for each field)."""

    request_id: str
    task: str
    text: str
    client_id: str | None = None
    tenant: str | None = None
    top_k: int = 5
    model: str | None = None
    deadline_ms: int | None = None
    explain: bool = False
    sent_at_ms: int | None = None
    retrieval: str = "ranked"
    chunks: bool = False
    stream: bool = False

    @property
    def reply_key(self) -> str:
        return self.client_id or self.request_id

    def to_avro(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "client_id": self.client_id,
            "task": self.task,
            "text": self.text,
            "tenant": self.tenant,
            "top_k": self.top_k,
            "model": self.model,
            "deadline_ms": self.deadline_ms,
            "explain": self.explain,
            "sent_at_ms": self.sent_at_ms,
            "retrieval": self.retrieval,
            "chunks": self.chunks,
            "stream": self.stream,
        }


_TYPES: dict[str, tuple[type, ...]] = {
    "request_id": (str,),
    "client_id": (str, type(None)),
    "task": (str,),
    "text": (str,),
    "tenant": (str, type(None)),
    "top_k": (int,),
    "model": (str, type(None)),
    "deadline_ms": (int, type(None)),
    "explain": (bool,),
    "sent_at_ms": (int, type(None)),
    "retrieval": (str,),
    "chunks": (bool,),
    "stream": (bool,),
}


def _check(obj: Mapping[str, Any]) -> InferenceRequest:
    try:
        return _check_fields(obj)
    except RequestRejected as error:
        tenant = obj.get("tenant")
        if isinstance(tenant, str) and tenant and tenant_problem(tenant) is None:
            error.tenant = tenant  # its client reads its tenant's reply topic, not the shared one
        raise


def _check_fields(obj: Mapping[str, Any]) -> InferenceRequest:
    request_id = obj.get("request_id")
    client_id = obj.get("client_id") if isinstance(obj.get("client_id"), str) else None
    rid = request_id if isinstance(request_id, str) and request_id.strip() and len(request_id) <= MAX_ID else None
    for name in ("request_id", "task", "text"):
        if name not in obj:
            raise RequestRejected("MISSING_FIELD", f"required field {name!r} is missing", rid, client_id)
    for name, types in _TYPES.items():
        value = obj.get(name)
        if (name in obj and not isinstance(value, types)) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise RequestRejected(
                "WRONG_TYPE", f"{name!r} must be {expected}, got {type(value).__name__}", rid, client_id
            )
    if rid is None:
        raise RequestRejected("INVALID_ID", f"'request_id' must be 1..{MAX_ID} characters", None, client_id)
    if client_id is not None and not 0 < len(client_id) <= MAX_ID:
        raise RequestRejected("INVALID_ID", f"'client_id' must be 1..{MAX_ID} characters", rid, None)
    task = obj["task"]
    if task not in TASKS:
        raise RequestRejected("UNKNOWN_TASK", f"task {task!r:.40} is not one of {list(TASKS)}", rid, client_id)
    text = obj["text"]
    if not text.strip():
        raise RequestRejected("EMPTY_TEXT", "'text' is empty", rid, client_id)
    if len(text) > MAX_REQUEST_TEXT:
        raise RequestRejected("TEXT_TOO_LARGE", f"'text' has {len(text)} characters; at most {MAX_REQUEST_TEXT}", rid)
    tenant = obj.get("tenant") or None
    why = tenant_problem(tenant) if tenant else None
    if why:
        raise RequestRejected("INVALID_TENANT", why, rid, client_id)
    top_k = obj.get("top_k", 5)
    if not 1 <= top_k <= MAX_TOP_K:
        raise RequestRejected("BAD_TOP_K", f"'top_k' must be 1..{MAX_TOP_K}, got {top_k}", rid, client_id)
    retrieval = obj.get("retrieval", "ranked")
    if retrieval not in RETRIEVAL_MODES:
        raise RequestRejected(
            "BAD_RETRIEVAL",
            f"'retrieval' must be one of {list(RETRIEVAL_MODES)}, got {retrieval!r:.40}",
            rid,
            client_id,
        )
    return InferenceRequest(
        request_id=rid,
        task=task,
        text=text,
        client_id=client_id,
        tenant=tenant,
        top_k=top_k,
        model=obj.get("model") or None,
        deadline_ms=obj.get("deadline_ms"),
        explain=bool(obj.get("explain", False)),
        sent_at_ms=obj.get("sent_at_ms"),
        retrieval=retrieval,
        chunks=bool(obj.get("chunks", False)),
        stream=bool(obj.get("stream", False)),
    )


def parse_request(value: bytes | None, codec: AvroCodec) -> InferenceRequest:
    """Decode and check one ``inference.requests`` value (framed Avro, or a UTF-8 JSON object).

    Raises:
        RequestRejected: with the request id and client id when they could be read, so the
            caller can still answer INVALID.
    """
    if value is None:
        raise RequestRejected("NULL_VALUE", "a request needs a value (JSON object or Avro InferenceRequest)")
    if len(value) > MAX_REQUEST_TEXT * 4 + 65_536:
        raise RequestRejected("VALUE_TOO_LARGE", f"value is {len(value)} bytes; text is limited to {MAX_REQUEST_TEXT}")
    if value[:1] == bytes([MAGIC_BYTE]):
        try:
            return _check(codec.decode(value, "InferenceRequest"))
        except CodecError as error:
            raise RequestRejected(error.reason, error.detail) from None
    try:
        obj = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise RequestRejected("BAD_ENCODING", f"value is neither Avro (magic byte 0) nor UTF-8 JSON: {error}") from None
    except json.JSONDecodeError as error:
        raise RequestRejected("BAD_JSON", f"value is not valid JSON: {error}") from None
    except RecursionError:
        raise RequestRejected("BAD_JSON", "value is nested too deeply to be a request") from None
    if not isinstance(obj, dict):
        raise RequestRejected("NOT_AN_OBJECT", f"JSON value must be an object, got {type(obj).__name__}")
    return _check(obj)
