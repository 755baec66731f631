"""The generator behind ``rag`` answers: an OpenAI-compatible chat endpoint, called safely.

Why this exists:
    ``rag`` hands the screened, numbered passages to a generator when ``LLMOPS_GENERATOR_URL``
    names one (a hosted API, or the local server of ``llmops generator serve``). The client keeps
    its key out of reprs and errors and refuses to send it in clear text to another host; the
    service only sees ``generate`` / ``complete`` / ``stream`` and :class:`GeneratorError`.

Usage:
    >>> text = await client.generate(question, context)            # the answer text
    >>> result = await client.complete(question, context)          # text, token counts, timings
    >>> answer = client.stream(question, context)
    >>> async for delta in answer:                                  # text as it is generated
    ...     send(delta)
    >>> answer.result                                               # counts and timings, after the end

Notes:
    Streaming follows the OpenAI wire format: server-sent events, one ``data: {json}`` line per
    chunk, ``data: [DONE]`` last. Token counts come from the endpoint's ``usage`` when it sends
    one (the request asks for it with ``stream_options.include_usage``); otherwise the output
    count is the number of content chunks (one token each on llama.cpp servers) and the input
    count is unknown.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.trace import SpanKind

from streams.settings import bearer_transport_problem, mask_url_credentials
from streams.telemetry import genai
from streams.telemetry.tracing import model_call, record_usage

TEMPERATURE = 0

SYSTEM_PROMPT = (
    "Answer only from the numbered context. Cite passages as [n]. If the context does not answer the question, say so."
)


class GeneratorError(RuntimeError):
    """The generator endpoint failed; the message never holds the key or URL credentials."""


@dataclass(frozen=True)
class GenerationResult:
    """One answer with what the GenAI span attributes need.

    Attributes:
        text: The answer.
        input_tokens: Prompt tokens as the endpoint counted them; None when it did not say.
        output_tokens: Completion tokens: the endpoint's count, else (streamed) the number of content
            chunks; None when not streamed and the endpoint did not say.
        usage_reported: Whether the counts came from the endpoint's ``usage``.
        duration_ms: From sending the request to the end of the answer.
        time_to_first_token_ms: From sending the request to the first text (streamed only).
        tokens_per_s: Output rate: streamed, the tokens after the first over the time after the
            first; not streamed, all output tokens over ``duration_ms``. None when it cannot be told.
        finish_reason: ``stop``, ``length``, ... as the endpoint said.
    """

    text: str
    input_tokens: int | None
    output_tokens: int | None
    usage_reported: bool
    duration_ms: float
    time_to_first_token_ms: float | None
    tokens_per_s: float | None
    finish_reason: str | None


@dataclass
class StreamAccumulator:
    """Folds decoded stream chunks into deltas and, at the end, a :class:`GenerationResult`.

    Pure (times are passed in), so tests feed it lists of chunks.
    """

    started: float
    parts: list[str] = field(default_factory=list)
    first_at: float | None = None
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None

    def add(self, chunk: dict[str, Any], now: float) -> str:
        """The text delta in ``chunk`` ('' if none); records usage and the finish reason."""
        if chunk.get("error"):
            raise GeneratorError(f"the generator endpoint reported an error: {describe_error(chunk['error'])}")
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        delta = ""
        for choice in chunk.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                delta += content
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        if delta:
            self.parts.append(delta)
            if self.first_at is None:
                self.first_at = now
        return delta

    def result(self, now: float) -> GenerationResult:
        """The answer so far as a result, ``now`` being the end of the stream."""
        input_tokens, output_tokens = usage_counts(self.usage)
        chunks = len(self.parts)
        output = output_tokens if output_tokens is not None else chunks
        rate = None
        if self.first_at is not None and output > 1 and now > self.first_at:
            rate = (output - 1) / (now - self.first_at)
        return GenerationResult(
            text="".join(self.parts),
            input_tokens=input_tokens,
            output_tokens=output,
            usage_reported=output_tokens is not None,
            duration_ms=(now - self.started) * 1000,
            time_to_first_token_ms=None if self.first_at is None else (self.first_at - self.started) * 1000,
            tokens_per_s=rate,
            finish_reason=self.finish_reason,
        )


DONE = object()


def parse_sse_line(line: str) -> dict[str, Any] | object | None:
    """One line of an OpenAI event stream: a chunk, :data:`DONE`, or None (blank, comment, other field)."""
    if not line.startswith("data:"):
        return None  # blank separators, ": ping" comments, event:/id:/retry: fields
    payload = line[len("data:") :].strip()
    if payload == "[DONE]":
        return DONE
    if not payload:
        return None
    try:
        chunk = json.loads(payload)
    except json.JSONDecodeError:
        raise GeneratorError("the generator endpoint sent an event that is not JSON") from None
    if not isinstance(chunk, dict):
        raise GeneratorError("the generator endpoint sent an event that is not a JSON object")
    return chunk


def usage_counts(usage: dict[str, Any] | None) -> tuple[int | None, int | None]:
    """(prompt_tokens, completion_tokens) from an OpenAI ``usage`` object, None where absent."""
    if not usage:
        return None, None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (prompt if isinstance(prompt, int) else None, completion if isinstance(completion, int) else None)


def describe_error(error: Any) -> str:
    """An endpoint's error object as one short line, credentials masked."""
    message = error.get("message", error) if isinstance(error, dict) else error
    return mask_url_credentials(str(message))[:300]


