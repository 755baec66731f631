"""The monitor's side of an index switch: a scores reference of the new production index version.

Why this exists:
    See :mod:`streams.monitor.index_versions` for why scores references are kept per index
    version. When production switches (promotion or rollback) and the reference has no scores
    sample of the new version, :func:`follow_switch` asks the latest search and rag questions of
    ``inference.requests`` again as searches pinned to that version (``model = chunks@VERSION``,
    same retrieval and top_k, client :data:`REFERENCE_CLIENT`, which the monitor does not count)
    and stores their top-1 scores as ``responses.scores@VERSION``. A rollback finds the old
    version's sample still there and changes nothing.

Usage:
    >>> await follow_switch(settings, previous="3a1b...", current="8c90...")  # in the monitor worker
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from streams.index.spec import INDEX_MODEL
from streams.monitor.detectors import Reference
from streams.monitor.drift import ReferenceSample
from streams.monitor.index_versions import (
    INDEX_STREAMS,
    REFERENCE_CLIENT,
    bind_unversioned,
    index_versions_of,
    needs_sample,
    sample_name,
    top1_scores_by_index,
)
from streams.monitor.reference import MIN_REFERENCE_ROWS, load_reference, store_reference
from streams.settings import Settings

REBUILD_QUESTIONS = 1000  # at most this many recent questions are asked again


async def recent_questions(settings: Settings, size: int) -> list[tuple[str, str | None, str, int]]:
    """The latest ``size`` search and rag questions on ``inference.requests``: (text, tenant, retrieval, top_k).

    Questions the monitor itself asked (:data:`REFERENCE_CLIENT`) are left out.
    """
    from streams.inference.requests import RequestRejected, parse_request
    from streams.kafka.admin import offsets, read_range
    from streams.kafka.avro import codec_from_settings
    from streams.kafka.topics import Topics

    codec = codec_from_settings(settings)
    beginnings, ends = await offsets(settings, [Topics(settings.namespace).inference_requests])
    start = {tp: max(beginnings[tp], end - 2 * size) for tp, end in ends.items()}
    messages = [message async for message in read_range(settings, start, ends) if message.value]
    await codec.prefetch([message.value for message in messages])  # the schema ids of all, in one go
    found: list[tuple[int, tuple[str, str | None, str, int]]] = []
    for message in messages:
        try:
            request = parse_request(message.value, codec)
        except RequestRejected:
            continue
        if request.task in ("search", "rag") and request.client_id != REFERENCE_CLIENT:
            found.append((message.timestamp or 0, (request.text, request.tenant, request.retrieval, request.top_k)))
    found.sort(key=lambda pair: pair[0])
    return [question for _, question in found[-size:]]


async def scores_of(
    settings: Settings, index_version: str, questions: Sequence[tuple[str, str | None, str, int]], concurrency: int = 8
) -> list[float]:
    """Top-1 scores of ``questions`` asked as searches pinned to ``index_version`` (OK answers with hits)."""
    from streams.inference.client import InferenceClient

    clients: dict[str | None, InferenceClient] = {}
    scores: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def ask(text: str, tenant: str | None, retrieval: str, top_k: int) -> None:
        async with gate:
            try:
                response = await clients[tenant].ask(
                    text,
                    "search",
                    timeout=120.0,
                    top_k=top_k,
                    retrieval=retrieval,
                    model=f"{INDEX_MODEL}@{index_version}",
                )
            except TimeoutError:
                return  # one unanswered question leaves a smaller sample, not none
        scores.extend(top1_scores_by_index([response]).get(index_version, []))

    try:
        for tenant in {tenant for _, tenant, _, _ in questions}:
            clients[tenant] = InferenceClient(settings, REFERENCE_CLIENT, tenant=tenant)
            await clients[tenant].start()
        await asyncio.gather(*(ask(*question) for question in questions))
    finally:
        for client in clients.values():
            await client.stop()
    return scores


async def follow_switch(settings: Settings, previous: str | None, current: str) -> Reference | None:
    """Give the stored reference a scores sample of production index ``current`` (switched from ``previous``).

    Returns the reference written, or None when nothing was needed or there were too few questions
    to ask again (then windows of ``current`` are not compared until a reference is set).
    """
    reference = await load_reference(settings)
    if not needs_sample(reference, current):
        return None
    assert reference is not None  # needs_sample is False without one
    if previous is None and not index_versions_of(reference):
        return None  # a reference of no index version (set before they were named) is compared with every window
    added = bind_unversioned(reference, previous)
    size = min(REBUILD_QUESTIONS, max(s.size for n, s in reference.samples.items() if n.split("@")[0] in INDEX_STREAMS))
    questions = await recent_questions(settings, size)
    scores = await scores_of(settings, current, questions)
    if len(scores) < MIN_REFERENCE_ROWS:
        if added:  # still bind the old sample to its version, so the new one's windows are not compared with it
            return await store_reference(settings, added, f"bound to index {previous}")
        return None
    added[sample_name("responses.scores", current)] = ReferenceSample(
        numeric={"top1_score": np.asarray(scores, dtype=np.float64)}
    )
    description = (
        f"index switch to {INDEX_MODEL}@{current[:12]}: the latest {len(questions)} search/rag questions asked again, "
        f"pinned to it ({len(scores)} answered with hits)"
    )
    return await store_reference(settings, added, description)
