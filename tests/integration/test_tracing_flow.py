"""One trace per document across ingest, embed and index, on the real broker, Milvus Lite and ONNX.

An upstream producer (plain aiokafka, not our client) sends documents with and without a
``traceparent`` header; the worker's spans reach ``telemetry.spans`` as OTLP protobuf, which the
``opentelemetry-proto`` classes decode here, as the Collector's Kafka receiver would.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from aiokafka import AIOKafkaProducer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from streams.kafka.admin import client_kwargs, ensure_topics, read_topic
from streams.kafka.topics import Topics
from streams.settings import Settings

from .conftest import run, run_pipeline

UPSTREAM_TRACE = "5b8aa5a2d2c872e8321cf37308d69df2"
UPSTREAM_SPAN = "051581bf3cb55c13"
TEXT = " ".join(f"Sentence {i} tells how traces follow a document through every stage." for i in range(40))


async def publish_plain(settings: Settings, records: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    await ensure_topics(settings)
    producer = AIOKafkaProducer(**client_kwargs(settings))
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(Topics(settings.namespace).docs_raw, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def exported_spans(settings: Settings) -> list[tuple[str, Any]]:
    """(service name, span) of every span on telemetry.spans, decoded with opentelemetry-proto."""
    spans = []
    async for message in read_topic(settings, Topics(settings.namespace).telemetry_spans):
        request = ExportTraceServiceRequest.FromString(message.value)
        for resource_spans in request.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name")
            spans.extend((service, s) for scope in resource_spans.scope_spans for s in scope.spans)
    return spans


def attribute(span: Any, key: str) -> Any:
    for kv in span.attributes:
        if kv.key == key:
            return kv.value.string_value or kv.value.int_value
    return None


def test_a_document_is_one_trace_from_its_upstream_producer_to_the_index(settings: Settings) -> None:
    traceparent = f"00-{UPSTREAM_TRACE}-{UPSTREAM_SPAN}-01".encode()
    run(
        publish_plain(
            settings,
            [
                (b"traced", json.dumps({"id": "traced", "text": TEXT}).encode(), [("traceparent", traceparent)]),
                (b"untraced", json.dumps({"id": "untraced", "text": "A short note."}).encode(), []),
                (b"broken", b'{"id": "broken", ', [("traceparent", traceparent)]),
            ],
        )
    )
    run_pipeline(settings, [])  # the worker stops at the end, which flushes its spans
    spans = run(exported_spans(settings))
    by_trace: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for service, span in spans:
        by_trace[span.trace_id.hex()].append((service, span))

    traced = [(service, s) for service, s in by_trace[UPSTREAM_TRACE] if attribute(s, "llmops.doc_id") == "traced"]
    ids = {s.span_id: (service, s) for service, s in traced}
    ingest = [s for service, s in traced if service == "llmops-ingest"]
    embed = [s for service, s in traced if service == "llmops-embed"]
    index = [s for service, s in traced if service == "llmops-index"]
    assert len(ingest) == 1 and ingest[0].parent_span_id.hex() == UPSTREAM_SPAN
    assert len(embed) == len(index) > 1, "one embed and one index span per chunk"
    assert all(s.parent_span_id == ingest[0].span_id for s in embed)
    assert all(ids[s.parent_span_id][0] == "llmops-embed" for s in index), "index spans are children of embed spans"
    assert {attribute(s, "messaging.destination.name") for s in index} == {Topics(settings.namespace).docs_embeddings}
    assert all(attribute(s, "messaging.system") == "kafka" for _, s in traced)

    # The batch spans live in their own traces and link back to their members.
    member_ids = {s.span_id for s in embed}
    batches = [s for _, s in spans if s.name == "embed batch"]
    assert member_ids <= {link.span_id for b in batches for link in b.links}

    # A document without traceparent starts its own trace, which still spans all three stages.
    untraced = [(service, s) for service, s in spans if attribute(s, "llmops.doc_id") == "untraced"]
    assert len({s.trace_id for _, s in untraced}) == 1
    assert {service for service, _ in untraced} == {"llmops-ingest", "llmops-embed", "llmops-index"}
    root = next(s for service, s in untraced if service == "llmops-ingest")
    assert not root.parent_span_id

    # The dead-letter log line of the broken record carries its span's ids.
    broken = next(s for _, s in by_trace[UPSTREAM_TRACE] if attribute(s, "messaging.kafka.message.key") == "broken")
    log = settings.data_dir / "worker-embed,index,ingest.log"
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    letter = next(line for line in lines if line.get("event") == "dead_letter")
    assert (letter["trace_id"], letter["span_id"]) == (UPSTREAM_TRACE, broken.span_id.hex())