class GenerationStream:
    """The answer as an async iterator of text deltas; ``result`` once the stream has ended.

    Iterate it once. Errors (HTTP, malformed events, an error event, a stream that ends without
    ``data: [DONE]``) raise GeneratorError.
    """

    def __init__(self, client: GeneratorClient, question: str, context: str) -> None:
        self._client = client
        self._question = question
        self._context = context
        self.result: GenerationResult | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._deltas()

    async def _deltas(self) -> AsyncIterator[str]:
        import httpx

        client = self._client
        body = {**client.request_body(self._question, self._context), "stream": True}
        body["stream_options"] = {"include_usage": True}
        accumulator = StreamAccumulator(started=client.clock())
        with client.chat_span():  # one span for the whole stream, like complete()'s
            try:
                async with (
                    httpx.AsyncClient(timeout=client.timeout_s) as http,
                    http.stream("POST", client.endpoint, json=body, headers=client.headers()) as response,
                ):
                    response.raise_for_status()
                    done = False
                    async for line in response.aiter_lines():
                        event = parse_sse_line(line)
                        if event is DONE:
                            done = True
                            break
                        if isinstance(event, dict):
                            delta = accumulator.add(event, client.clock())
                            if delta:
                                yield delta
            except httpx.HTTPError as error:
                raise client.failure(error) from None
            if not done:
                # A server that fails after its 200 (llama.cpp: a prompt beyond the context window)
                # just closes the stream: without [DONE] the answer may be cut anywhere.
                raise GeneratorError("the generator endpoint's stream ended before [DONE]: the answer is incomplete")
            self.result = accumulator.result(client.clock())
            reasons = [self.result.finish_reason] if self.result.finish_reason else None
            record_usage(
                genai.CHAT,
                input_tokens=self.result.input_tokens,
                output_tokens=self.result.output_tokens,
                finish_reasons=reasons,
            )


