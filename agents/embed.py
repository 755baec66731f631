"""Embed agent: ``docs.clean`` -> ``docs.embeddings`` (micro-batched ONNX inference).

Takes micro-batches bounded by size and time (``LLMOPS_EMBED_BATCH_SIZE``/``_SECONDS``),
embeds the UPSERT chunks in one call (sorted by length inside the embedder) and passes
deletions through. Undecodable records become dead letters; nothing else is done here. Each
output continues the trace of its chunk; the batch span holds the one ONNX run.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

import faust

from agents.common import dead_letter_for, delivery_of, raw_topic, send_dead_letter, stop_without_acking
from agents.sre import sre_of
from streams.index.embed import OnnxEmbedder
from streams.index.indexing import embed_chunks
from streams.kafka.avro import CodecError, codec_from_settings
from streams.kafka.topics import Topics
from streams.logs import get_logger
from streams.records import SOURCE_HEADER
from streams.settings import Settings
from streams.telemetry import genai
from streams.telemetry.metrics import set_active_models, stage_metrics
from streams.telemetry.tracing import AgentTracer, header_items

log = get_logger(__name__)


def register_embed(app: faust.App, settings: Settings, tracer: AgentTracer) -> Any:
    """Declare the embed agent on ``app``."""
    topics = Topics(settings.namespace)
    codec = codec_from_settings(settings)
    embedder = OnnxEmbedder.from_settings(settings)
    embedder.embed(["warm-up: the first run of a session is several times slower than the rest"] * embedder.workers)
    log.info("embedder_loaded", model=embedder.name, version=embedder.version, workers=embedder.workers)
    set_active_models("embed", [(embedder.name, embedder.version)])
    metrics = stage_metrics("embed")
    sre_of(app).probes.add("models", lambda: None)  # the embedder loaded above, before the worker serves

    @app.agent(raw_topic(app, topics.docs_clean, settings), name="embed")
    async def embed(stream: Any) -> None:
        async for events in stream.take_events(settings.embed_batch_size, within=settings.embed_batch_seconds):
            started = time.perf_counter()
            try:
                await embed_batch(events)
            except Exception as error:  # noqa: BLE001 - commit nothing of this batch, exit, be restarted
                await stop_without_acking(app, "embed", events, error)
            metrics.processed.inc(len(events))
            metrics.batch_seconds.observe(time.perf_counter() - started)

    async def embed_batch(events: list[Any]) -> None:
        await codec.prefetch(
            (event.message.value for event in events),
            writes=[("ChunkEmbedding", topics.docs_embeddings), ("DeadLetter", topics.deadletter)],
        )
        with tracer.batch([delivery_of(event) for event in events]) as batch:
            decoded: list[tuple[int, Any, dict[str, Any]]] = []
            pending = []
            for i, event in enumerate(events):
                try:
                    chunk = codec.decode(event.message.value or b"", "CleanChunk")
                except CodecError as error:
                    batch.fail(i, error.reason, error.detail)
                    with batch.current(i):
                        letter = dead_letter_for(event, "embed", error.reason, error.detail)
                        pending.append(await send_dead_letter(app, codec, topics, letter, batch.inject(i, [])))
                    continue
                batch.annotate(i, doc_id=chunk["doc_id"], chunk_id=chunk["chunk_id"], op=chunk["op"])
                decoded.append((i, event, chunk))
            # ONNX Runtime releases the GIL: embedding in a thread keeps the event loop (and the
            # other agents of this worker) running meanwhile.
            model = genai.model_attributes(
                genai.EMBEDDINGS, embedder.name, response_model=f"{embedder.name}@{embedder.version}"
            )
            with batch.step("onnx.embed", chunks=len(decoded), model=embedder.name, **model):
                # The thread runs in a copy of this context: the embedder's token count finds the step.
                records = await asyncio.get_running_loop().run_in_executor(
                    None, contextvars.copy_context().run, embed_chunks, [chunk for _, _, chunk in decoded], embedder
                )
            for (i, event, _), record in zip(decoded, records, strict=True):
                record["traceparent"] = batch.traceparent(i)
                source = [h for h in header_items(event.message.headers) if h[0] == SOURCE_HEADER]
                value = codec.encode("ChunkEmbedding", record, topics.docs_embeddings)
                key = record["doc_id"].encode()
                headers = batch.inject(i, source)
                pending.append(await app.producer.send(topics.docs_embeddings, key, value, None, None, headers))
            await asyncio.gather(*pending)

    return embed
