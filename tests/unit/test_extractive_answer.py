"""The extractive answerer prefers whole sentences to chunk-boundary fragments and doctest lines."""

from __future__ import annotations

from streams.index.retrieval import DocumentHit
from streams.index.vectorstore import Hit
from streams.inference.answer import ExtractiveAnswerer


def document(doc_id: str, text: str) -> DocumentHit:
    hit = Hit(f"{doc_id}#0", doc_id, 1.0, text[:80], doc_id, "", text=text)
    return DocumentHit(doc_id, doc_id, 1.0, (hit,))


def test_a_whole_sentence_beats_a_fragment_cut_by_a_chunk_boundary_with_the_same_words() -> None:
    # A chunk that starts mid-sentence: its first "sentence" is the tail of one the boundary cut.
    doc = document("a", "or the gzip file compresses data with the level given. The gzip module compresses data well.")
    answer = ExtractiveAnswerer(float("-inf"), sources=1, following=0).answer("how does gzip compress data", [doc])
    assert answer.text == "The gzip module compresses data well [1]."


def test_an_interactive_example_is_not_quoted_when_prose_answers() -> None:
    doc = document(
        "c", ">>> gzip.compress(data, level=9) b'...' is the result. It returns the data compressed as bytes."
    )
    answer = ExtractiveAnswerer(float("-inf"), sources=1, following=0).answer("gzip compress data bytes", [doc])
    assert ">>>" not in answer.text and "It returns the data compressed" in answer.text
