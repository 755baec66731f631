"""The generator behind ``rag`` answers: an OpenAI-compatible chat endpoint, called safely.

Why this exists:
    ``rag`` hands the screened, numbered passages to a generator when ``LLMOPS_GENERATOR_URL``
    names one. The client keeps its key out of reprs and errors and refuses to send it in clear
    text to another host; the service only sees ``generate`` and :class:`GeneratorError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.trace import SpanKind

from streams.settings import bearer_transport_problem, mask_url_credentials
from streams.telemetry import genai
from streams.telemetry.tracing import model_call, record_usage

TEMPERATURE = 0


class GeneratorError(RuntimeError):
    """The generator endpoint failed; the message never holds the key or URL credentials."""


@dataclass(frozen=True)
class GeneratorClient:
    """An OpenAI-compatible ``/chat/completions`` endpoint (``LLMOPS_GENERATOR_URL``).

    The API key goes as a Bearer header, so only over https (or plain http to a loopback host,
    such as a local llama.cpp server); it never shows in a repr, and errors mask URL credentials.
    """

    url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.api_key:
            problem = bearer_transport_problem(self.url)
            if problem:
                raise ValueError(problem)

    def __repr__(self) -> str:
        return f"GeneratorClient(url={mask_url_credentials(self.url)!r}, model={self.model!r})"

    async def generate(self, question: str, context: str) -> str:
        """The generator's answer to ``question`` from ``context``; GeneratorError if it fails."""
        import httpx

        endpoint = urlsplit(self.url)
        # The host and port only, never the userinfo of the URL.
        where: dict[str, Any] = {genai.SERVER_ADDRESS: endpoint.hostname, genai.SERVER_PORT: endpoint.port}
        try:
            with model_call(
                genai.CHAT,
                self.model,
                provider=genai.OPENAI_PROVIDER,
                kind=SpanKind.CLIENT,
                **{genai.REQUEST_TEMPERATURE: TEMPERATURE, **where},
            ):
                return await self._generate(question, context)
        except httpx.HTTPError as error:
            raise GeneratorError(f"the generator endpoint failed: {mask_url_credentials(str(error))}") from None

    async def _generate(self, question: str, context: str) -> str:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        body = {
            "model": self.model,
            "temperature": TEMPERATURE,
            "messages": [
                {
                    "role": "system",
                    "content": "Answer only from the numbered context. Cite passages as [n]. "
                    "If the context does not answer the question, say so.",
                },
                {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"},
            ],
        }
        endpoint = self.url.rstrip("/") + (
            "" if self.url.rstrip("/").endswith("/chat/completions") else "/chat/completions"
        )
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            response = await client.post(endpoint, json=body, headers=headers)
            response.raise_for_status()
            answer = response.json()
            record_usage(genai.CHAT, **usage_of(answer))
            return str(answer["choices"][0]["message"]["content"])


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
