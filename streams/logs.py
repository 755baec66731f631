"""Logging setup: structlog, JSON lines in production, readable in a terminal.

Why this exists:
    SREs grep and ship logs as JSON lines; people at a terminal want colours and aligned keys.
    Every line carries the event's context (topic, partition, offset, doc id) when the caller
    binds it, and standard-library loggers (Faust, aiokafka) go through the same renderer.

Usage:
    >>> from streams.logs import configure_logging, get_logger
    >>> configure_logging(settings)
    >>> get_logger(__name__).info("ingested", topic="docs.raw", partition=0, offset=42, doc_id="d1")

Notes:
    A line written inside an OpenTelemetry span carries its ``trace_id`` and ``span_id`` (hex, as
    trace tools show them), so logs and traces join on those ids.
    ``log_format="auto"`` picks the console renderer when stderr is a terminal, JSON otherwise.
    Values that are ``SecretStr`` render as ``**********``; the redaction processor also masks
    keys that look like secrets (password, token, secret, sasl_plain_password).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

from streams.settings import Settings

_SECRET_KEY = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|credential)")
MASK = "**********"


def mask_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: never print a value whose key names a secret."""
    for key in list(event_dict):
        if _SECRET_KEY.search(key) and event_dict[key] is not None:
            event_dict[key] = MASK
    return event_dict


def add_trace_ids(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: ``trace_id`` and ``span_id`` of the current span, if there is one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", trace.format_trace_id(context.trace_id))
        event_dict.setdefault("span_id", trace.format_span_id(context.span_id))
    return event_dict


def configure_logging(settings: Settings | None = None, *, json_lines: bool | None = None) -> None:
    """Configure structlog and route the standard ``logging`` module through it."""
    settings = settings or Settings()
    if json_lines is None:
        json_lines = settings.log_format == "json" or (settings.log_format == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
        mask_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if json_lines else _identity,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # Kafka client chatter at INFO drowns our own events; keep their warnings.
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))
    grpc_server = logging.getLogger("grpc._server")
    if not any(isinstance(f, UnimplementedRpcFilter) for f in grpc_server.filters):
        grpc_server.addFilter(UnimplementedRpcFilter())


class UnimplementedRpcFilter(logging.Filter):
    """Drops the ERROR (with traceback) that gRPC logs when a client calls an RPC the server lacks.

    pymilvus calls optional RPCs (``AllocTimestamp``) that the Milvus Lite server in the worker
    does not implement; the client handles the UNIMPLEMENTED status, but gRPC's server also logs
    each call as an application error, which reads as a fault to anyone watching the logs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, NotImplementedError)


def _identity(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return event_dict


def get_logger(name: str) -> Any:
    """A structlog logger bound to ``name``."""
    return structlog.get_logger(name)
