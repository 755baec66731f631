"""librdkafka (confluent-kafka) clients for the request/reply path, bridged to asyncio.

Why this exists:
    A request and its answer cross Kafka twice, and at low request rates most of the round trip
    is the client library's own path, not the broker's. With 100 ms between requests, a plain
    two-hop echo takes 1.9-2.2 ms p50 with librdkafka and 3.9-4.2 ms with aiokafka, on the same
    broker and machine, alternately (README, "Inference latency"). librdkafka sends and fetches
    on its own C threads. Python only hands a record over and takes one back. So the inference
    client and both ends of the infer agent (its request consumer and its reply producer) use
    it. The agents' streams stay on Faust and aiokafka.

Usage:
    >>> replies = AsyncProducer(settings)               # acks=all, no linger
    >>> await replies.start([topic])                    # connected, the topic's leaders known
    >>> await replies.send(topic, value, key=b"client-1", headers=[("traceparent", b"00-...")])
    >>> await replies.stop()                            # flushes what is queued

    >>> for message in fetch(consumer, 256, 0.2):      # the first as soon as it is in, then what is there
    ...     if not fetch_errors.reported(message): use(FetchedRecord.of(message))

Notes:
    Delivery reports are served by one thread per producer (``poll``), and resolve asyncio
    futures through ``call_soon_threadsafe``. ``rdkafka_config`` takes its security options from
    :func:`streams.kafka.client_security.rdkafka_security`, beside the aiokafka ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, KafkaException, Message, Producer

from streams.kafka.client_security import rdkafka_security
from streams.logs import get_logger
from streams.settings import Settings

log = get_logger(__name__)

POLL_SECONDS = 0.1


def rdkafka_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Bootstrap servers and security options for any librdkafka client, then ``overrides``."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "socket.nagle.disable": True,
        **rdkafka_security(settings),
    }
    return {**config, **overrides}


class KafkaUnreachable(RuntimeError):
    """librdkafka could not reach the brokers in time; the message names them."""


class DeliveryFailed(RuntimeError):
    """The broker did not take a record; the message says which topic and why."""


class AsyncProducer:
    """An acks=all librdkafka producer whose ``send`` returns an awaitable delivery.

    Not idempotent: with idempotence on, the first record of a new producer on a partition
    reached the infer agent only after about 500 ms in 4 of 12 new clients here (never with it
    off). A request or response sent twice after a retry is harmless: the client keeps the
    first answer to each ``request_id`` and drops the rest.
    """

    def __init__(self, settings: Settings, **overrides: Any) -> None:
        # murmur2_random: keyed records land where Java's and aiokafka's partitioners put them
        # (a client reads its answers from the partition murmur2 gives its id).
        options = {
            "acks": "all",
            "enable.idempotence": False,
            "linger.ms": 0,
            "partitioner": "murmur2_random",
            **overrides,
        }
        self._producer = Producer(rdkafka_config(settings, **options))
        self._bootstrap = settings.bootstrap_servers
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._serve_reports, name="rdkafka-delivery", daemon=True)
        self._poller.start()

    async def start(self, topics: Sequence[str], timeout: float = 30.0) -> None:
        """Connect and learn ``topics``' partitions now, so that the first records do not wait.

        librdkafka connects in the background: without this, the first records of a new producer
        wait for the connection and the topic's metadata (50-60 ms here).
        """
        for topic in topics:
            try:
                await asyncio.to_thread(self._producer.list_topics, topic, timeout)
            except KafkaException as error:
                raise KafkaUnreachable(
                    f"cannot reach Kafka at {self._bootstrap} for {topic} within {timeout:.0f}s: {error}; "
                    "is the broker running (`llmops kafka status`)?"
                ) from None

    def _serve_reports(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(POLL_SECONDS)

    def send(
        self, topic: str, value: bytes, *, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> asyncio.Future[None]:
        """Queue one record (librdkafka sends it at once); the future resolves when it is acked."""
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()

        def report(error: KafkaError | None, _message: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody awaits this any more
                loop.call_soon_threadsafe(_settle, delivered, topic, error)

        while True:
            try:
                self._producer.produce(topic, value, key, headers=list(headers), on_delivery=report)
                return delivered
            except BufferError:  # the local queue is full: let deliveries drain it
                self._producer.poll(POLL_SECONDS)

    def flush(self, timeout: float = 30.0) -> int:
        """Wait up to ``timeout`` s for queued records; returns how many are still not delivered."""
        return int(self._producer.flush(timeout))

    async def stop(self, timeout: float = 30.0) -> None:
        """Deliver what is queued (up to ``timeout`` s), then end the delivery thread."""
        await asyncio.to_thread(self.flush, timeout)
        self._stopping.set()
        await asyncio.to_thread(self._poller.join)


def _settle(future: asyncio.Future[None], topic: str, error: KafkaError | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(DeliveryFailed(f"{topic}: {error.str()}"))


def close_quietly(client: Any) -> None:
    """Close a librdkafka consumer, ignoring the error of one already closed."""
    with contextlib.suppress(RuntimeError, KafkaException):
        client.close()


def fetch(consumer: Consumer, max_records: int, timeout: float) -> list[Message]:
    """Up to ``max_records`` messages: waits up to ``timeout`` s for the first, then takes what is there.

    ``Consumer.consume(n, timeout)`` alone waits for all ``n`` or the whole timeout, which put
    100 ms on an answer here; ``poll`` returns as soon as one message is in.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    if max_records <= 1:
        return [first]
    return [first, *consumer.consume(max_records - 1, 0)]


class FetchErrors:
    """Tells error events from records in a fetch, and logs each error code once.

    librdkafka repeats an error (a missing ACL, an unreachable broker) at every retry.
    """

    def __init__(self, event: str) -> None:
        self.event = event
        self._reported: set[int] = set()

    def reported(self, message: Message) -> bool:
        """True when ``message`` is an error event rather than a record."""
        error = message.error()
        if error is None:
            return False
        if error.code() not in self._reported:
            self._reported.add(error.code())
            log.warning(self.event, topic=message.topic(), error=error.str())
        return True


@dataclass(frozen=True, slots=True)
class FetchedRecord:
    """A consumed record with the attributes of aiokafka's ``ConsumerRecord`` that agents use."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | None  # ms since the epoch; None when the record has none
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, message: Message) -> FetchedRecord:
        """A record ``fetch`` returned (not an error event: those have no coordinates)."""
        kind, timestamp = message.timestamp()
        headers = message.headers() or ()
        pairs = headers.items() if isinstance(headers, dict) else headers
        return cls(
            topic=cast(str, message.topic()),
            partition=cast(int, message.partition()),
            offset=cast(int, message.offset()),
            key=message.key(),
            value=message.value(),
            timestamp=None if kind == TIMESTAMP_NOT_AVAILABLE else timestamp,
            headers=tuple((name, value.encode() if isinstance(value, str) else value or b"") for name, value in pairs),
        )
