"""OpenTelemetry GenAI semantic-convention names for spans of model calls.

Why this exists:
    Langfuse, Phoenix and Jaeger show a span as an LLM call when it carries the GenAI attributes
    (``gen_ai.operation.name``, ``gen_ai.request.model``, token usage...). These names moved out
    of ``opentelemetry-semantic-conventions`` into the GenAI conventions' own repository, so
    they are spelled once here and every model call (embedder, classifier heads, injection
    screen, generator) takes them from this module, beside our own ``llmops.*`` attributes.

Usage:
    >>> attributes = model_attributes(EMBEDDINGS, "all-MiniLM-L6-v2")
    >>> attributes[OPERATION_NAME], attributes[PROVIDER_NAME]
    ('embeddings', 'onnxruntime')

Notes:
    ``gen_ai.provider.name`` replaced ``gen_ai.system``; both are set, because tools in use
    today still read the older one. ``classify`` is not one of the conventions' well-known
    operation names (they allow others); local ONNX models name ``onnxruntime`` as provider.
"""

from __future__ import annotations

from typing import Any

OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
SYSTEM = "gen_ai.system"  # deprecated by gen_ai.provider.name, still read by several backends
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"

# gen_ai.operation.name values
EMBEDDINGS = "embeddings"
CHAT = "chat"
TEXT_COMPLETION = "text_completion"
CLASSIFY = "classify"
RERANK = "rerank"  # the retrieval ranker ordering candidate documents (not a well-known name)
EXTRACT = "extract"  # the extractive answerer quoting passages (not a well-known name)

# gen_ai.provider.name values
LOCAL_PROVIDER = "onnxruntime"
OPENAI_PROVIDER = "openai"


def model_attributes(
    operation: str, model: str, *, provider: str = LOCAL_PROVIDER, response_model: str | None = None
) -> dict[str, Any]:
    """The GenAI attributes that every model-call span carries (response model when known)."""
    attributes: dict[str, Any] = {
        OPERATION_NAME: operation,
        PROVIDER_NAME: provider,
        SYSTEM: provider,
        REQUEST_MODEL: model,
    }
    if response_model:
        attributes[RESPONSE_MODEL] = response_model
    return attributes


def usage_attributes(
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    response_model: str | None = None,
    finish_reasons: list[str] | None = None,
) -> dict[str, Any]:
    """Attributes known once a model answered: token counts, the model that answered, why it stopped."""
    values: dict[str, Any] = {
        USAGE_INPUT_TOKENS: input_tokens,
        USAGE_OUTPUT_TOKENS: output_tokens,
        RESPONSE_MODEL: response_model,
        RESPONSE_FINISH_REASONS: finish_reasons,
    }
    return {key: value for key, value in values.items() if value is not None}
