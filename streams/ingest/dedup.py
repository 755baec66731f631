"""Exact and near-duplicate detection over a key-value store (a Faust table in the worker).

Why this exists:
    Duplicated documents waste embedding time and crowd search results with copies. Exact
    duplicates share the sha256 of their cleaned text; near duplicates (a changed date, a
    footer) share most word shingles, which SimHash-64 turns into a small Hamming distance.

How near-duplicate lookup stays exact:
    With a threshold of ``k`` bits the 64-bit SimHash is cut into ``k + 1`` bands. Two hashes
    within distance ``k`` differ in at most ``k`` bands, so by the pigeonhole principle they share
    at least one band exactly. Each band value is a bucket key in the store; a lookup reads
    ``k + 1`` buckets and checks true distances, so no pair within the threshold is missed.

State lives in a ``MutableMapping[str, Any]`` of ``doc_id -> DocState`` dicts, so the worker can
pass a Faust table (persisted by its changelog topic, one record per document version) and tests
can pass a dict. The hash and band lookups are derived from it in memory (:class:`LookupIndex`).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, MutableMapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from streams.records import DuplicateKind

_WORD = re.compile(r"\w+")
SHINGLE_WORDS = 3
MIN_SHINGLES_FOR_NEAR = 8


def content_hash(text: str) -> str:
    """sha256 hex of the UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def shingles(text: str, size: int = SHINGLE_WORDS) -> Counter[str]:
    """Lower-cased word n-grams with their counts."""
    words = _WORD.findall(text.lower())
    if len(words) < size:
        return Counter([" ".join(words)]) if words else Counter()
    return Counter(" ".join(words[i : i + size]) for i in range(len(words) - size + 1))


def simhash64(features: Counter[str]) -> int:
    """Charikar SimHash of weighted features, 64 bits (vectorized: one bit matrix per text)."""
    if not features:
        return 0
    digests = b"".join(hashlib.blake2b(f.encode(), digest_size=8).digest() for f in features)
    bits = np.unpackbits(np.frombuffer(digests, dtype=np.uint8).reshape(-1, 8), axis=1)
    weights = np.fromiter(features.values(), dtype=np.int64, count=len(features))
    score = (bits.astype(np.int64) * 2 - 1).T @ weights
    return int.from_bytes(np.packbits(score > 0).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """Number of differing bits."""
    return (a ^ b).bit_count()


def band_keys(simhash: int, max_distance: int) -> list[str]:
    """Bucket keys of the ``max_distance + 1`` bands of a SimHash (see module docstring)."""
    bands = max_distance + 1
    keys = []
    start = 0
    for band in range(bands):
        width = 64 // bands + (1 if band < 64 % bands else 0)
        keys.append(f"b:{bands}:{band}:{(simhash >> start) & ((1 << width) - 1):x}")
        start += width
    return keys


@dataclass(frozen=True)
class DocState:
    """What the store remembers of a document's current version (one store key per document)."""

    doc_hash: str
    simhash: int
    chunk_count: int
    duplicate_of: str | None = None
    near_eligible: bool = True
    offset: int = -1  # offset of the raw record that set this state: orders versions of one document


@dataclass(frozen=True)
class Duplicate:
    """A match against an earlier document."""

    of: str
    kind: DuplicateKind
    distance: int


class LookupIndex:
    """In-memory lookups derived from the stored states: content hash -> owner, band -> members.

    Only ``doc_id -> DocState`` is persisted (one changelog record per document version); these
    lookups are rebuilt from it on start and kept in step with every write, local or remote.
    """

    def __init__(self, max_distance: int, near_enabled: bool) -> None:
        self.max_distance = max_distance
        self.near_enabled = near_enabled
        self.states: dict[str, DocState] = {}
        self.owners: dict[str, str] = {}
        self.bands: dict[str, set[str]] = {}

    @classmethod
    def build(cls, items: Iterable[tuple[str, Any]], max_distance: int, near_enabled: bool) -> LookupIndex:
        index = cls(max_distance, near_enabled)
        for doc_id, raw in items:
            if raw:
                index.add(doc_id, DocState(**raw))
        return index

    def add(self, doc_id: str, state: DocState) -> None:
        self.remove(doc_id)
        self.states[doc_id] = state
        if state.duplicate_of is None:
            self.owners.setdefault(state.doc_hash, doc_id)
            if self.near_enabled and state.near_eligible:
                for key in band_keys(state.simhash, self.max_distance):
                    self.bands.setdefault(key, set()).add(doc_id)

    def remove(self, doc_id: str) -> DocState | None:
        state = self.states.pop(doc_id, None)
        if state is None or state.duplicate_of is not None:
            return state
        if self.owners.get(state.doc_hash) == doc_id:
            del self.owners[state.doc_hash]
        if self.near_enabled and state.near_eligible:
            for key in band_keys(state.simhash, self.max_distance):
                members = self.bands.get(key)
                if members is not None:
                    members.discard(doc_id)
                    if not members:
                        del self.bands[key]
        return state

    def apply_remote(self, doc_id: str, raw: dict[str, Any] | None) -> None:
        """A state change read from the changelog (another worker's write, or our own echo)."""
        known = self.states.get(doc_id)
        if raw is None:
            self.remove(doc_id)
            return
        state = DocState(**raw)
        if known is None or state.offset >= known.offset:
            self.add(doc_id, state)


class DedupIndex:
    """Finds duplicates and records document versions in a key-value store."""

    def __init__(
        self,
        store: MutableMapping[str, Any],
        max_distance: int = 3,
        near_enabled: bool = True,
        lookups: LookupIndex | None = None,
    ) -> None:
        self.store = store
        self.max_distance = max_distance
        self.near_enabled = near_enabled
        self.lookups = lookups or LookupIndex.build(store.items(), max_distance, near_enabled)

    def state(self, doc_id: str) -> DocState | None:
        """The remembered state of a document, if any."""
        return self.lookups.states.get(doc_id)

    def find_duplicate(self, doc_id: str, doc_hash: str, simhash: int | None) -> Duplicate | None:
        """The earlier document this text duplicates, ignoring ``doc_id`` itself."""
        owner = self.lookups.owners.get(doc_hash)
        if owner is not None and owner != doc_id:
            return Duplicate(of=owner, kind=DuplicateKind.EXACT, distance=0)
        if simhash is None or not self.near_enabled:
            return None
        best: tuple[int, str] | None = None
        for key in band_keys(simhash, self.max_distance):
            for other_id in self.lookups.bands.get(key, ()):
                if other_id == doc_id:
                    continue
                distance = hamming(simhash, self.lookups.states[other_id].simhash)
                if distance <= self.max_distance and (best is None or (distance, other_id) < best):
                    best = (distance, other_id)
        if best is None:
            return None
        return Duplicate(of=best[1], kind=DuplicateKind.NEAR, distance=best[0])

    def forget(self, doc_id: str) -> DocState | None:
        """Drop a document's state; return what was remembered."""
        previous = self.lookups.remove(doc_id)
        if previous is not None and doc_id in self.store:
            del self.store[doc_id]
        return previous

    def replace(self, doc_id: str, state: DocState) -> DocState | None:
        """Record a document's new version in one store write; return the previous version."""
        previous = self.lookups.remove(doc_id)
        self.lookups.add(doc_id, state)
        self.store[doc_id] = asdict(state)
        return previous
