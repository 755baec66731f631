"""kill -9 a monitor worker mid-window and restart it: the windows add up to the records that flowed.

A monitor worker counts documents (``docs.embeddings``, with deletions it does not count),
requests (``inference.requests``) and responses (a tenant's reply topic, read by the librdkafka
consumer, and ``inference.responses``) in windows of ``WINDOW`` records that close by count only.
It is killed with SIGKILL while every stream has an open window, restarted, fed more records, and
stopped with SIGTERM (its open windows are reported at the stop: `closed_by` stop). Then, per stream:

- before the kill, no record was committed that a published snapshot had not counted
  (``S1 >= K``): the open windows' records were left for the next owner;
- the restarted worker counted exactly the records from the kill's committed offsets to its own
  last commit (``S2 == counted in [K, C)``): none lost, none counted twice by it;
- the records counted twice (``S1 - K``: in a snapshot published before the kill, not yet
  committed) are at most one window, and printed.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from typing import Any

import pytest
from aiokafka import TopicPartition

from streams.inference.service import base_response
from streams.kafka.admin import committed_offsets, ensure_topics, offsets, producer
from streams.kafka.avro import codec_from_settings
from streams.kafka.topics import Topics
from streams.settings import Settings

from ..conftest import WorkerProcess, run, wait_for
from .helpers import CODEC, read_topic_messages, report, sigkill

WINDOW = 40
TENANT = "acme"
Offsets = dict[TopicPartition, int]


def embedding(i: int, op: str = "UPSERT") -> dict[str, Any]:
    return {
        "op": op,
        "chunk_id": f"d{i}#0",
        "doc_id": f"d{i}",
        "chunk_index": 0 if op == "UPSERT" else -1,
        "chunk_count": 1,
        "content_hash": "0" * 64,
        "text": f"document {i} about the standard library and its modules" if op == "UPSERT" else "",
        "title": None,
        "source": "fault",
        "tenant": None,
        "model_name": "test",
        "model_version": "0" * 64,
        "dimension": 4,
        "vector": [float(i % 7), 1.0, 0.5, 0.25] if op == "UPSERT" else [],
        "raw_timestamp_ms": 0,
        "traceparent": None,
    }


async def send_phase(settings: Settings, first: int, documents: int, requests: int, replies: int) -> None:
    """``documents`` embeddings (every 10th also deleted), requests, and replies (tenant and shared)."""
    topics = Topics(settings.namespace)
    codec = codec_from_settings(settings)
    kafka = producer(settings)
    await kafka.start()
    try:
        for i in range(first, first + documents):
            key = f"d{i}".encode()
            topic = topics.docs_embeddings
            await kafka.send(topic, codec.encode("ChunkEmbedding", embedding(i), topic), key=key)
            if i % 10 == 0:
                await kafka.send(topic, codec.encode("ChunkEmbedding", embedding(i, "DELETE"), topic), key=key)
        for i in range(first, first + requests):
            request = f'{{"request_id": "q{i}", "task": "search", "text": "how do I read a file {i}"}}'
            await kafka.send(topics.inference_requests, request.encode(), key=f"c{i}".encode())
        for i in range(first, first + replies):
            tenant = TENANT if i % 5 else None  # one in five on the shared responses topic
            topic = topics.responses_for(tenant)
            reply = base_response(f"q{i}", f"c{i}", "search", "OK", tenant=tenant)
            await kafka.send(topic, codec.encode("InferenceResponse", reply, topic), key=f"c{i}".encode())
        await kafka.flush()
    finally:
        await kafka.stop()


def stream_of(topics: Topics, message: Any) -> str | None:
    """The monitor stream that counts ``message``, or None when the monitor does not window it."""
    if message.topic == topics.docs_embeddings:
        return "documents" if CODEC.decode(message.value, "ChunkEmbedding")["op"] == "UPSERT" else None
    if message.topic == topics.inference_requests:
        return "requests"
    return "responses" if topics.is_response_topic(message.topic) else None


def inputs(topics: Topics) -> list[str]:
    """The topics the monitor reads in this test."""
    return [topics.docs_embeddings, topics.inference_requests, topics.inference_responses, topics.responses_for(TENANT)]


def inputs_end(settings: Settings) -> Offsets:
    return run(offsets(settings, inputs(Topics(settings.namespace))))[1]


def counted_between(settings: Settings, start: Offsets, stop: Offsets) -> Counter[str]:
    """Per stream, the records the monitor windows with offsets in ``[start, stop)`` (missing: 0)."""
    topics = Topics(settings.namespace)
    counts: Counter[str] = Counter()
    for name in inputs(topics):
        for message in read_topic_messages(settings, name):
            tp = TopicPartition(message.topic, message.partition)
            stream = stream_of(topics, message)
            if stream and start.get(tp, 0) <= message.offset < stop.get(tp, 0):
                counts[stream] += 1
    return counts


def monitor_committed(settings: Settings) -> Offsets:
    """What the monitor's Faust group and its tenants' replies group have committed."""
    topics = Topics(settings.namespace)
    faust_group = run(committed_offsets(settings, topics.app_id("monitor")))
    return {**faust_group, **run(committed_offsets(settings, topics.tenant_responses_group("monitor")))}


def snapshots_between(settings: Settings, start: Offsets, stop: Offsets) -> list[dict[str, Any]]:
    topic = Topics(settings.namespace).monitor_metrics
    return [
        CODEC.decode(m.value, "MetricSnapshot")
        for m in read_topic_messages(settings, topic)
        if start.get(TopicPartition(m.topic, m.partition), 0)
        <= m.offset
        < stop.get(TopicPartition(m.topic, m.partition), 0)
    ]


def events(snapshots: list[dict[str, Any]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for snapshot in snapshots:
        total[snapshot["stream"]] += snapshot["events"]
    return total


def metrics_end(settings: Settings) -> Offsets:
    return run(offsets(settings, [Topics(settings.namespace).monitor_metrics]))[1]


@pytest.mark.timeout(600)  # two worker starts on 2 shared cores
def test_kill_9_mid_window_then_restart_every_record_is_in_a_window(settings: Settings) -> None:
    settings = settings.model_copy(
        update={
            "namespace": "mk" + uuid.uuid4().hex[:10],
            "monitor_window_events": WINDOW,
            "monitor_window_seconds": 600.0,  # windows close by count (and at the stop): no timing here
            "sre_port": 0,
        }
    )
    topics = Topics(settings.namespace)
    run(ensure_topics(settings))
    run(ensure_topics(settings, [topics.tenant_responses_spec(TENANT, settings.partitions, 1)]))
    streams = ("documents", "requests", "responses")

    # Phase 1: 100 documents (and 10 deletions), 100 requests, 70 replies: two, two and one windows
    # close by count; 20, 20 and 30 records are in open windows when the worker is killed.
    worker = WorkerProcess(settings, agents="monitor").start()
    run(send_phase(settings, 0, 100, 100, 70))
    closed = {"documents": 2 * WINDOW, "requests": 2 * WINDOW, "responses": WINDOW}
    assert wait_for(
        lambda: all(events(snapshots_between(settings, {}, metrics_end(settings)))[s] >= n for s, n in closed.items()),
        timeout=240,
        interval=1.0,
    ), worker.log_tail()
    time.sleep(3.0)  # the rest of phase 1 reaches the open windows (unread records would be read after the restart)
    sigkill(worker)
    at_kill = monitor_committed(settings)
    killed_end = metrics_end(settings)
    before = events(snapshots_between(settings, {}, killed_end))
    committed_before = counted_between(settings, {}, at_kill)
    uncommitted_at_kill = counted_between(settings, at_kill, inputs_end(settings))

    # Phase 2: the restarted worker reads from the kill's commits, gets more records, and stops.
    restarted = WorkerProcess(settings, agents="monitor").start()
    try:
        run(send_phase(settings, 1000, 65, 70, 55))  # leaves open windows for the stop to report
        flowed = counted_between(settings, {}, inputs_end(settings))
        whole_windows = {s: (flowed[s] - committed_before[s]) // WINDOW * WINDOW for s in streams}
        assert wait_for(
            lambda: all(
                events(snapshots_between(settings, killed_end, metrics_end(settings)))[s] >= n
                for s, n in whole_windows.items()
            ),
            timeout=240,
            interval=1.0,
        ), (whole_windows, restarted.log_tail())
        time.sleep(3.0)  # the rest reaches the open windows, which the stop reports
    finally:
        code = restarted.stop()
    assert code == 0, f"the monitor worker did not stop cleanly ({code}); log:\n{restarted.log_tail()}"
    at_stop = monitor_committed(settings)
    after_snapshots = snapshots_between(settings, killed_end, metrics_end(settings))
    after = events(after_snapshots)
    counted_after = counted_between(settings, at_kill, at_stop)
    recounted = {s: before[s] - committed_before[s] for s in streams}

    report(
        "monitor kill -9 mid-window",
        window=WINDOW,
        records_flowed=dict(flowed),
        at_kill={"windowed": dict(before), "committed": dict(committed_before), "open": dict(uncommitted_at_kill)},
        after_restart={"windowed": dict(after), "committed_since_kill": dict(counted_after)},
        not_committed_after_stop=dict(counted_between(settings, at_stop, inputs_end(settings))),
        counted_twice=recounted,
        closed_by=dict(Counter(s["closed_by"] for s in after_snapshots)),
    )
    for s in streams:
        # Nothing committed that no published window counted: the open windows' records were left.
        assert before[s] >= committed_before[s], (s, before, committed_before)
        # The restarted worker counted exactly what it committed: nothing lost, nothing twice.
        assert after[s] == counted_after[s], (s, after, counted_after)
        # Counted twice: only the records of a window published and not yet committed at the kill.
        assert 0 <= recounted[s] <= WINDOW, recounted
    # The kill was mid-window: every stream had records counted (or read) and not committed.
    assert all(uncommitted_at_kill[s] > 0 for s in streams), uncommitted_at_kill
    # Altogether: every record that flowed and was committed is in a window, plus the recounted ones.
    left = counted_between(settings, at_stop, inputs_end(settings))
    assert {s: before[s] + after[s] for s in streams} == {s: flowed[s] - left[s] + recounted[s] for s in streams}
