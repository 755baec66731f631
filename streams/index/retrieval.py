"""Retrieval: documents ranked by their best evidence, from dense, BM25, hybrid or a learned ranker.

Why this exists:
    Users ask for documents, not chunks: a long document must not crowd the top five with
    several chunks of itself, and a lexical question (an option name, a command word) must find
    the document that names it. One function, :func:`retrieve`, answers a query in one of four
    modes, so the evaluation compares them on equal terms and the service serves any of them:

    - ``dense``: the HNSW side alone (cosine of query and chunk vectors);
    - ``bm25``: Milvus's BM25 side alone, over text normalised by :mod:`streams.index.lexical`;
    - ``hybrid``: both, fused in Milvus by reciprocal-rank fusion (``hybrid_search`` + ``RRFRanker``);
    - ``ranked``: both sides' candidates, grouped by document, described by :data:`FEATURES`
      and ordered by a learned :class:`Ranker` (by :class:`RrfRanker`, the fusion of both
      sides' ranks, until a learned one is in production).

    Results are :class:`DocumentHit` s, top-k distinct documents each with its matching chunks
    as evidence; ``chunks=True`` gives the chunk-level hits of the mode instead.

Usage:
    >>> result = retrieve(store, vector, "how do I copy a tree", top_k=5, tenant=None, mode="ranked", ranker=r)
    >>> [(d.doc_id, d.score, d.attributions) for d in result.documents]
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streams.index.lexical import query_text, term_set, terms
from streams.index.vectorstore import RRF_K, Candidate, Hit

MODES = ("ranked", "hybrid", "dense", "bm25")
CANDIDATES_PER_SIDE = 30  # chunks each side offers the ranker
CHUNKS_PER_DOCUMENT = 4  # chunk hits fetched per wanted document in the non-ranked modes
EVIDENCE_PER_DOCUMENT = 3

# What the ranker knows about a (query, document) pair. Order matters: it is the ONNX input's.
FEATURES = (
    "dense",  # best cosine of the query and one of the document's chunks
    "dense_gap",  # that cosine minus the best cosine of any candidate (<= 0)
    "bm25_share",  # best BM25 score of the document / best BM25 score of any candidate (0..1)
    "bm25_found",  # 1 when the BM25 side returned one of the document's chunks
    "rrf",  # reciprocal-rank fusion score of the document's best chunk (x 100)
    "title_match",  # share of the query's terms found in the title
    "opening_match",  # share of the query's terms found in the document's first sentence
    "identifier_match",  # 1 when an identifier the user typed (a_b, a.b, CamelCase) is in the document
    "chunk_position",  # log(1 + index of the best chunk): openings tend to say what a document is
    "chunks_matched",  # log(1 + chunks of the document among the candidates)
    "coverage",  # share of the query's terms found in the document's candidate chunks or title
    "bm25_per_term",  # best BM25 score of the document / number of query terms (an absolute match strength)
    "name_match",  # 1 when the question names the document: the last part of a dotted title, or all its terms
    "title_depth",  # parts of a dotted title (json = 1, json.dumps = 2, json.JSONEncoder.encode = 3); else 1
    "private_name",  # 1 when a part after the first starts with one underscore (an implementation detail)
    "special_method",  # 1 when the title ends in a special method (__init__, __eq__): the class usually answers
    "private_module",  # 1 when the title's first part starts with an underscore (_pydecimal, _strptime)
)

_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_IDENTIFIER = re.compile(r"\b[A-Za-z_]\w*(?:[._]\w+)+\b|\b[a-z]+[A-Z]\w*\b|\b[A-Z][a-z]+[A-Z]\w*\b")
_WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")


class Ranker(Protocol):
    """A learned ranker: a score and per-feature attributions for each row of features.

    ``features`` names the columns it reads, a subset of :data:`FEATURES` in its own order, so a
    version trained before a feature was added keeps ranking (it is given the columns it knows).
    """

    name: str
    version: str
    features: tuple[str, ...]

    def score(self, features: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """(scores [n], attributions [n, len(self.features)]) for ``features`` [n, len(self.features)]."""
        ...


class RrfRanker:
    """The ranker before any is trained: reciprocal-rank fusion of the two sides (feature ``rrf``)."""

    name = "rrf"
    version = "builtin"
    features: tuple[str, ...] = FEATURES

    def score(self, features: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        column = FEATURES.index("rrf")
        attributions = np.zeros_like(features)
        attributions[:, column] = features[:, column]
        return features[:, column].copy(), attributions


class SearchStore(Protocol):
    """What retrieval needs of a store (:class:`streams.index.vectorstore.MilvusStore`)."""

    def search(self, vector: Sequence[float], top_k: int, tenant: str | None) -> list[Hit]: ...

    def lexical_search(self, query_terms: str, top_k: int, tenant: str | None) -> list[Hit]: ...

    def hybrid(self, vector: Sequence[float], query_terms: str, top_k: int, tenant: str | None) -> list[Hit]: ...

    def candidates(
        self, vector: Sequence[float], query_terms: str, limit: int, tenant: str | None
    ) -> list[Candidate]: ...

    def first_chunks(self, doc_ids: Sequence[str]) -> dict[str, str]: ...

    def chunk_vectors(self, chunk_ids: Sequence[str]) -> Mapping[str, Sequence[float]]: ...


@dataclass(frozen=True)
class DocumentHit:
    """One document in the results: its score, best chunks as evidence, and why it ranks here."""

    doc_id: str
    title: str
    score: float
    evidence: tuple[Hit, ...]
    features: Mapping[str, float] = field(default_factory=dict)
    attributions: Mapping[str, float] = field(default_factory=dict)

    @property
    def best(self) -> Hit:
        return self.evidence[0]


@dataclass(frozen=True)
class Retrieval:
    """What :func:`retrieve` found: documents (or chunks), and the mode that actually ranked them."""

    mode: str
    documents: list[DocumentHit]
    chunks: list[Hit]


def retrieve(
    store: SearchStore,
    vector: Sequence[float],
    question: str,
    *,
    top_k: int,
    tenant: str | None,
    mode: str = "ranked",
    ranker: Ranker | None = None,
    chunks: bool = False,
) -> Retrieval:
    """The ``top_k`` documents (or chunks, with ``chunks=True``) for ``question`` in ``mode``."""
    if mode not in MODES:
        raise ValueError(f"retrieval mode {mode!r} is not one of {list(MODES)}")
    query_terms = query_text(question)
    if mode == "ranked":
        candidates = store.candidates(vector, query_terms, max(CANDIDATES_PER_SIDE, top_k), tenant)
        documents = rank_documents(question, candidates, ranker or RrfRanker(), store, tenant)
        if chunks:
            return Retrieval(mode, [], [hit for doc in documents for hit in doc.evidence][:top_k])
        return Retrieval(mode, documents[:top_k], [])
    limit = top_k if chunks else top_k * CHUNKS_PER_DOCUMENT
    if mode == "dense":
        hits = store.search(vector, limit, tenant)
    elif mode == "bm25":
        hits = store.lexical_search(query_terms, limit, tenant)
    else:
        hits = store.hybrid(vector, query_terms, limit, tenant)
    if chunks:
        return Retrieval(mode, [], hits[:top_k])
    return Retrieval(mode, group_documents(hits)[:top_k], [])


def group_documents(hits: Sequence[Hit]) -> list[DocumentHit]:
    """Chunk hits (best first) as documents ranked by their best chunk, each with its chunks as evidence."""
    by_doc: dict[str, list[Hit]] = {}
    for hit in hits:
        by_doc.setdefault(hit.doc_id, []).append(hit)
    return [
        DocumentHit(doc_id, found[0].title, found[0].score, tuple(found[:EVIDENCE_PER_DOCUMENT]))
        for doc_id, found in by_doc.items()
    ]


def rank_documents(
    question: str, candidates: Sequence[Candidate], ranker: Ranker, store: SearchStore | None, tenant: str | None
) -> list[DocumentHit]:
    """Candidates grouped by document, ordered by ``ranker``; ``store`` supplies missing openings."""
    if not candidates:
        return []
    doc_ids, matrix, grouped = document_features(question, candidates, openings(candidates, store))
    scores, attributions = ranker.score(matrix[:, ranker_columns(ranker)])
    order = np.argsort(-scores, kind="stable")
    documents = []
    for row in order:
        found = grouped[doc_ids[row]]
        evidence = tuple(c.hit(_chunk_score(c), tenant) for c in found[:EVIDENCE_PER_DOCUMENT])
        documents.append(
            DocumentHit(
                doc_ids[row],
                found[0].title,
                float(scores[row]),
                evidence,
                {name: round(float(v), 4) for name, v in zip(FEATURES, matrix[row], strict=True)},
                {name: round(float(v), 4) for name, v in zip(ranker.features, attributions[row], strict=True)},
            )
        )
    return documents


def ranker_columns(ranker: Ranker) -> list[int]:
    """The columns of a :data:`FEATURES` matrix that ``ranker`` reads, in its order."""
    unknown = [name for name in ranker.features if name not in FEATURES]
    if unknown:
        raise ValueError(
            f"ranker {ranker.name}@{ranker.version} reads features {unknown} this worker does not compute "
            f"(it knows {list(FEATURES)}): promote a ranker trained by this version (llmops models train-ranker)"
        )
    return [FEATURES.index(name) for name in ranker.features]


def document_features(
    question: str, candidates: Sequence[Candidate], opening_of: Mapping[str, str]
) -> tuple[list[str], npt.NDArray[np.float32], dict[str, list[Candidate]]]:
    """(document ids, feature matrix [docs, FEATURES], each document's candidates best first)."""
    grouped: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        grouped[candidate.doc_id].append(candidate)
    for found in grouped.values():
        found.sort(key=_chunk_score, reverse=True)
    query = term_set(question)
    query_size = max(1, len(query))
    identifiers = {match.lower() for match in _IDENTIFIER.findall(question)}
    words = {match.lower() for match in _WORDS.findall(question)}
    best_dense = max(c.dense for c in candidates)
    best_bm25 = max(c.bm25 for c in candidates)
    doc_ids = list(grouped)
    matrix = np.zeros((len(doc_ids), len(FEATURES)), dtype=np.float32)
    for row, doc_id in enumerate(doc_ids):
        found = grouped[doc_id]
        dense = max(c.dense for c in found)
        bm25 = max(c.bm25 for c in found)
        best = max(found, key=lambda c: c.dense)
        title = found[0].title
        title_terms = term_set(title)
        covered = _share(query, title_terms.union(*(term_set(c.text) for c in found)))
        matrix[row] = (
            dense,
            dense - best_dense,
            bm25 / best_bm25 if best_bm25 > 0 else 0.0,
            float(any(c.bm25_rank is not None for c in found)),
            100 * max(_rrf(c) for c in found),
            _share(query, title_terms),
            _share(query, term_set(opening_of.get(doc_id, ""))),
            float(_names_in(identifiers, found, title)),
            math.log1p(best.chunk_index),
            math.log1p(len(found)),
            covered,
            bm25 / query_size,
            *name_features(title, words, query),
        )
    return doc_ids, matrix, grouped


def name_features(title: str, words: set[str], query: frozenset[str]) -> tuple[float, ...]:
    """``name_match`` .. ``private_module`` for a document titled ``title``.

    ``words`` are the question's words in lower case, ``query`` its terms (:func:`term_set`). A
    title that is a dotted name (``shutil.copytree``, ``json.JSONEncoder.__init__``) says what the
    document documents; any other title is one part.
    """
    name, name_terms, *flags = _title_name(title)
    named = name in words or (bool(name_terms) and name_terms <= query)
    return (float(named), *flags)


@lru_cache(maxsize=16_384)
def _title_name(title: str) -> tuple[str, frozenset[str], float, float, float, float]:
    """(name in lower case, its terms, depth, private part, special method, private module) of a title."""
    dotted = _DOTTED_NAME.fullmatch(title) is not None
    parts = title.split(".") if dotted else [title]
    name = parts[-1]
    special = len(name) > 4 and name.startswith("__") and name.endswith("__")
    private = any(part.startswith("_") and not part.startswith("__") for part in parts[1:])
    return (
        name.lower(),
        frozenset(terms(name)),
        float(len(parts)),
        float(private),
        float(special),
        float(dotted and parts[0].startswith("_")),
    )


def openings(candidates: Sequence[Candidate], store: SearchStore | None) -> dict[str, str]:
    """First sentence of each candidate document (its chunk 0, fetched when not a candidate)."""
    first = {c.doc_id: c.text for c in candidates if c.chunk_index == 0}
    missing = sorted({c.doc_id for c in candidates} - first.keys())
    if missing and store is not None:
        first.update(store.first_chunks(missing))
    return {doc_id: first_sentence(text) for doc_id, text in first.items()}


def first_sentence(text: str, limit: int = 300) -> str:
    return _SENTENCE_END.split(text.strip(), maxsplit=1)[0][:limit]


def _rrf(candidate: Candidate) -> float:
    return sum(1.0 / (RRF_K + rank + 1) for rank in (candidate.dense_rank, candidate.bm25_rank) if rank is not None)


def _chunk_score(candidate: Candidate) -> float:
    """How well one chunk matches, to order a document's evidence: its RRF score, then its cosine."""
    return _rrf(candidate) + candidate.dense * 1e-3


def _share(query: frozenset[str], found: frozenset[str]) -> float:
    return len(query & found) / len(query) if query else 0.0


def _names_in(names: set[str], found: Sequence[Candidate], title: str) -> bool:
    """Whether one of the identifiers ``names`` (lower case) is in the chunks' text or the title."""
    if not names:
        return False
    text = " ".join(c.text for c in found).lower()
    return any(name in text or name in title.lower() for name in names)
