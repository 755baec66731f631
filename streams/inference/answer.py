"""Grounded answers: an extractive answerer, a groundedness check, and abstention.

Why this exists:
    ``rag`` must answer with no external service, cite what it says, and say "not found" rather
    than guess. The extractive answerer picks the sentences of the top documents' evidence that
    answer the question best (query-term overlap with the sentence and its document's title,
    weighted by the document's rank) and cites each as ``[n]``. It abstains when the evidence is
    weak: the answerability logit of the top document (trained with the ranker) is below a
    threshold calibrated on the dev split's unanswerable questions, not guessed.

    Every answer, extractive or generated, then passes :func:`check_grounding`: each sentence
    must be supported by a passage it cites (share of its content terms found in the passage);
    unsupported sentences are flagged, and the answer is ``grounded`` ``true``, ``partial`` or
    ``false``. A generator that invents a fact or cites the wrong passage is caught here.

Usage:
    >>> answer = ExtractiveAnswerer(abstain_below=0.0).answer(question, documents, confidence=1.3)
    >>> answer.text, answer.citations, answer.grounded, answer.abstained
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from streams.index.lexical import term_set
from streams.index.retrieval import DocumentHit

NOT_FOUND = "Not found in the indexed documents."
SUPPORTED_AT = 0.6  # share of a sentence's content terms that its cited passage must hold

_SENTENCE = re.compile(
    r"(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\betc\.)(?<!\bvs\.)(?<=[.!?])\s+(?=[A-Z0-9`'\"(\[])|\n\s*\n|\n(?=\s*[-*]\s)"
)
_CITATION = re.compile(r"\[(\d{1,2})\]")


@dataclass(frozen=True)
class Citation:
    """Passage ``[n]`` of an answer: which chunk of which document."""

    n: int
    chunk_id: str
    doc_id: str
    title: str


@dataclass(frozen=True)
class CheckedSentence:
    """One sentence of an answer and whether a passage it cites supports it."""

    text: str
    cited: tuple[int, ...]
    support: float
    supported: bool


@dataclass(frozen=True)
class Answer:
    text: str
    citations: tuple[Citation, ...]
    grounded: str  # "true" | "partial" | "false"
    abstained: bool
    confidence: float
    sentences: tuple[CheckedSentence, ...] = field(default_factory=tuple)
    method: str = "extractive"


def split_sentences(text: str) -> list[str]:
    """Sentences (and list items) of a passage, whitespace folded."""
    pieces = (" ".join(piece.split()) for piece in _SENTENCE.split(text))
    return [piece for piece in pieces if piece]


def support(sentence: str, passage: str) -> float:
    """Share of the sentence's content terms that the passage holds (1.0 for a sentence with none)."""
    wanted = term_set(_CITATION.sub(" ", sentence))
    if not wanted:
        return 1.0
    return len(wanted & term_set(passage)) / len(wanted)


def check_grounding(text: str, passages: Sequence[str]) -> tuple[tuple[CheckedSentence, ...], str]:
    """Each sentence of ``text`` checked against the passages it cites as ``[n]`` (1-based).

    A sentence that cites nothing, or only passages that do not hold it, is unsupported.
    """
    checked = []
    for sentence in split_sentences(text):
        cited = tuple(int(n) for n in _CITATION.findall(sentence) if 1 <= int(n) <= len(passages))
        best = max((support(sentence, passages[n - 1]) for n in cited), default=0.0)
        checked.append(CheckedSentence(sentence, cited, round(best, 3), bool(cited) and best >= SUPPORTED_AT))
    supported = sum(s.supported for s in checked)
    if checked and supported == len(checked):
        grounded = "true"
    elif supported:
        grounded = "partial"
    else:
        grounded = "false"
    return tuple(checked), grounded


def evidence_sentences(documents: Sequence[DocumentHit]) -> Iterator[tuple[int, int, int, str, frozenset[str]]]:
    """(passage number [n], place in the passage, document rank, sentence, title terms) of every evidence sentence."""
    n = 0
    for rank, document in enumerate(documents):
        title_terms = term_set(document.title)
        for hit in document.evidence:
            n += 1
            for position, sentence in enumerate(split_sentences(hit.text or hit.snippet)):
                yield n, position, rank, sentence, title_terms


