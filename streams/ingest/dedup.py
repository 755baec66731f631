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

Copies decided by two workers at once:
    With several workers, two copies of one text can arrive at two workers within the time one
    worker's write takes to reach the other through the changelog; each then finds no owner and
    indexes its copy (near copies the same way). The lookups notice it when the second write
    arrives through the changelog (a hash claimed by two indexed documents, or two indexed
    documents within the SimHash distance) and :meth:`LookupIndex.contested` lists them, so the
    worker that owns the larger id's partition retracts that copy, as one worker would have decided
    (``streams.ingest.pipeline.IngestPipeline.retractions``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections import Counter
from collections.abc import Iterable, MutableMapping
from dataclasses import asdict, dataclass, fields
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
    partition: int = -1  # docs.raw partition of that record: its owner retracts a copy taken concurrently
    revision: int = 0  # orders changes made without a new record (a copy stepping down) after ``offset``

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DocState:
        """A stored state; fields a newer version added are ignored, ones an older one lacked defaulted."""
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})

    @property
    def version(self) -> tuple[int, int]:
        return self.offset, self.revision


@dataclass(frozen=True, order=True)
class Conflict:
    """Two indexed documents one worker would not both have kept: ``loser`` is a copy of ``winner``."""

    winner: str
    loser: str
    kind: DuplicateKind
    distance: int


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
    A hash's owner is the smallest id among the indexed documents that claim it; more than one
    claim means two workers indexed copies at once (see :meth:`contested`).
    """

    def __init__(self, max_distance: int, near_enabled: bool) -> None:
        self.max_distance = max_distance
        self.near_enabled = near_enabled
        self.states: dict[str, DocState] = {}
        self.owners: dict[str, str] = {}
        self.claims: dict[str, set[str]] = {}  # hash -> indexed documents with that text
        self._contested: set[str] = set()  # hashes with more than one claim
        self._near_pairs: set[tuple[str, str]] = set()  # (smaller, larger) indexed ids seen within the distance
        self.bands: dict[str, set[str]] = {}

    @classmethod
    def build(cls, items: Iterable[tuple[str, Any]], max_distance: int, near_enabled: bool) -> LookupIndex:
        index = cls(max_distance, near_enabled)
        for doc_id, raw in items:
            if raw:
                index.add(doc_id, DocState.from_dict(raw))
        return index

    def add(self, doc_id: str, state: DocState) -> None:
        self.remove(doc_id)
        self.states[doc_id] = state
        if state.duplicate_of is None:
            claims = self.claims.setdefault(state.doc_hash, set())
            claims.add(doc_id)
            self.owners[state.doc_hash] = min(claims)
            if len(claims) > 1:
                self._contested.add(state.doc_hash)
            if self.near_enabled and state.near_eligible:
                for key in band_keys(state.simhash, self.max_distance):
                    self.bands.setdefault(key, set()).add(doc_id)

    def remove(self, doc_id: str) -> DocState | None:
        state = self.states.pop(doc_id, None)
        if state is None or state.duplicate_of is not None:
            return state
        claims = self.claims.get(state.doc_hash, set())
        claims.discard(doc_id)
        if len(claims) < 2:
            self._contested.discard(state.doc_hash)
        if claims:
            self.owners[state.doc_hash] = min(claims)
        else:
            self.claims.pop(state.doc_hash, None)
            self.owners.pop(state.doc_hash, None)
        if self.near_enabled and state.near_eligible:
            for key in band_keys(state.simhash, self.max_distance):
                members = self.bands.get(key)
                if members is not None:
                    members.discard(doc_id)
                    if not members:
                        del self.bands[key]
        return state

    def apply_remote(self, doc_id: str, raw: dict[str, Any] | None) -> None:
        """A state change read from the changelog (another worker's write, or our own echo).

        An echo older than what is known (the indexed state of a copy that stepped down since) is
        ignored, so it cannot bring the copy back.
        """
        known = self.states.get(doc_id)
        if raw is None:
            self.remove(doc_id)
            return
        state = DocState.from_dict(raw)
        if known is None or state.version >= known.version:
            self.add(doc_id, state)
            self._note_near_pairs(doc_id, state)

    def _note_near_pairs(self, doc_id: str, state: DocState) -> None:
        """Remember indexed documents within the distance of one that arrived through the changelog.

        A local decision never leaves such a pair (it found the other and skipped or stepped down),
        so a pair means two workers decided at once; each write's changelog echo passes here.
        """
        if not (self.near_enabled and state.near_eligible and state.duplicate_of is None):
            return
        for key in band_keys(state.simhash, self.max_distance):
            for other in self.bands.get(key, ()):
                if other != doc_id and self._near_distance(doc_id, other) is not None:
                    self._near_pairs.add((min(doc_id, other), max(doc_id, other)))

    def _near_distance(self, a: str, b: str) -> int | None:
        """Their SimHash distance if both are indexed, different texts, within the threshold."""
        first, second = self.states.get(a), self.states.get(b)
        if first is None or second is None or first.duplicate_of is not None or second.duplicate_of is not None:
            return None
        if first.doc_hash == second.doc_hash or not (first.near_eligible and second.near_eligible):
            return None  # equal texts are the exact side's
        distance = hamming(first.simhash, second.simhash)
        return distance if distance <= self.max_distance else None

    @property
    def may_be_contested(self) -> bool:
        """Whether :meth:`contested` could find anything (cheap: no pair is checked or sorted)."""
        return bool(self._contested or self._near_pairs)

    def contested(self) -> list[Conflict]:
        """Indexed documents that are copies of a smaller id, exact ones first; pairs no longer true are dropped."""
        exact = []
        for doc_hash in self._contested:
            winner = min(self.claims[doc_hash])
            exact += [Conflict(winner, loser, DuplicateKind.EXACT, 0) for loser in self.claims[doc_hash] - {winner}]
        near = []
        for pair in list(self._near_pairs):
            distance = self._near_distance(*pair)
            if distance is None:
                self._near_pairs.discard(pair)
            else:
                near.append(Conflict(*pair, DuplicateKind.NEAR, distance))
        return sorted(exact) + sorted(near)


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
        """Record a document's new version in one store write; return the previous version.

        Versions only grow: a write that does not come with a later record (a copy stepping down,
        a record read again after a crash) gets the next revision, so every worker applying the
        changelog ends at this write, whatever echoes of earlier ones arrive after it.
        """
        previous = self.lookups.remove(doc_id)
        if previous is not None and state.offset <= previous.offset:
            state = dataclasses.replace(state, offset=previous.offset, revision=previous.revision + 1)
        self.lookups.add(doc_id, state)
        self.store[doc_id] = asdict(state)
        return previous
