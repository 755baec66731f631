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
    keys that look like secrets (password, token, secret, sasl_plain_password), the userinfo of
    any URL in any logged string (``http://**********@host``), and the secret values of the
    settings passed to :func:`configure_logging` wherever they appear, also inside messages of
    standard-library loggers and formatted exceptions.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

from streams.settings import MASK, Settings, mask_url_credentials

_SECRET_KEY = re.compile(r"(?i)(password|passwd|secret|token|api[_-]?key|credential)")
# Secret values of the configured settings, longest first (set by configure_logging).
_known_secrets: tuple[str, ...] = ()


def register_secrets(values: list[str]) -> None:
    """Mask these values wherever they appear in a log line from now on."""
    global _known_secrets
    _known_secrets = tuple(sorted({*_known_secrets, *(v for v in values if v)}, key=len, reverse=True))


def mask_text(text: str) -> str:
    """``text`` with URL userinfo and every registered secret value masked."""
    text = mask_url_credentials(text)
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _mask_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if depth < 3 and isinstance(value, dict):
        return {key: _mask_value(item, depth + 1) for key, item in value.items()}
    if depth < 3 and isinstance(value, list | tuple):
        return type(value)(_mask_value(item, depth + 1) for item in value)
    return value


def mask_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: never print a secret.

    A value whose key names a secret is masked whole; in every other string value (the event,
    a formatted exception, nested dicts and lists), URL userinfo and known secret values are.
    """
    for key in list(event_dict):
        if _SECRET_KEY.search(key) and event_dict[key] is not None:
            event_dict[key] = MASK
        else:
            event_dict[key] = _mask_value(event_dict[key])
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
    register_secrets(settings.secret_values())
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
            # Exceptions become text here, so that the masking after it sees their messages.
            structlog.processors.format_exc_info,
            mask_secrets,
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


def get_logger(name: str) -> Any:
    """A structlog logger bound to ``name``."""
    return structlog.get_logger(name)
