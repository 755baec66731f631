"""Monitor agents: docs.embeddings, inference.requests, inference.responses, feedback -> monitor.*.

Each input topic has an agent (tenants' reply topics, one consumer for all of them: Faust cannot
subscribe to a pattern) that decodes a record and hands it to one shared
:class:`streams.monitor.monitor.Monitor`; closed windows come back as snapshots (``monitor.metrics``,
key = stream) and alerts (``monitor.alerts``, key = metric|slice), also recorded as OpenTelemetry
metrics. A one-second timer closes windows by time. The drift reference is read from the
compacted ``monitor.reference`` at start and followed while running; when the production index
version switches, or a built candidate enters QA, the monitor gives the reference a scores sample
of that version (:func:`streams.monitor.index_switch.follow_switch`).

The join of feedback with responses is in this process's memory: run one monitor worker per
namespace (its topics are small next to the documents the embed agent handles).

Windows add up to the records that flowed, even across a kill -9:
    A record's offset is committed only after the window that counted it was closed and its
    snapshot published (acknowledged by the brokers). The Faust agents read with manual acks
    (``stream.noack()``); each event is held in :class:`streams.kafka.in_order_acks.InOrderAcks`
    (acked in offset order per partition) until :meth:`Monitor.take_released` gives its token
    back; the tenants' replies consumer does the same with ``manual_acks``. Windows closed by
    count, by the one-second timer, at a revocation and at a stop all release what they held,
    and each publish is followed by a commit of the monitor's topics. So a worker killed mid-window
    leaves the records of its open windows uncommitted, and the next owner counts them in its own
    windows; only the records of a window published but not yet committed at the kill are counted
    twice (at-least-once; at most one window per stream, since publishes run one at a time).
    Revocation and shutdown: Faust waits for held events before it moves on, so the open windows
    are reported (``closed_by`` ``rebalance`` or ``stop``) while it waits
    (:func:`agents.faust_fixes.release_before_waiting`), and the tenants' consumer reports them
    before it commits a revoke or its stop (``tests/integration/faults/test_monitor_kill.py``,
    ``tests/integration/faults/test_scale_out.py``).
    Not held: records the monitor does not window (deletions, its own questions, undecodable
    records, which are dead-lettered) and feedback waiting in the join for its response (the join
    is in memory; holding it would stall its partition's commits for the join's TTL). Nor
    ``docs.embeddings`` in a worker that also runs the index agent: both read it in one consumer
    group, and the index's commits must not wait for a monitor window; a kill -9 of such a worker
    can lose its open documents window. The guarantee is for the monitor run as its own worker
    (``--agents monitor``, one Deployment per agent group), as scale-out deploys it.
    Memory and lag: a worker holds the events of its open windows, at most
    ``LLMOPS_MONITOR_WINDOW_EVENTS`` per stream, for at most ``LLMOPS_MONITOR_WINDOW_SECONDS``;
    the monitor's consumer lag reads up to one open window per stream. Holding is per partition
    of the monitor's own consumer group: other agents of the worker commit as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

import faust

from agents.common import dead_letter_for, raw_topic, record_dead_letter, send_dead_letter
from agents.faust_fixes import release_before_waiting
from agents.request_consumer import RequestConsumer
from agents.sre import sre_of
from streams.index.rebuild import committed_progress
from streams.index.spec import INDEX_MODEL
from streams.inference.feedback import BadFeedback, decode_feedback
from streams.inference.requests import RequestRejected, parse_request
from streams.ingest.chunk import default_tokenizer
from streams.kafka.avro import CodecError, codec_from_settings
from streams.kafka.in_order_acks import InOrderAcks
from streams.kafka.rdkafka import FetchedRecord
from streams.kafka.topics import Topics
from streams.logs import get_logger
from streams.models.indexes import spec_of
from streams.models.lifecycle import control_check_from_settings
from streams.models.registry import ModelVersion, RegistryFollower, Stage
from streams.monitor.config import MonitorConfig, Output
from streams.monitor.detectors import Reference
from streams.monitor.index_switch import follow_switch
from streams.monitor.monitor import Monitor
from streams.monitor.otel import OtelMonitorExporter
from streams.monitor.reference import load_reference, reference_from_avro
from streams.settings import Settings
from streams.telemetry.metrics import observe_monitor_outputs, stage_metrics
from streams.telemetry.tracing import TRACE_HEADERS, header_items

log = get_logger(__name__)
Handler = Callable[[dict[str, Any], int, object], list[Output]]
# New tenants' reply topics are found at each metadata refresh (librdkafka's default is 5 min).
TENANT_TOPICS_REFRESH_MS = 10_000
SWITCH_CHECK_SECONDS = 5.0  # the registry wakes the switch follower; this is its idle check
SWITCH_RETRY_SECONDS = 30.0  # after a failed move (no infer worker answering, broker error)


def register_monitor(app: faust.App, settings: Settings, agents: Sequence[str] = ("monitor",)) -> Any:
    """Declare the monitor agents and timer on ``app`` (a worker running ``agents``)."""
    topics = Topics(settings.namespace)
    codec = codec_from_settings(settings)
    config = MonitorConfig.from_settings(settings)
    exporter = OtelMonitorExporter()

    def export(outputs: list[Output]) -> None:
        exporter.export(outputs)
        observe_monitor_outputs(outputs)  # drift scores on /metrics

    monitor = Monitor(config, default_tokenizer(), on_outputs=export)
    state: dict[str, Any] = {}
    processed = stage_metrics("monitor").processed
    sre_of(app).probes.add(
        "models",
        lambda: None if "started" in state and state["started"].done() else "monitor: drift reference not loaded yet",
    )

    async def use_reference(reference: Reference | None) -> None:
        if reference is None:
            log.warning("monitor_no_reference", hint="set one with `llmops monitor set-reference --corpus stdlib`")
            return
        # Calibrating takes seconds of CPU: do it off the event loop before the reference answers windows.
        await asyncio.get_running_loop().run_in_executor(None, reference.calibrate_all, config)
        monitor.set_reference(reference)
        log.info("monitor_reference", reference_id=reference.reference_id, samples=sorted(reference.samples))

    async def start() -> None:
        await use_reference(await load_reference(settings, codec))

    async def ready() -> None:
        if "started" not in state:
            state["started"] = asyncio.ensure_future(start())
        await asyncio.shield(state["started"])

    async def send(outputs: list[Output]) -> None:
        pending = []
        for kind, record in outputs:
            if kind == "snapshot":
                value = codec.encode("MetricSnapshot", record, topics.monitor_metrics)
                pending.append(
                    await app.producer.send(topics.monitor_metrics, record["stream"].encode(), value, None, None, None)
                )
            else:
                log.warning(
                    "monitor_alert",
                    **{
                        k: record[k]
                        for k in ("state", "severity", "metric", "slice", "value", "threshold", "window_id")
                    },
                )
                key = f"{record['metric']}|{record['slice'] or ''}".encode()
                value = codec.encode("Alert", record, topics.monitor_alerts)
                pending.append(await app.producer.send(topics.monitor_alerts, key, value, None, None, None))
        await asyncio.gather(*pending)

    # Faust events held until the window that counted them is published, acked in offset order.
    held_events: InOrderAcks[Any] = InOrderAcks(lambda event: event.ack())
    publishing = asyncio.Lock()  # one publish at a time: at most one window per stream is published and uncommitted
    monitor_topics = {topics.docs_embeddings, topics.inference_requests, topics.inference_responses, topics.feedback}

    async def publish(outputs: list[Output], released: list[object]) -> None:
        """Publish ``outputs``, then acknowledge and commit the records ``released`` with them."""
        async with publishing:
            if outputs:
                await send(outputs)
            events = [token for token in released if not isinstance(token, FetchedRecord)]
            replies = [token for token in released if isinstance(token, FetchedRecord)]
            if replies:
                tenant_replies.ack(replies)  # the tenants' consumer commits at its next turn
            committing = held_events.release(cast(Any, events)) and outputs and not app.consumer.should_stop
            # Commit at once, not at Faust's commit interval: what was published is what is committed.
            # (A commit that found another under way waited for it: this one commits ours.)
            if committing and not await app.consumer.commit(monitor_topics):
                await app.consumer.commit(monitor_topics)

    async def close(outputs: list[Output]) -> None:
        """Publish what a call of the monitor closed (call right after it: no await in between)."""
        await publish(outputs, monitor.take_released())

    # What the monitor writes; their schema ids are resolved off the event loop (AvroCodec.prefetch).
    writes = [
        ("MetricSnapshot", topics.monitor_metrics),
        ("Alert", topics.monitor_alerts),
        ("DeadLetter", topics.deadletter),
    ]

    def timestamp_ms(event: Any) -> int:
        return int((event.message.timestamp or time.time()) * 1000)

    async def reject(event: Any, reason: str, detail: str) -> None:
        # The monitor records no spans; the dead letter keeps the record's own trace context.
        context = [h for h in header_items(event.message.headers) if h[0] in TRACE_HEADERS]
        await send_dead_letter(app, codec, topics, dead_letter_for(event, "monitor", reason, detail), context)

    def decode_embedding(value: bytes) -> dict[str, Any] | None:
        try:
            return codec.decode(value, "ChunkEmbedding")
        except CodecError:
            return None  # the index agent dead-letters what it cannot read: one dead letter per record

    def decode_request(value: bytes) -> dict[str, Any] | None:
        try:
            return parse_request(value, codec).to_avro()
        except RequestRejected:
            return None  # the infer agent answers INVALID and dead-letters it

    inputs: list[tuple[str, str, Callable[[bytes], dict[str, Any] | None], Handler]] = [
        (topics.docs_embeddings, "monitor_documents", decode_embedding, monitor.on_embedding),
        (topics.inference_requests, "monitor_requests", decode_request, monitor.on_request),
        (
            topics.inference_responses,
            "monitor_responses",
            lambda v: codec.decode(v, "InferenceResponse"),
            monitor.on_response,
        ),
        (topics.feedback, "monitor_feedback", lambda v: decode_feedback(v, codec), monitor.on_feedback),
    ]

    # In a worker that also runs the index agent, docs.embeddings is read by both agents of one
    # consumer group, and a record's offset is committed once both acked it: holding it for a
    # monitor window would hold back the index's commits (its progress and lag) too. There the
    # monitor acks documents as it counts them, as before.
    at_once = {topics.docs_embeddings} if "index" in agents else set()
    log.info("monitor_acks", after_window=sorted({t for t, *_ in inputs} - at_once), at_once=sorted(at_once))

    def consume(decode: Callable[[bytes], dict[str, Any] | None], handler: Handler, hold: bool) -> Callable[[Any], Any]:
        async def agent(stream: Any) -> None:
            await ready()
            async for event in stream.noack().events():  # acked when the window that counted it is published
                processed.inc()
                token = held_events.hold(event.message.tp, event.message.offset, event)
                await codec.prefetch([event.message.value], writes=writes)
                try:
                    record = decode(event.message.value or b"")
                except (BadFeedback, CodecError) as error:
                    await reject(event, error.reason, error.detail)
                    await publish([], [token])
                    continue
                if record is None:
                    await publish([], [token])
                    continue
                try:
                    outputs = handler(record, timestamp_ms(event), token if hold else None)
                except Exception as error:  # one odd record must not stop monitoring (it is dead-lettered)
                    log.exception("monitor_failed", error=repr(error))
                    await reject(event, "INTERNAL_ERROR", repr(error)[:500])
                    await publish([], [*monitor.take_released(), token])
                    continue
                released = monitor.take_released()
                await publish(outputs, released if hold else [*released, token])

        return agent

    for topic, name, decode, handler in inputs:
        app.agent(raw_topic(app, topic, settings), name=name)(consume(decode, handler, topic not in at_once))

    # Tenants' replies live on a topic per tenant, created as tenants come; Faust cannot subscribe
    # to a pattern, so a librdkafka consumer of the monitor's own follows them all.
    async def on_tenant_response(record: FetchedRecord) -> None:
        await ready()
        processed.inc()

        async def reject_record(reason: str, detail: str) -> None:
            letter = record_dead_letter(record, "monitor", reason, detail)
            context = [h for h in record.headers if h[0] in TRACE_HEADERS]
            await (await send_dead_letter(app, codec, topics, letter, context))  # acked before the commit
            await publish([], [record])

        await codec.prefetch([record.value], writes=writes)
        try:
            response = codec.decode(record.value or b"", "InferenceResponse")
        except CodecError as error:
            await reject_record(error.reason, error.detail)
            return
        try:
            outputs = monitor.on_response(response, record.timestamp or int(time.time() * 1000), record)
        except Exception as error:  # one odd record must not stop monitoring (it is dead-lettered)
            log.exception("monitor_failed", error=repr(error))
            await reject_record("INTERNAL_ERROR", repr(error)[:500])
            return
        await close(outputs)

    tenant_replies = RequestConsumer(
        settings,
        "^" + re.escape(topics.tenant_responses_prefix) + ".+",
        topics.tenant_responses_group(*agents),
        on_tenant_response,
        concurrency=1,  # in order, like the Faust agents' windows
        consumer_options={"topic.metadata.refresh.interval.ms": TENANT_TOPICS_REFRESH_MS},
        manual_acks=True,  # committed once the window that counted the reply is published
        before_hand_over=lambda: report_open_windows(why_now()),
    )

    # Tenants' topics come and go: their lag is measured where the group has committed.
    sre_of(app).lag_groups[tenant_replies.group] = set()

    @app.task  # type: ignore[untyped-decorator]  # faust's decorators are untyped
    async def follow_tenant_responses() -> None:
        await tenant_replies.run()

    async def stop_tenant_responses(*_: Any, **__: Any) -> None:
        await tenant_replies.stop()  # reports the open windows before its last commit
        await report_open_windows("stop")

    app.on_before_shutdown.connect(cast(Any, stop_tenant_responses))

    @app.agent(raw_topic(app, topics.monitor_reference, settings), name="monitor_reference")
    async def follow_reference(stream: Any) -> None:
        await ready()
        async for event in stream.events():
            if not event.message.value:
                continue
            await codec.prefetch([event.message.value])
            try:
                reference = reference_from_avro(codec.decode(event.message.value, "MonitorReference"))
            except (CodecError, KeyError, ValueError) as error:
                log.warning("monitor_bad_reference", error=repr(error), hint="run `llmops monitor set-reference` again")
                continue
            if monitor.reference is None or reference.reference_id != monitor.reference.reference_id:
                await use_reference(reference)

    # A switch of the production index (promotion or rollback) gives the reference a scores sample
    # of the new version (streams.monitor.index_versions); follow_reference then loads it.
    switched = asyncio.Event()
    index_registry = RegistryFollower(settings, control_check_from_settings(settings, codec), lambda *_: switched.set())

    @app.task  # type: ignore[untyped-decorator]  # faust's decorators are untyped
    async def follow_index_switches() -> None:
        """Give the reference a scores sample of each index version in QA (built) and of production when it switches."""
        await index_registry.start()
        await index_registry.ready.wait()
        await ready()
        followed: str | None = None  # the production index version the reference was last made to follow
        sampled: set[str] = set()  # QA versions given a sample (or found with one)
        while True:
            production = index_registry.registry.production(INDEX_MODEL)
            steps = [] if production is None or production.version == followed else [(followed, production)]
            steps += [
                (production.version if production else None, version)
                for version in index_registry.registry.all(INDEX_MODEL)
                if version.stage is Stage.QA and version.version not in sampled and await built(version)
            ]
            wait = SWITCH_CHECK_SECONDS
            for previous, version in steps:
                try:
                    written = await follow_switch(settings, previous, version.version)
                except Exception as error:  # noqa: BLE001 - no infer worker, broker hiccup: tried again
                    log.warning("monitor_reference_not_moved", index=version.short, error=repr(error))
                    wait = SWITCH_RETRY_SECONDS
                    break
                log.info(
                    "monitor_reference_follows_index",
                    index=version.short,
                    stage=version.stage.value,
                    previous=previous[:12] if previous else None,
                    reference_id=written.reference_id if written else None,
                    samples=sorted(written.samples) if written else None,
                )
                if version.stage is Stage.PRODUCTION:
                    followed = version.version
                else:
                    sampled.add(version.version)
            switched.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(switched.wait(), wait)

    async def built(version: ModelVersion) -> bool:
        """Whether a candidate index has read all of docs.raw (a half-built index would make a wrong sample)."""
        if spec_of(version).live:
            return True
        done, total = await committed_progress(settings, version.version)
        return total > 0 and done >= total

    async def stop_index_registry(*_: Any, **__: Any) -> None:
        await index_registry.stop()

    app.on_before_shutdown.connect(cast(Any, stop_index_registry))

    @app.timer(1.0)  # type: ignore[untyped-decorator]  # faust ships no type hints
    async def close_windows_by_time() -> None:
        if "started" in state and state["started"].done():
            await close(monitor.tick())

    async def report_open_windows(how: Literal["stop", "rebalance"]) -> None:
        if "started" in state and state["started"].done():  # else nothing was counted yet
            await close(monitor.flush(how))

    def why_now() -> Literal["stop", "rebalance"]:
        return "stop" if app.should_stop else "rebalance"

    async def release_held_events() -> None:
        """While Faust waits for its events (a revocation, a stop): report the windows that hold some."""
        if monitor.holding or not held_events:
            await report_open_windows(why_now())

    # Faust waits for every event its streams took before it lets partitions go or stops, and the
    # windows hold theirs: they are reported while it waits, before any commit of the revoked
    # partitions and before the next owner reads them. (Windows span partitions: every
    # revocation closes them all.)
    release_before_waiting(app, release_held_events)
    return monitor
