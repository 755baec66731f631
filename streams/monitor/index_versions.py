"""Drift references per index version: a switch of the production index moves the scores reference with it.

Why this exists:
    The top-1 search score depends on the index that answered: its embedder, chunker and Milvus
    index, and whether the production ranker (trained for one embedder) can rank its candidates.
    Compared with the reference of another index version, the first windows after a blue-green
    switch would look drifted although nothing but the index changed. So the ``responses.scores``
    reference is kept per index version (sample ``responses.scores@<index version>``), a responses
    window's scores are compared only with the sample of the index version that answered them
    (each response names it), and when production switches (promotion or rollback) the monitor
    builds the sample of the new production version if the reference has none: it asks the
    latest search and rag questions of ``inference.requests`` again, pinned to that version
    (``model = chunks@VERSION``), as client :data:`REFERENCE_CLIENT`, whose records the monitor
    does not count.

What does not move:
    ``documents`` windows hold the vectors of ``docs.embeddings``, which the live pipeline writes
    with its own embedder whatever index answers searches; a switch does not change them, so
    their reference stays (it would be wrong to re-embed it with the new index's embedder).

Usage:
    >>> name = sample_name_for(reference, "responses.scores", index_version)   # None: not compared

    The switch itself (asking the questions again) is :mod:`streams.monitor.index_switch`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from streams.index.spec import INDEX_MODEL
from streams.monitor.detectors import Reference
from streams.monitor.drift import ReferenceSample

INDEX_STREAMS = ("responses.scores",)  # reference streams whose values depend on the index that answered
REFERENCE_CLIENT = "llmops-monitor-reference"  # the client id of the questions asked again at a switch


def sample_name(stream: str, index_version: str | None) -> str:
    """``stream@index_version``, or ``stream`` when the version is unknown."""
    return f"{stream}@{index_version}" if index_version else stream


def index_version_of(response: Mapping[str, Any]) -> str | None:
    """The index version a response names (its ``chunks`` model), if it searched one."""
    for model in response.get("models") or ():
        if model["name"] == INDEX_MODEL:
            return str(model["version"])
    return None


def top1_scores_by_index(responses: Iterable[Mapping[str, Any]]) -> dict[str | None, list[float]]:
    """Top-1 scores of OK responses with hits, grouped by the index version that answered (None: not named)."""
    scores: dict[str | None, list[float]] = {}
    for response in responses:
        if response["status"] == "OK" and response["hits"]:
            scores.setdefault(index_version_of(response), []).append(float(response["hits"][0]["score"]))
    return scores


def sample_name_for(reference: Reference | None, stream: str, index_version: str | None) -> str | None:
    """The reference sample that windows of ``stream`` from ``index_version`` are compared with, or None.

    The sample of that index version; else an unversioned sample (a reference set before index
    versions), but only while the reference holds no versioned sample of the stream: once one
    exists, a window is never compared with another index version's values.
    """
    if reference is None:
        return None
    versioned = sample_name(stream, index_version)
    if index_version and versioned in reference.samples:
        return versioned
    if stream in reference.samples and not any(name.startswith(stream + "@") for name in reference.samples):
        return stream
    return None


def index_versions_of(reference: Reference, stream: str = "responses.scores") -> list[str]:
    """The index versions the reference holds a ``stream`` sample for."""
    return sorted(name.split("@", 1)[1] for name in reference.samples if name.startswith(stream + "@"))


def needs_sample(reference: Reference | None, current: str) -> bool:
    """Whether the reference has a scores sample, but none of index version ``current``."""
    if reference is None or not any(name.split("@", 1)[0] in INDEX_STREAMS for name in reference.samples):
        return False
    return all(sample_name(stream, current) not in reference.samples for stream in INDEX_STREAMS)


def bind_unversioned(reference: Reference, previous: str | None) -> dict[str, ReferenceSample]:
    """Unversioned index-dependent samples, renamed as ``previous``'s (storing them drops the unversioned ones).

    A reference set before index versions were named was built from what production answered
    then: at the first switch it is bound to the version production is switching away from.
    """
    if previous is None:
        return {}
    return {
        sample_name(stream, previous): reference.samples[stream]
        for stream in INDEX_STREAMS
        if stream in reference.samples
    }
