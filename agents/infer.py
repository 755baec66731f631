"""Infer agent: ``inference.requests`` -> ``inference.responses`` or a tenant's own, and ``inference.shadow``.

Each request is parsed, screened and answered by :mod:`streams.inference.service`; the response is
keyed by the request's client id, so a client reads one partition. Bad requests get an INVALID
response when they carry an id, and a dead letter either way; blocked requests get a BLOCKED
response and a dead letter. The registry follows ``models.control`` in this process and the
answering models are swapped whole on each change, without a restart.

Requests are read by a consumer group of their own (:class:`agents.request_consumer.RequestConsumer`,
group ``Topics.requests_group``) and answered in the worker's event loop rather than by a Faust
agent stream: Faust's consumer thread and stream hand-offs cost more than the two Kafka hops of a
round trip. The offsets are committed after the response (and any dead letter) is acknowledged,
never past a request in flight; a SIGTERM finishes the requests in flight first. Both ends of the
agent run on librdkafka (``streams.kafka.rdkafka``): its C threads fetch and send a record in less time
than aiokafka's Python path. Responses go out on a producer of their own with no linger: the
worker's shared producer lingers a few milliseconds to batch documents, which a request/reply
round trip cannot afford.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, cast

import faust
from aiokafka import TopicPartition

from agents.common import record_dead_letter, record_delivery, send_dead_letter
from agents.request_consumer import RequestConsumer
from agents.sre import sre_of
from streams.index.embed import OnnxEmbedder, graph_for
from streams.index.vectorstore import shared_store
from streams.inference.generator import GeneratorClient
from streams.inference.injection import InjectionClassifier
from streams.inference.requests import InferenceRequest, RequestRejected, parse_request
from streams.inference.service import (
    InferenceService,
    LoadedIndex,
    ModelSet,
    load_classifiers,
    load_indexes,
    load_ranker,
    rejection_response,
)
from streams.ingest.chunk import default_tokenizer_path
from streams.kafka.admin import committed_offsets, topic_partitions
from streams.kafka.avro import codec_from_settings
from streams.kafka.rdkafka import AsyncProducer
from streams.kafka.topics import Topics
from streams.logs import get_logger
from streams.models.indexes import index_embedder, index_store
from streams.models.lifecycle import bootstrap_records, control_check_from_settings, write_events
from streams.models.registry import ModelVersion, RegistryFollower, Stage
from streams.models.rejections import ControlRejected, rejection_alert
from streams.models.signing import can_sign
from streams.records import now_ms
from streams.replay.runner import ORIGINAL_TIMESTAMP_HEADER
from streams.settings import Settings
from streams.telemetry.metrics import request_seconds, set_active_models, stage_metrics
from streams.telemetry.tracing import AgentTracer, BatchTrace

log = get_logger(__name__)
REGISTRY_WAIT_SECONDS = 30.0
MISSING_TOPIC_RECHECK_SECONDS = 10.0  # a tenant topic found missing is looked up again after this
# Set per request (each runs in a task of its own): may its CPU work run on the event loop?
light_request: contextvars.ContextVar[bool] = contextvars.ContextVar("light_request", default=False)


def generator_from_settings(settings: Settings) -> GeneratorClient | None:
    if not settings.generator_url:
        return None
    key = settings.generator_api_key.get_secret_value() if settings.generator_api_key else None
    return GeneratorClient(settings.generator_url, settings.generator_model, key)


def shift_replayed_deadline(request: InferenceRequest, headers: dict[str, bytes], received_ms: int) -> InferenceRequest:
    """A replayed request keeps the time budget it had: its deadline moves by the replay delay."""
    original = headers.get(ORIGINAL_TIMESTAMP_HEADER)
    if request.deadline_ms is None or original is None:
        return request
    try:
        delay = received_ms - int(original)
    except ValueError:
        return request
    return replace(request, deadline_ms=request.deadline_ms + max(0, delay))


def register_infer(app: faust.App, settings: Settings, tracer: AgentTracer, agents: Sequence[str]) -> Any:
    """Declare the infer agent on ``app`` (a worker running ``agents``, which name its requests group)."""
    topics = Topics(settings.namespace)
    codec = codec_from_settings(settings)
    # Its own session and threads: queries must not wait behind a batch of document chunks.
    embedder = OnnxEmbedder(graph_for(settings), default_tokenizer_path(), workers=1)
    embedder.embed(["warm-up"])
    injection = (
        InjectionClassifier.load(
            settings.models_dir or settings.data_dir / "models",
            embedder,
            block_at=settings.injection_block_score,
            flag_at=settings.injection_flag_score,
        )
        if settings.injection_screen == "classifier"
        else None
    )
    threads = ThreadPoolExecutor(settings.infer_threads, thread_name_prefix="infer")

    async def run_blocking(function: Any, *args: Any) -> Any:
        # A lone, light request computes right here: the hand-off to a thread and back cost
        # about 0.5 ms of its round trip (bench/inference_latency.py). With others fetched or in
        # flight, threads let their ONNX runs overlap; an explanation (many runs) never blocks the loop.
        if settings.infer_inline_when_idle and consumer.in_flight <= 1 and light_request.get():
            return function(*args)
        # A copy of this context: model-call spans opened in the thread are children of the request's.
        in_context = contextvars.copy_context().run
        return await asyncio.get_running_loop().run_in_executor(threads, in_context, function, *args)

    def open_store() -> Any:
        try:
            return shared_store(settings, embedder.version, embedder.dimension)
        except Exception as error:  # noqa: BLE001 - search answers UNAVAILABLE until it opens
            log.warning("vector_store_unavailable", error=repr(error))
            return None

    service = InferenceService(
        ModelSet(embedder, None, default_classifier=settings.default_classifier),
        block_at=settings.injection_block_score,
        flag_at=settings.injection_flag_score,
        generator=generator_from_settings(settings),
        run_blocking=run_blocking,
        injection=injection,
        chunk_at=settings.injection_chunk_score,
    )

    embedders: dict[str, Any] = {embedder.version: embedder}  # index embedders by version, loaded once

    def open_index(version: ModelVersion) -> LoadedIndex:
        """An index version with the embedder its spec names (refused when the files here differ)."""
        loaded = index_embedder(settings, version, embedders)
        return LoadedIndex(version, loaded, index_store(settings, version, loaded.dimension))

    def on_registry_change(version: ModelVersion | None, key: str) -> None:
        current = service.models
        classifiers = load_classifiers(follower.registry, current.classifiers, settings.model_max_bytes)
        ranker = load_ranker(
            follower.registry, current.ranker, embedder.version, settings.ranker_name, settings.model_max_bytes
        )
        index, indexes = load_indexes(follower.registry, current.indexes, open_index)
        service.swap(
            replace(
                current,
                registry=follower.registry.copy(),
                classifiers=classifiers,
                ranker=ranker,
                index=index,
                indexes=indexes,
            )
        )
        show_active_models()

    def show_active_models() -> None:
        production = [(v.name, v.version) for v in follower.registry.all() if v.stage == Stage.PRODUCTION]
        set_active_models("infer", [(embedder.name, embedder.version), *production])

    async def on_control_rejected(message: Any, rejected: ControlRejected) -> None:
        """A refused control event: a dead letter with the reason, and a critical alert."""
        letter = record_dead_letter(message, "infer", rejected.reason.value, rejected.detail[:1000])
        sent = [await send_dead_letter(app, codec, topics, letter, [])]
        key = (message.key or b"").decode("utf-8", "replace")
        coordinates = f"{message.topic}:{message.partition}:{message.offset}"
        alert = rejection_alert(rejected, key, coordinates, message.timestamp or 0, now_ms())
        value = codec.encode("Alert", alert, topics.monitor_alerts)
        alert_key = f"{alert['metric']}|{alert['slice']}".encode()
        sent.append(await app.producer.send(topics.monitor_alerts, alert_key, value, None, None, None))
        await asyncio.gather(*sent)

    follower = RegistryFollower(
        settings, control_check_from_settings(settings, codec), on_registry_change, on_control_rejected
    )
    state: dict[str, Any] = {}

    async def register_own_embedder() -> None:
        """Record the embedder this worker runs and its live index, when it may sign (else a model manager does it)."""
        events = bootstrap_records(settings, embedder, follower.registry)
        if not events:
            return
        if not can_sign(settings):
            log.info("embedder_not_registered", embedder=embedder.version[:12], fix="llmops models register-embedder")
            return
        try:
            await write_events(settings, events, follower.registry.copy())
        except Exception as error:  # noqa: BLE001 - e.g. no WRITE on models.control under ACLs; answering goes on
            log.warning("embedder_not_registered", error=repr(error), fix="llmops models register-embedder")

    async def start() -> None:
        """Once per worker: registry caught up, embedder registered, store open, reply producer up."""
        await follower.start()
        try:
            await asyncio.wait_for(follower.ready.wait(), REGISTRY_WAIT_SECONDS)
        except TimeoutError:
            log.warning("registry_not_ready", waited_s=REGISTRY_WAIT_SECONDS, topic=follower.topic)
        await register_own_embedder()
        store = await run_blocking(open_store)
        service.swap(replace(service.models, store=store))
        replies = AsyncProducer(settings)
        await replies.start([topics.inference_responses, topics.inference_shadow])
        state["replies"] = replies
        show_active_models()
        await codec.prefetch(  # schema ids of what this agent writes, resolved off the event loop
            writes=[
                ("InferenceResponse", topics.inference_responses),
                ("InferenceResponse", topics.inference_shadow),
                ("DeadLetter", topics.deadletter),
                ("Alert", topics.monitor_alerts),
            ]
        )
        log.info("infer_ready", embedder=embedder.version[:12], models=[v.short for v in follower.registry.all()])

    def reply(topic: str, key: str, response: dict[str, Any], headers: list[tuple[str, bytes]]) -> Any:
        """Send a response now; returns its delivery (awaited with the request's other sends)."""
        value = codec.encode("InferenceResponse", response, topic)
        return state["replies"].send(topic, value, key=key.encode(), headers=headers)

    reply_topics: set[str] = {topics.inference_responses}
    missing_since: dict[str, float] = {}  # tenant topics found missing, and when (re-checked later)

    async def reply_topic(tenant: str | None) -> str | None:
        """Where a request of ``tenant`` is answered: the shared topic, or the tenant's own if it exists.

        Replies to a tenant never go to the shared topic: a topic per tenant is what ACLs can
        scope (docs/security.md). The worker never creates one on a request's say-so (any
        request could then make it create topics without end): an operator creates it
        (`llmops kafka topics --tenant NAME`), or the tenant's InferenceClient when it may.
        None when it does not exist (checked again after a while).
        """
        topic = topics.responses_for(tenant)
        if topic in reply_topics:
            return topic
        if time.monotonic() - missing_since.get(topic, -MISSING_TOPIC_RECHECK_SECONDS) < MISSING_TOPIC_RECHECK_SECONDS:
            return None
        if await topic_partitions(settings, [topic]):
            await codec.prefetch(writes=[("InferenceResponse", topic)])
            reply_topics.add(topic)
            return topic
        if len(missing_since) > 10_000:  # bounded, whatever tenants requests name
            missing_since.clear()
        missing_since[topic] = time.monotonic()
        return None

    def no_reply_topic(tenant: str | None) -> str:
        return (
            f"tenant {tenant!r} has no reply topic {topics.responses_for(tenant)}: an operator creates it with "
            f"`llmops kafka topics --tenant {tenant}` (its InferenceClient does when it may create topics)"
        )

    async def handle(record: Any, batch: BatchTrace) -> None:
        received_ms = record.timestamp or now_ms()
        headers = batch.inject(0, [])  # the response continues the request's trace
        pending = []
        await codec.prefetch([record.value])
        try:
            request = parse_request(record.value, codec)
        except RequestRejected as error:
            batch.fail(0, error.reason, error.detail)
            batch.annotate(0, request_id=error.request_id)
            letter = record_dead_letter(record, "infer", error.reason, error.detail)
            pending.append(await send_dead_letter(app, codec, topics, letter, headers))
            response = rejection_response(error)
            topic = await reply_topic(error.tenant) if response is not None else None
            if response is not None and topic is not None:
                service.finish(response, received_ms)
                pending.append(reply(topic, error.client_id or error.request_id or "", response, headers))
            await asyncio.gather(*pending)
            return
        batch.annotate(0, request_id=request.request_id, task=request.task, tenant=request.tenant)
        topic = await reply_topic(request.tenant)
        if topic is None:
            detail = no_reply_topic(request.tenant)
            batch.fail(0, "UNKNOWN_TENANT", detail)
            letter = record_dead_letter(record, "infer", "UNKNOWN_TENANT", detail)
            await (await send_dead_letter(app, codec, topics, letter, headers))
            return
        request = shift_replayed_deadline(request, dict(record.headers or ()), received_ms)
        if service.models.store is None and request.task != "classify":
            service.swap(replace(service.models, store=await run_blocking(open_store)))  # in a thread: slow
        light_request.set(not request.explain)
        started = time.perf_counter()

        answer_topic = topic

        def send_partial(partial: dict[str, Any]) -> None:  # a streamed answer's tokens, sent as they come
            pending.append(reply(answer_topic, request.reply_key, partial, headers))

        with batch.step("infer.answer", task=request.task):
            response, verdict = await service.answer(request, received_ms, send_partial)
        request_seconds(request.task).observe(time.perf_counter() - started)
        batch.annotate(0, status=response["status"], models=[m["version"][:12] for m in response["models"]])
        service.finish(response, received_ms)
        pending.append(reply(topic, request.reply_key, response, headers))
        if verdict.blocked:
            detail = f"prompt injection suspected, {verdict.reason()}"
            batch.fail(0, "PROMPT_INJECTION", detail)
            letter = record_dead_letter(record, "infer", "PROMPT_INJECTION", detail)
            pending.append(await send_dead_letter(app, codec, topics, letter, headers))
        shadows = await service.shadow_answers(request, response)
        pending.extend([reply(topics.inference_shadow, request.reply_key, s, headers) for s in shadows])
        await asyncio.gather(*pending)

    async def answer(record: Any) -> None:
        """One request: an answer, or a dead letter if answering failed (never raises but cancellation)."""
        processed.inc()
        with tracer.record(record_delivery(record)) as batch, batch.current(0):
            try:
                await handle(record, batch)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.exception("infer_failed", error=repr(error))
                batch.fail(0, "INTERNAL_ERROR", repr(error))
                letter = record_dead_letter(record, "infer", "INTERNAL_ERROR", repr(error)[:500])
                await send_dead_letter(app, codec, topics, letter, batch.inject(0, []))

    async def faust_group_offsets() -> dict[TopicPartition, int]:
        """Where the Faust agent of earlier versions stopped: a new requests group starts there."""
        committed = await committed_offsets(settings, app.conf.id)
        return {tp: offset for tp, offset in committed.items() if tp.topic == topics.inference_requests}

    consumer = RequestConsumer(
        settings,
        topics.inference_requests,
        topics.requests_group(*agents),
        answer,
        concurrency=settings.infer_concurrency,
        start_offsets=faust_group_offsets,
    )
    processed = stage_metrics("infer").processed
    sre = sre_of(app)
    sre.lag_groups[consumer.group] = {consumer.topic}
    sre.probes.add("models", lambda: None if "replies" in state else "infer: registry, embedder and replies starting")
    sre.probes.add(
        "store", lambda: None if service.models.store is not None else "infer: the Milvus collection is not open yet"
    )
    sre.probes.add(
        "consumer_group",
        lambda: None if consumer.assigned else f"requests group {consumer.group} has no assignment yet",
    )

    @app.task  # type: ignore[untyped-decorator]  # faust's decorators are untyped
    async def serve_requests() -> None:
        """Prepare once as the worker starts, then answer requests until the worker stops."""
        await start()
        await consumer.run()

    async def stop(*_: Any, **__: Any) -> None:
        await consumer.stop()  # answers and commits the requests in flight; the producer is still up
        await follower.stop()
        if "replies" in state:
            await state["replies"].stop()
        threads.shutdown(wait=False)

    app.on_before_shutdown.connect(cast(Any, stop))

    return serve_requests
