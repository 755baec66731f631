"""Infer agent: ``inference.requests`` -> ``inference.responses`` (and ``inference.shadow``).

Each request is parsed, screened and answered by :mod:`streams.inference`; the response is
keyed by the request's client id, so a client reads one partition. Bad requests get an INVALID
response when they carry an id, and a dead letter either way; blocked requests get a BLOCKED
response and a dead letter. The registry follows ``models.control`` in this process and the
answering models are swapped whole on each change, without a restart.

Responses go out on a producer of their own with no linger: the worker's shared producer
lingers a few milliseconds to batch documents, which a request/reply round trip cannot afford.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, cast

import faust

from agents.common import dead_letter_for, delivery_of, raw_topic, send_dead_letter
from streams.admin import producer
from streams.avro import codec_from_settings
from streams.chunk import default_tokenizer_path
from streams.embed import OnnxEmbedder, graph_for
from streams.inference import (
    GeneratorClient,
    InferenceRequest,
    InferenceService,
    ModelSet,
    RequestRejected,
    load_classifiers,
    parse_request,
    rejection_response,
)
from streams.logs import get_logger
from streams.model_ops import decode_version, embedder_version_record, write_events
from streams.registry import ModelVersion, RegistryFollower
from streams.replay import ORIGINAL_TIMESTAMP_HEADER
from streams.settings import Settings
from streams.topics import Topics
from streams.tracing import AgentTracer, BatchTrace
from streams.vectorstore import shared_store

log = get_logger(__name__)
REGISTRY_WAIT_SECONDS = 30.0


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


def register_infer(app: faust.App, settings: Settings, tracer: AgentTracer) -> Any:
    """Declare the infer agent on ``app``."""
    topics = Topics(settings.namespace)
    codec = codec_from_settings(settings)
    # Its own session and threads: queries must not wait behind a batch of document chunks.
    embedder = OnnxEmbedder(graph_for(settings), default_tokenizer_path(), workers=1)
    embedder.embed(["warm-up"])
    threads = ThreadPoolExecutor(settings.infer_threads, thread_name_prefix="infer")

    async def run_blocking(function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(threads, function, *args)

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
    )

    def on_registry_change(version: ModelVersion | None, key: str) -> None:
        current = service.models
        classifiers = load_classifiers(follower.registry, current.classifiers)
        service.swap(replace(current, registry=follower.registry.copy(), classifiers=classifiers))

    follower = RegistryFollower(settings, decode_version(codec), on_registry_change)
    state: dict[str, Any] = {}

    async def start() -> None:
        """Once per worker: registry caught up, embedder registered, store open, reply producer up."""
        await follower.start()
        try:
            await asyncio.wait_for(follower.ready.wait(), REGISTRY_WAIT_SECONDS)
        except TimeoutError:
            log.warning("registry_not_ready", waited_s=REGISTRY_WAIT_SECONDS, topic=follower.topic)
        if not any(v.version == embedder.version for v in follower.registry.all(embedder.name)):
            await write_events(settings, [embedder_version_record(settings, embedder)])
        store = await run_blocking(open_store)
        service.swap(replace(service.models, store=store))
        replies = producer(settings, linger_ms=0)
        await replies.start()
        state["replies"] = replies
        log.info("infer_ready", embedder=embedder.version[:12], models=[v.short for v in follower.registry.all()])

    async def ensure_started() -> None:
        if "started" not in state:  # the first caller prepares; everyone else waits for it
            state["started"] = asyncio.ensure_future(start())
        await asyncio.shield(state["started"])

    @app.task  # type: ignore[untyped-decorator]
    async def prepare() -> None:
        """Prepare as the worker starts, so the first request does not pay for it."""
        await ensure_started()

    async def reply(topic: str, key: str, response: dict[str, Any], headers: list[tuple[str, bytes]]) -> Any:
        value = codec.encode("InferenceResponse", response, topic)
        return await state["replies"].send(topic, value, key=key.encode(), headers=headers)

    async def handle(event: Any, batch: BatchTrace) -> None:
        message = event.message
        received_ms = int((message.timestamp or time.time()) * 1000)
        headers = batch.inject(0, [])  # the response continues the request's trace
        pending = []
        try:
            request = parse_request(message.value, codec)
        except RequestRejected as error:
            batch.fail(0, error.reason, error.detail)
            batch.annotate(0, request_id=error.request_id)
            letter = dead_letter_for(event, "infer", error.reason, error.detail)
            pending.append(await send_dead_letter(app, codec, topics, letter, headers))
            response = rejection_response(error)
            if response is not None:
                service.finish(response, received_ms)
                pending.append(
                    await reply(
                        topics.inference_responses, error.client_id or error.request_id or "", response, headers
                    )
                )
            await asyncio.gather(*pending)
            return
        batch.annotate(0, request_id=request.request_id, task=request.task, tenant=request.tenant)
        request = shift_replayed_deadline(request, dict(message.headers or ()), received_ms)
        if service.models.store is None and request.task != "classify":
            service.swap(replace(service.models, store=await run_blocking(open_store)))
        with batch.step("infer.answer", task=request.task):
            response, verdict = await service.answer(request, received_ms)
        batch.annotate(0, status=response["status"], models=[m["version"][:12] for m in response["models"]])
        service.finish(response, received_ms)
        pending.append(await reply(topics.inference_responses, request.reply_key, response, headers))
        if verdict.blocked:
            detail = f"prompt injection suspected, score {verdict.score:.2f}, rules {list(verdict.rules)}"
            batch.fail(0, "PROMPT_INJECTION", detail)
            letter = dead_letter_for(event, "infer", "PROMPT_INJECTION", detail)
            pending.append(await send_dead_letter(app, codec, topics, letter, headers))
        shadows = await service.shadow_answers(request, response)
        pending.extend([await reply(topics.inference_shadow, request.reply_key, s, headers) for s in shadows])
        await asyncio.gather(*pending)

    @app.agent(
        raw_topic(app, topics.inference_requests, settings), name="infer", concurrency=settings.infer_concurrency
    )
    async def infer(stream: Any) -> None:
        # The actors iterate from the first moment: awaiting preparation before the first
        # `async for` left the stream without a reader after some rebalances (seen in replays).
        async for event in stream.events():
            with tracer.batch([delivery_of(event)]) as batch, batch.current(0):
                try:
                    await ensure_started()
                    await handle(event, batch)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    log.exception("infer_failed", error=repr(error))
                    batch.fail(0, "INTERNAL_ERROR", repr(error))
                    letter = dead_letter_for(event, "infer", "INTERNAL_ERROR", repr(error)[:500])
                    await send_dead_letter(app, codec, topics, letter, batch.inject(0, []))

    async def stop(*_: Any, **__: Any) -> None:
        await follower.stop()
        if "replies" in state:
            await state["replies"].stop()
        threads.shutdown(wait=False)

    app.on_before_shutdown.connect(cast(Any, stop))

    return infer
