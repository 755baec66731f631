"""``InferenceClient``: ask the infer agent over Kafka and await the matching answer.

Why this exists:
    Applications send ``inference.requests`` and read ``inference.responses``, or, for a
    tenant, that tenant's own reply topic ``inference.responses.tenant.<tenant>`` (under ACLs a
    tenant's principal may read only its own). Responses are keyed by the client's id, so they
    all land on one partition (Kafka's murmur2 of the key); the client reads only that
    partition, from its end at start, and matches answers to requests by ``request_id``. Many
    requests can be in flight at once.

Usage:
    >>> async with InferenceClient(settings) as client:
    ...     answer = await client.ask("how do I read a zip file?", task="search", top_k=3)
    ...     answers = await asyncio.gather(*(client.ask(q) for q in questions))
    >>> async with InferenceClient(settings, tenant="acme") as acme:   # acme's documents, acme's topic
    ...     answer = await acme.ask("our gzip policy?")
    >>> async for reply in client.stream("how do I read a zip file?"):   # rag, tokens as generated
    ...     print(reply["delta"] if not reply["final"] else reply["citations"])

Notes:
    Requests and responses travel through librdkafka (``streams.kafka.rdkafka``): its C threads send
    and fetch, a reader thread decodes the responses and hands them to the event loop. At low
    request rates that halves the client library's share of a round trip against aiokafka.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from aiokafka.partitioner import murmur2
from confluent_kafka import Consumer, TopicPartition

from streams.inference.requests import InferenceRequest
from streams.kafka.admin import ensure_topics, topic_partitions
from streams.kafka.avro import AvroCodec, CodecError, codec_from_settings
from streams.kafka.rdkafka import AsyncProducer, FetchErrors, close_quietly, fetch, rdkafka_config
from streams.kafka.topics import Topics
from streams.logs import get_logger
from streams.records import now_ms, tenant_problem
from streams.settings import Settings
from streams.telemetry.tracing import AgentTracer

log = get_logger(__name__)
READ_SECONDS = 0.2  # how long the reader thread waits for responses before checking for stop


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


def client_ids_per_partition(prefix: str, partitions: int) -> list[str]:
    """One client id per partition of ``inference.requests`` (``<prefix>-<n>``), so that clients
    that each key their requests by their id spread them over every partition."""
    ids: dict[int, str] = {}
    n = 0
    while len(ids) < partitions:
        ids.setdefault(partition_for(f"{prefix}-{n}", partitions), f"{prefix}-{n}")
        n += 1
    return [ids[p] for p in sorted(ids)]


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
    retrieval: str = "ranked",
    chunks: bool = False,
    stream: bool = False,
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
        retrieval=retrieval,
        chunks=chunks,
        stream=stream,
    )


class InferenceClient:
    """Request/reply over Kafka for one client id."""

    def __init__(
        self,
        settings: Settings,
        client_id: str | None = None,
        codec: AvroCodec | None = None,
        *,
        tenant: str | None = None,
        tracer: AgentTracer | None = None,
    ) -> None:
        """A client; with ``tenant``, every request is that tenant's and replies come on its own topic.

        With ``tracer`` each request is sent in a PRODUCER span whose context it carries, so the
        infer agent's spans and the response continue the client's trace.

        Raises:
            ValueError: ``tenant`` is not a tenant identifier.
        """
        why = tenant_problem(tenant) if tenant else None
        if why:
            raise ValueError(why)
        self.settings = settings
        self.client_id = client_id or f"client-{uuid.uuid4().hex[:12]}"
        self.tenant = tenant or None
        self.topics = Topics(settings.namespace)
        self.responses_topic = self.topics.responses_for(self.tenant)
        self.codec = codec or codec_from_settings(settings)
        self.tracer = tracer
        self._producer: AsyncProducer | None = None
        self._consumer: Consumer | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._streams: dict[str, asyncio.Queue[dict[str, Any] | BaseException]] = {}  # streamed requests
        self._reader: threading.Thread | None = None
        self._stopping = threading.Event()

    async def __aenter__(self) -> InferenceClient:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def start(self) -> None:
        topic = self.responses_topic
        partitions = await topic_partitions(self.settings, [topic])
        if not partitions and self.tenant:  # a tenant's first client: create its reply topic if allowed
            spec = self.topics.tenant_responses_spec(
                self.tenant, self.settings.partitions, self.settings.replication_factor
            )
            await ensure_topics(self.settings, [spec])
            partitions = await topic_partitions(self.settings, [topic])
        if not partitions:
            how = (
                f"an operator creates it with `llmops kafka topics --tenant {self.tenant}`"
                if self.tenant
                else "start a worker (`llmops worker`) or create the topics (`llmops kafka topics`)"
            )
            raise RuntimeError(f"topic {topic} does not exist: {how}")
        mine = partition_for(self.client_id, len(partitions))
        # Never commits and never joins a group (assign, not subscribe); librdkafka wants an id.
        group = {"group.id": self.topics.inference_clients_group, "enable.auto.commit": False}
        self._consumer = Consumer(rdkafka_config(self.settings, **group, **{"enable.auto.offset.store": False}))
        # Fix the start before any request can be answered: the partition's end, now.
        _, end = await asyncio.to_thread(self._consumer.get_watermark_offsets, TopicPartition(topic, mine), 30.0)
        self._consumer.assign([TopicPartition(topic, mine, end)])
        self._producer = AsyncProducer(self.settings)
        await self._producer.start([self.topics.inference_requests])
        loop = asyncio.get_running_loop()
        name = f"responses-{self.client_id}"
        self._reader = threading.Thread(target=self._read, args=(loop,), name=name, daemon=True)
        self._reader.start()

    async def stop(self) -> None:
        self._stopping.set()
        if self._reader:
            await asyncio.to_thread(self._reader.join)
        for future in self._waiting.values():
            future.cancel()
        if self._producer:
            await self._producer.stop()
        if self._consumer:
            await asyncio.to_thread(close_quietly, self._consumer)

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reader thread: fetch this client's partition, decode, hand the answers to the loop."""
        assert self._consumer is not None
        errors = FetchErrors("response_fetch_error")
        while not self._stopping.is_set():
            answers = []
            for message in fetch(self._consumer, 256, READ_SECONDS):
                value = message.value()
                if errors.reported(message) or value is None:
                    continue
                try:
                    response = self.codec.decode(value, "InferenceResponse")
                except CodecError as error:  # not ours to answer; the next responses still are
                    log.warning("response_undecodable", offset=message.offset(), reason=error.reason)
                    continue
                response["trace_id"] = trace_id_of(message.headers())
                answers.append(response)
            if answers:
                loop.call_soon_threadsafe(self._deliver, answers)

    def _deliver(self, answers: list[dict[str, Any]]) -> None:
        received = now_ms()
        for response in answers:
            queue = self._streams.get(response["request_id"])
            if queue is not None:  # a streamed request: every reply, partial or final, in order of arrival
                response["received_at_ms"] = received
                queue.put_nowait(response)
                if response["final"]:
                    self._streams.pop(response["request_id"], None)
                continue
            if not response["final"]:  # a partial reply nobody streams: only the final answers ask()
                continue
            future = self._waiting.pop(response["request_id"], None)
            if future is not None and not future.done():
                response["received_at_ms"] = received
                future.set_result(response)

    def _on_delivery(self, request_id: str, delivered: asyncio.Future[None]) -> None:
        """A request the broker did not take fails at once instead of timing out."""
        error = delivered.exception()
        queue = self._streams.get(request_id)
        if error is not None and queue is not None:
            self._streams.pop(request_id, None)
            queue.put_nowait(error)
        future = self._waiting.get(request_id)
        if error is not None and future is not None and not future.done():
            self._waiting.pop(request_id, None)
            future.set_exception(error)

    def expect(self, request_id: str) -> asyncio.Future[dict[str, Any]]:
        """A future for the response to ``request_id``, for requests sent by other means.

        The request must carry this client's id as ``client_id`` (that is where it is answered).
        """
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        return future

    async def send(self, request: InferenceRequest) -> asyncio.Future[dict[str, Any]]:
        """Send ``request``; the future resolves with its (final) response."""
        future = self.expect(request.request_id)
        self._produce(request)
        return future

    async def stream(
        self, text: str, task: str = "rag", *, timeout: float = 30.0, **options: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Ask with ``stream``: yield each partial reply as it arrives, then the final reply, then stop.

        Partial replies (``final`` false) carry ``delta`` (the new text; join them in ``sequence``
        order, 0, 1, ..., for the text so far) and no ``answer``; the final one is a whole response with citations, the
        grounded verdict and token counts. Answers that are not generated (search, classify, an
        extractive rag answer, an abstention) come as the final reply alone. ``timeout`` bounds the
        wait for each next reply, not the whole answer.

        Raises:
            InferenceTimeout: no next reply within ``timeout`` seconds.
        """
        request = self.request(text, task, stream=True, **options)
        queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        self._streams[request.request_id] = queue
        try:
            self._produce(request)
            while True:
                try:
                    reply = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    raise self._timeout(request, timeout) from None
                if isinstance(reply, BaseException):
                    raise reply
                yield reply
                if reply["final"]:
                    return
        finally:
            self._streams.pop(request.request_id, None)

    def _produce(self, request: InferenceRequest) -> None:
        """Queue ``request`` on the requests topic; a delivery failure reaches its waiter."""
        assert self._producer is not None, "start the client first (`async with InferenceClient(...)`)"
        value = self.codec.encode("InferenceRequest", request.to_avro(), self.topics.inference_requests)
        topic, key = self.topics.inference_requests, self.client_id.encode()
        if self.tracer is None:
            delivered = self._producer.send(topic, value, key=key)
        else:
            with self.tracer.send(topic, request_id=request.request_id, task=request.task) as headers:
                delivered = self._producer.send(topic, value, key=key, headers=headers)
        delivered.add_done_callback(partial(self._on_delivery, request.request_id))

    def request(self, text: str, task: str = "search", **options: Any) -> InferenceRequest:
        """A request of this client (options: top_k, model, explain, deadline_s, retrieval, chunks, stream, tenant).

        A client answers for one tenant (or none): its replies come on that tenant's topic, so a
        request for another tenant would never be answered where this client reads.

        Raises:
            ValueError: ``tenant`` differs from the client's.
        """
        tenant = options.pop("tenant", None) or self.tenant
        if tenant != self.tenant:
            raise ValueError(
                f"this client reads the replies of tenant {self.tenant!r}; "
                f"open an InferenceClient(tenant={tenant!r}) for tenant {tenant!r}"
            )
        return make_request(self.client_id, text, task, tenant=tenant, **options)

    async def ask(self, text: str, task: str = "search", *, timeout: float = 30.0, **options: Any) -> dict[str, Any]:
        """Send one request and wait for its response (``options``: tenant, top_k, model, explain, deadline_s)."""
        request = self.request(text, task, **options)
        future = await self.send(request)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._waiting.pop(request.request_id, None)
            raise self._timeout(request, timeout) from None

    def _timeout(self, request: InferenceRequest, timeout: float) -> InferenceTimeout:
        return InferenceTimeout(
            f"no response to {request.request_id} on {self.responses_topic} within {timeout:.0f}s: "
            "is a worker running the infer agent (`llmops worker --agents ...,infer`)?"
        )
