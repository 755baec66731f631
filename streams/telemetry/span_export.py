"""Span export: OTLP protobuf on ``telemetry.spans`` (and the OTEL_TRACES_EXPORTER ones), off the data path.

Why this exists:
    The OpenTelemetry Collector's Kafka receiver reads ``ExportTraceServiceRequest`` messages
    (encoding ``otlp_proto``) from a topic, so writing our spans there needs no Collector near
    the workers and survives a Collector outage. Export must never slow or stall the agents:
    spans wait in a bounded queue drained by the SDK's batch processor thread, the Kafka producer
    runs on its own thread and event loop, and when the queue is full spans are dropped and
    counted (one warning every few seconds with the total) rather than blocking anyone.

Usage:
    >>> processors = exporters_from_settings(settings)     # what Telemetry.from_settings does
    >>> OtlpProtoSpanExporter(send=payloads.extend)          # tests: payloads is a list of bytes

Notes:
    The encoder is the SDK's own (``opentelemetry-exporter-otlp-proto-common``), so the bytes
    are what an OTLP exporter would send. Beside the topic, ``OTEL_TRACES_EXPORTER`` adds the
    SDK's own exporters (``otlp`` over gRPC or HTTP/protobuf, ``console``), each behind the same
    bounded, dropping queue. A request larger than ``max_bytes`` is split in
    halves until each part fits in one Kafka record.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from streams.kafka.topics import Topics
from streams.logs import get_logger
from streams.settings import Settings

log = get_logger(__name__)
# Below aiokafka's and the broker's default 1 MiB record limit, with room for the batch header.
MAX_RECORD_BYTES = 900_000
SCHEDULE_DELAY_MS = 1000
WARN_EVERY_SECONDS = 10.0
# The SDK's entry-point names of its two OTLP trace exporters.
OTLP_GRPC = "otlp_proto_grpc"
OTLP_HTTP = "otlp_proto_http"


def encode_payloads(spans: Sequence[ReadableSpan], max_bytes: int = MAX_RECORD_BYTES) -> list[bytes]:
    """``ExportTraceServiceRequest`` bytes for ``spans``, split so each part is under ``max_bytes``."""
    payload: bytes = encode_spans(spans).SerializeToString()
    if len(payload) <= max_bytes or len(spans) < 2:
        return [payload]
    middle = len(spans) // 2
    return encode_payloads(spans[:middle], max_bytes) + encode_payloads(spans[middle:], max_bytes)


class OtlpProtoSpanExporter(SpanExporter):
    """Encodes spans as OTLP protobuf and hands the bytes to ``send`` (e.g. a Kafka sink)."""

    def __init__(
        self,
        send: Callable[[list[bytes]], None],
        close: Callable[[], None] = lambda: None,
        max_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        self._send = send
        self._close = close
        self.max_bytes = max_bytes
        self.failed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            self._send(encode_payloads(spans, self.max_bytes))
        except Exception as error:  # noqa: BLE001 - a lost export must not kill the export thread
            self.failed += len(spans)
            log.warning("spans_not_exported", spans=len(spans), failed_total=self.failed, error=repr(error))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


class KafkaSpanSink:
    """Produces payloads to one topic from a thread and event loop of its own.

    Started on the first send, so a process that never ends a span never connects.
    """

    def __init__(self, settings: Settings, topic: str, timeout: float = 10.0) -> None:
        self.settings = settings
        self.topic = topic
        self.timeout = timeout
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._producer: Any = None

    def _run(self, coroutine: Any) -> Any:
        assert self._loop is not None
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(self.timeout)

    def _ensure_started(self) -> None:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, name="llmops-span-export", daemon=True)
                self._thread.start()
            if self._producer is None:
                self._producer = self._run(self._start_producer())

    async def _start_producer(self) -> Any:
        from streams.kafka.admin import producer

        # Spans are telemetry: leader acks and no idempotence keep export cheap for the broker.
        client = producer(self.settings, acks=1, enable_idempotence=False, linger_ms=20)
        try:
            await client.start()
        except BaseException:
            await client.stop()
            raise
        return client

    async def _send_all(self, payloads: list[bytes]) -> None:
        sent = [await self._producer.send(self.topic, value=payload) for payload in payloads]
        await asyncio.gather(*sent)

    def send(self, payloads: list[bytes]) -> None:
        """Produce ``payloads`` and wait for the broker's acks (on the export thread only)."""
        self._ensure_started()
        self._run(self._send_all(payloads))

    def close(self) -> None:
        """Flush and stop the producer, then the loop and its thread."""
        with self._lock:
            if self._loop is None:
                return
            if self._producer is not None:
                try:
                    self._run(self._producer.stop())
                except Exception as error:  # noqa: BLE001 - closing anyway
                    log.warning("span_producer_stop_failed", error=repr(error))
                self._producer = None
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(self.timeout)
            self._loop.close()
            self._loop = None


