"""``InferenceClient``: ask the infer agent over Kafka and await the matching answer.

Why this exists:
    Applications send ``inference.requests`` and read ``inference.responses``. Responses are
    keyed by the client's id, so they all land on one partition (Kafka's murmur2 of the key);
    the client reads only that partition, from its end at start, and matches answers to
    requests by ``request_id``. Many requests can be in flight at once.

Usage:
    >>> async with InferenceClient(settings) as client:
    ...     answer = await client.ask("how do I read a zip file?", task="search", top_k=3)
    ...     answers = await asyncio.gather(*(client.ask(q) for q in questions))
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from streams.admin import client_kwargs, producer, topic_partitions
from streams.avro import AvroCodec, codec_from_settings
from streams.inference import InferenceRequest
from streams.records import now_ms
from streams.settings import Settings
from streams.topics import Topics


def trace_id_of(headers: Any) -> str | None:
    """The trace id in a record's W3C ``traceparent`` header (``llmops trace ID`` shows the trace)."""
    for name, value in headers or ():
        if name == "traceparent" and value:
            parts = value.decode("ascii", "replace").split("-")
            return parts[1] if len(parts) == 4 else None
    return None


class InferenceTimeout(TimeoutError):
    """No response arrived in time; the message says what to check."""


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key`` (murmur2, as the Java client)."""
    return int(murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions


def make_request(
    client_id: str,
    text: str,
    task: str = "search",
    *,
    tenant: str | None = None,
    top_k: int = 5,
    model: str | None = None,
    explain: bool = False,
    deadline_s: float | None = None,
) -> InferenceRequest:
    """A new request with a fresh id, stamped with the time it was made."""
    now = now_ms()
    return InferenceRequest(
        request_id=uuid.uuid4().hex,
        task=task,
        text=text,
        client_id=client_id,
        tenant=tenant,
        top_k=top_k,
        model=model,
        deadline_ms=now + int(deadline_s * 1000) if deadline_s is not None else None,
        explain=explain,
        sent_at_ms=now,
    )


class InferenceClient:
    """Request/reply over Kafka for one client id."""

    def __init__(self, settings: Settings, client_id: str | None = None, codec: AvroCodec | None = None) -> None:
        self.settings = settings
        self.client_id = client_id or f"client-{uuid.uuid4().hex[:12]}"
        self.topics = Topics(settings.namespace)
        self.codec = codec or codec_from_settings(settings)
        self._producer = producer(settings, linger_ms=0)
        self._consumer: AIOKafkaConsumer | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> InferenceClient:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        partitions = await topic_partitions(self.settings, [self.topics.inference_responses])
        if not partitions:
            raise RuntimeError(
                f"topic {self.topics.inference_responses} does not exist: start a worker "
                "(`llmops worker`) or create the topics (`llmops kafka topics`)"
            )
        mine = TopicPartition(self.topics.inference_responses, partition_for(self.client_id, len(partitions)))
        self._consumer = AIOKafkaConsumer(**client_kwargs(self.settings), enable_auto_commit=False, group_id=None)
        await self._consumer.start()
        self._consumer.assign([mine])
        await self._consumer.seek_to_end(mine)
        await self._consumer.position(mine)  # fix the start before any request can be answered
        await self._producer.start()
        self._reader = asyncio.create_task(self._read(mine), name=f"responses-{self.client_id}")

    async def stop(self) -> None:
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for future in self._waiting.values():
            future.cancel()
        await self._producer.stop()
        if self._consumer:
            await self._consumer.stop()

    async def _read(self, partition: TopicPartition) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(partition, timeout_ms=1000)
            for message in batch.get(partition, []):
                if message.value is None:
                    continue
                response = self.codec.decode(message.value, "InferenceResponse")
                future = self._waiting.pop(response["request_id"], None)
                if future is not None and not future.done():
                    response["received_at_ms"] = now_ms()
                    response["trace_id"] = trace_id_of(message.headers)
                    future.set_result(response)

    def expect(self, request_id: str) -> asyncio.Future[dict[str, Any]]:
        """A future for the response to ``request_id``, for requests sent by other means.

        The request must carry this client's id as ``client_id`` (that is where it is answered).
        """
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        return future

    async def send(self, request: InferenceRequest) -> asyncio.Future[dict[str, Any]]:
        """Send ``request``; the future resolves with its response."""
        future = self.expect(request.request_id)
        value = self.codec.encode("InferenceRequest", request.to_avro(), self.topics.inference_requests)
        await self._producer.send(self.topics.inference_requests, value, key=self.client_id.encode())
        return future

    def request(self, text: str, task: str = "search", **options: Any) -> InferenceRequest:
        """A request from this client (``options``: tenant, top_k, model, explain, deadline_s)."""
        return make_request(self.client_id, text, task, **options)

    async def ask(self, text: str, task: str = "search", *, timeout: float = 30.0, **options: Any) -> dict[str, Any]:
        """Send one request and wait for its response (``options``: tenant, top_k, model, explain, deadline_s)."""
        request = self.request(text, task, **options)
        future = await self.send(request)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._waiting.pop(request.request_id, None)
            raise InferenceTimeout(
                f"no response to {request.request_id} on {self.topics.inference_responses} within {timeout:.0f}s: "
                "is a worker running the infer agent (`llmops worker --agents ...,infer`)?"
            ) from None