@dataclass(frozen=True)
class GeneratorClient:
    """An OpenAI-compatible ``/chat/completions`` endpoint (``LLMOPS_GENERATOR_URL``).

    The API key goes as a Bearer header, so only over https (or plain http to a loopback host,
    such as a local llama.cpp server); it never shows in a repr, and errors mask URL credentials.
    ``max_tokens`` caps an answer (a small model may otherwise ramble to the end of its context
    window); ``clock`` (seconds) times the answers, and tests may pass their own.
    """

    url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    max_tokens: int | None = 512
    clock: Callable[[], float] = field(default=time.perf_counter, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.api_key:
            problem = bearer_transport_problem(self.url)
            if problem:
                raise ValueError(problem)

    def __repr__(self) -> str:
        return f"GeneratorClient(url={mask_url_credentials(self.url)!r}, model={self.model!r})"

    @property
    def endpoint(self) -> str:
        """The ``/chat/completions`` URL (``url`` may be the base ``.../v1`` or the endpoint itself)."""
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def request_body(self, question: str, context: str) -> dict[str, Any]:
        """The chat request: the grounding instruction, then the numbered context and the question."""
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": TEMPERATURE,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"},
            ],
        }
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body

    def failure(self, error: Exception) -> GeneratorError:
        """A GeneratorError for an HTTP failure, with URL credentials masked (the key is never in it)."""
        detail = mask_url_credentials(str(error)) or type(error).__name__  # a timeout's message is empty
        return GeneratorError(f"the generator endpoint failed: {detail}")

    async def generate(self, question: str, context: str) -> str:
        """The generator's answer to ``question`` from ``context``; GeneratorError if it fails."""
        return (await self.complete(question, context)).text

    async def complete(self, question: str, context: str) -> GenerationResult:
        """The whole answer in one response, with the endpoint's token counts; GeneratorError if it fails."""
        import httpx

        started = self.clock()
        with self.chat_span():
            try:
                async with httpx.AsyncClient(timeout=self.timeout_s) as http:
                    response = await http.post(
                        self.endpoint, json=self.request_body(question, context), headers=self.headers()
                    )
                    response.raise_for_status()
                    reply = response.json()
            except httpx.HTTPError as error:
                raise self.failure(error) from None
            except ValueError:
                raise GeneratorError("the generator endpoint answered with something that is not JSON") from None
            if isinstance(reply, dict):
                record_usage(genai.CHAT, **usage_of(reply))
        return completion_result(reply, started, self.clock())

    def chat_span(self) -> Any:
        """The GenAI ``chat`` CLIENT span of one call (host and port only, never the URL's userinfo)."""
        endpoint = urlsplit(self.url)
        where: dict[str, Any] = {genai.SERVER_ADDRESS: endpoint.hostname, genai.SERVER_PORT: endpoint.port}
        return model_call(
            genai.CHAT,
            self.model,
            provider=genai.OPENAI_PROVIDER,
            kind=SpanKind.CLIENT,
            **{genai.REQUEST_TEMPERATURE: TEMPERATURE, **where},
        )

    def stream(self, question: str, context: str) -> GenerationStream:
        """The answer as it is generated: ``async for delta in client.stream(q, c)``, then ``.result``."""
        return GenerationStream(self, question, context)


def usage_of(answer: dict[str, Any]) -> dict[str, Any]:
    """Token counts, answering model and finish reasons of an OpenAI chat completion (what it reports)."""
    usage = answer.get("usage") or {}
    reasons = [str(c["finish_reason"]) for c in answer.get("choices", []) if c.get("finish_reason")]
    return {
        "input_tokens": usage.get("prompt_tokens"),
        "output_tokens": usage.get("completion_tokens"),
        "response_model": answer.get("model"),
        "finish_reasons": reasons or None,
    }


def completion_result(reply: Any, started: float, now: float) -> GenerationResult:
    """A non-streamed ``chat.completion`` reply as a result; GeneratorError if it has no answer."""
    try:
        choice = reply["choices"][0]
        text = str(choice["message"]["content"] or "")
    except (KeyError, IndexError, TypeError):
        error = reply.get("error") if isinstance(reply, dict) else None
        detail = f": {describe_error(error)}" if error else ""
        raise GeneratorError(f"the generator endpoint's reply holds no answer{detail}") from None
    input_tokens, output_tokens = usage_counts(reply.get("usage"))
    duration = now - started
    rate = output_tokens / duration if output_tokens and duration > 0 else None
    return GenerationResult(
        text=text,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        usage_reported=output_tokens is not None,
        duration_ms=duration * 1000,
        time_to_first_token_ms=None,
        tokens_per_s=rate,
        finish_reason=choice.get("finish_reason"),
    )