def citations_for(documents: Sequence[DocumentHit]) -> tuple[list[Citation], list[str]]:
    """Numbered passages of the documents' evidence: (citations, their full texts), [1] first."""
    citations: list[Citation] = []
    passages: list[str] = []
    for document in documents:
        for hit in document.evidence:
            citations.append(Citation(len(citations) + 1, hit.chunk_id, hit.doc_id, hit.title))
            passages.append(hit.text or hit.snippet)
    return citations, passages


def abstention(confidence: float) -> Answer:
    return Answer(NOT_FOUND, (), "true", True, confidence)


@dataclass(frozen=True)
class ExtractiveAnswerer:
    """Answers from the evidence's own sentences; abstains below ``abstain_below`` confidence.

    ``confidence`` is the answerability logit of the top document (see
    :class:`streams.models.ranker.Answerability`), the scale the threshold was calibrated on.
    """

    abstain_below: float
    documents: int = 3
    following: int = 1  # sentences after the best one that complete it (the fact often follows the topic)
    sources: int = 2  # documents the answer may quote (each document's best sentence, if close to the best)
    close: float = 0.8  # another document's best sentence joins when it scores at least this share of the best
    fragment_penalty: float = 0.3  # taken from a sentence that starts mid-sentence (a chunk boundary cut it)
    code_penalty: float = 0.3  # taken from an interactive example (>>>) or a line of mostly symbols
    name: str = "extractive"
    version: str = "3"

    def answer(self, question: str, documents: Sequence[DocumentHit], confidence: float = float("inf")) -> Answer:
        if not documents or confidence < self.abstain_below:
            return abstention(confidence)
        top = list(documents[: self.documents])
        citations, passages = citations_for(top)
        query = term_set(question)
        scored = []
        for n, position, rank, sentence, title_terms in evidence_sentences(top):
            words = term_set(sentence)
            if len(words) < 3:  # too short to answer alone, but it may complete the best sentence
                scored.append((-1.0, n, position, sentence, rank))
                continue
            overlap = len(query & (words | title_terms)) / max(1, len(query))
            in_sentence = len(query & words) / max(1, len(query))
            score = overlap + 0.5 * in_sentence + 0.6 / (1 + rank) + (0.1 if position == 0 else 0.0)
            score -= self.fragment_penalty * _cut(sentence) + self.code_penalty * _code(sentence)
            scored.append((score, n, position, sentence, rank))
        if not scored:
            return abstention(confidence)
        scored.sort(key=lambda item: -item[0])
        chosen: list[tuple[float, int, int, str, int]] = []
        quoted: set[int] = set()
        for item in scored:
            if len(quoted) == self.sources or item[0] < self.close * scored[0][0]:
                break
            if item[4] in quoted:
                continue
            quoted.add(item[4])
            same_passage = [other for other in scored if other[1] == item[1]]
            chosen.append(item)
            chosen += sorted(o for o in same_passage if item[2] < o[2] <= item[2] + self.following)
        chosen.sort(key=lambda item: (item[4], item[1], item[2]))
        text = " ".join(f"{_strip_end(sentence)} [{n}]." for _, n, _, sentence, _ in chosen)
        sentences, grounded = check_grounding(text, passages)
        used = {n for _, n, _, _, _ in chosen}
        return Answer(text, tuple(c for c in citations if c.n in used), grounded, False, confidence, sentences)


def _cut(sentence: str) -> float:
    """1.0 when ``sentence`` starts mid-sentence: a chunk boundary cut it (lower case or punctuation first)."""
    first = sentence.lstrip()[:1]
    return float(bool(first) and (first.islower() or first in ",;:)]}"))


def _code(sentence: str) -> float:
    """1.0 for an interactive example or a line that is mostly symbols."""
    symbols = sum(not (c.isalnum() or c.isspace()) for c in sentence)
    return float(">>>" in sentence or symbols > 0.25 * max(1, len(sentence)))


def _strip_end(sentence: str) -> str:
    return sentence.rstrip().rstrip(".")
