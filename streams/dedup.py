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

State lives in a ``MutableMapping[str, Any]`` with JSON-able values, so the worker can pass a
Faust table (persisted by its changelog topic) and tests can pass a dict:
    ``h:<doc_hash>`` -> owner doc id; ``b:<band>:<value>`` -> ``[[doc_id, simhash], ...]``;
    ``d:<doc_id>`` -> :class:`DocState` as a dict.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import MutableMapping
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
    """What the store remembers of a document's current version."""

    doc_hash: str
    simhash: int
    chunk_count: int
    duplicate_of: str | None = None


@dataclass(frozen=True)
class Duplicate:
    """A match against an earlier document."""

    of: str
    kind: DuplicateKind
    distance: int


class DedupIndex:
    """Finds duplicates and records document versions in a key-value store."""

    def __init__(self, store: MutableMapping[str, Any], max_distance: int = 3, near_enabled: bool = True) -> None:
        self.store = store
        self.max_distance = max_distance
        self.near_enabled = near_enabled

    def state(self, doc_id: str) -> DocState | None:
        """The remembered state of a document, if any."""
        raw = self.store.get(f"d:{doc_id}")
        return DocState(**raw) if raw else None

    def find_duplicate(self, doc_id: str, doc_hash: str, simhash: int | None) -> Duplicate | None:
        """The earlier document this text duplicates, ignoring ``doc_id`` itself."""
        owner = self.store.get(f"h:{doc_hash}")
        if owner is not None and owner != doc_id:
            return Duplicate(of=owner, kind=DuplicateKind.EXACT, distance=0)
        if simhash is None or not self.near_enabled:
            return None
        best: tuple[int, str] | None = None
        for key in band_keys(simhash, self.max_distance):
            for other_id, other_hash in self.store.get(key) or ():
                if other_id == doc_id:
                    continue
                distance = hamming(simhash, int(other_hash))
                if distance <= self.max_distance and (best is None or (distance, other_id) < best):
                    best = (distance, other_id)
        if best is None:
            return None
        return Duplicate(of=best[1], kind=DuplicateKind.NEAR, distance=best[0])

    def forget(self, doc_id: str) -> DocState | None:
        """Remove a document's hash and band entries; return what was remembered."""
        previous = self.state(doc_id)
        if previous is None:
            return None
        if previous.duplicate_of is None:
            if self.store.get(f"h:{previous.doc_hash}") == doc_id:
                del self.store[f"h:{previous.doc_hash}"]
            if self.near_enabled:
                for key in band_keys(previous.simhash, self.max_distance):
                    members = [m for m in self.store.get(key) or () if m[0] != doc_id]
                    if members:
                        self.store[key] = members  # reassign: tables persist on set, not on mutation
                    elif key in self.store:
                        del self.store[key]
        del self.store[f"d:{doc_id}"]
        return previous

    def remember(self, doc_id: str, state: DocState, near_eligible: bool) -> None:
        """Record a document's new version (after :meth:`forget` of the old one)."""
        if state.duplicate_of is None:
            self.store[f"h:{state.doc_hash}"] = doc_id
            if self.near_enabled and near_eligible:
                for key in band_keys(state.simhash, self.max_distance):
                    members = [m for m in self.store.get(key) or () if m[0] != doc_id]
                    self.store[key] = [*members, [doc_id, str(state.simhash)]]
        self.store[f"d:{doc_id}"] = asdict(state)