class _Tally(SpanExporter):
    """Counts spans handed to the batch processor until its exporter has taken them."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.lock = threading.Lock()
        self.pending = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            return self.inner.export(spans)
        finally:
            with self.lock:
                self.pending -= len(spans)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class DroppingSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, with a bound that drops, counts and warns instead of queueing on.

    The SDK's own queue also drops when full, but logs each span; here the bound is checked
    first, so that its warning never fires and ours comes at most every ``warn_every`` seconds.
    """

    def __init__(
        self,
        exporter: SpanExporter,
        max_queue_size: int,
        *,
        schedule_delay_millis: float = SCHEDULE_DELAY_MS,
        max_export_batch_size: int = 512,
        warn_every: float = WARN_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tally = _Tally(exporter)
        super().__init__(
            self._tally,
            max_queue_size=max_queue_size,
            schedule_delay_millis=schedule_delay_millis,
            max_export_batch_size=min(max_export_batch_size, max_queue_size),
        )
        self.max_queue_size = max_queue_size
        self.dropped = 0
        self._warn_every = warn_every
        self._clock = clock
        self._warned_at = float("-inf")

    @property
    def exporter(self) -> SpanExporter:
        """The exporter this processor feeds."""
        return self._tally.inner

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is None or not span.context.trace_flags.sampled:
            return
        with self._tally.lock:
            full = self._tally.pending >= self.max_queue_size
            if full:
                self.dropped += 1
            else:
                self._tally.pending += 1
        if not full:
            super().on_end(span)
            return
        now = self._clock()
        if now - self._warned_at >= self._warn_every:
            self._warned_at = now
            log.warning("spans_dropped", dropped_total=self.dropped, queue_size=self.max_queue_size)


def exporters_from_settings(settings: Settings, to_topic: bool = True) -> list[SpanProcessor]:
    """Span processors for this process: ``telemetry.spans`` if ``to_topic``, then each ``OTEL_TRACES_EXPORTER``."""
    processors: list[SpanProcessor] = []
    if to_topic:
        sink = KafkaSpanSink(settings, Topics(settings.namespace).telemetry_spans)
        processors.append(
            DroppingSpanProcessor(OtlpProtoSpanExporter(sink.send, sink.close), settings.tracing_queue_size)
        )
    processors.extend(
        DroppingSpanProcessor(exporter, settings.tracing_queue_size) for exporter in standard_exporters(settings)
    )
    return processors


def standard_exporters(settings: Settings) -> list[SpanExporter]:
    """The OpenTelemetry SDK's exporters named by ``OTEL_TRACES_EXPORTER`` (``otlp`` by protocol).

    The SDK's own configuration code loads them from their entry points, as its auto-configuration
    does; each reads its ``OTEL_EXPORTER_OTLP_*`` variables (headers, timeout, compression,
    certificates) itself. Only the endpoint is passed, so the settings module stays the one
    place that decides where spans go.
    """
    from opentelemetry.sdk._configuration import _import_exporters

    names = [_entry_point(name, settings) for name in settings.trace_exporters]
    classes, _, _ = _import_exporters(names, [], [])
    exporters = []
    for name, exporter_class in classes.items():
        if name in (OTLP_GRPC, OTLP_HTTP):
            endpoint = settings.otlp_url(grpc=name == OTLP_GRPC)
            otlp: Any = exporter_class  # both OTLP exporters take endpoint=; SpanExporter does not say so
            exporters.append(otlp(endpoint=endpoint))
            # Never the URL or headers: either may hold credentials.
            log.info("otlp_export", protocol=name, host=urlsplit(endpoint or "").hostname or "default")
        else:
            exporters.append(exporter_class())
    return exporters


def _entry_point(name: str, settings: Settings) -> str:
    """``otlp`` becomes the exporter of the configured protocol (HTTP/protobuf unless ``grpc``)."""
    if name != "otlp":
        return name
    return OTLP_GRPC if settings.traces_protocol == "grpc" else OTLP_HTTP
