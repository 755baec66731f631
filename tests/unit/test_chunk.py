"""Chunking by tokens with overlap: invariants with a simple tokenizer, and the real WordPiece one."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.ingest.chunk import (
    SPECIAL_TOKENS,
    RegexTokenizer,
    TokenSpan,
    chunk_spans,
    chunk_text,
    default_tokenizer,
)

WORDS = st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12), min_size=1, max_size=400)


@given(WORDS, st.integers(min_value=8, max_value=64), st.integers(min_value=0, max_value=5))
def test_chunks_fit_cover_everything_and_are_substrings(words: list[str], max_tokens: int, overlap: int) -> None:
    text = " ".join(words)
    tokenizer = RegexTokenizer()
    chunks = chunk_text(text, tokenizer, max_tokens, overlap)
    assert chunks, "a non-empty text has at least one chunk"
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.token_count <= max_tokens
        assert text[chunk.start : chunk.end] == chunk.text
        assert len(tokenizer.spans(chunk.text)) == chunk.token_count - SPECIAL_TOKENS
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for span in tokenizer.spans(text):
        assert any(c.start <= span.start and span.end <= c.end for c in chunks), "no token is lost"
    for before, after in itertools.pairwise(chunks):
        assert after.start > before.start, "every chunk moves forward"


def test_overlap_repeats_the_tail_of_the_previous_chunk() -> None:
    text = " ".join(f"w{i}" for i in range(100))
    chunks = chunk_text(text, RegexTokenizer(), max_tokens=22, overlap=5)
    assert chunks[0].text.split()[-5:] == chunks[1].text.split()[:5]


def test_overlap_must_be_smaller_than_the_budget() -> None:
    with pytest.raises(ValueError, match="overlap"):
        chunk_spans("a b c", RegexTokenizer().spans("a b c"), max_tokens=4, overlap=2)


@settings(max_examples=40, deadline=None)
@given(st.text(min_size=1, max_size=3000).filter(lambda t: t.strip()))
def test_wordpiece_chunks_never_exceed_the_model_window(text: str) -> None:
    tokenizer = default_tokenizer()
    for chunk in chunk_text(text, tokenizer, max_tokens=32, overlap=4):
        assert len(tokenizer.spans(chunk.text)) + SPECIAL_TOKENS <= 32


def test_wordpiece_does_not_split_words_between_chunks() -> None:
    text = "internationalization " * 60
    chunks = chunk_text(text.strip(), default_tokenizer(), max_tokens=20, overlap=3)
    assert all(set(c.text.split()) == {"internationalization"} for c in chunks)


def test_wordpiece_spans_are_read_from_the_encoding_as_built_before() -> None:
    tokenizer = default_tokenizer()
    text = "Tokenization of unbelievably long words, e.g. JSONDecoder.raw_decode, and 42 numbers."
    encoding = tokenizer._tokenizer.encode(text, add_special_tokens=False)
    eager = [
        TokenSpan(start, end, not token.startswith("##"))
        for token, (start, end) in zip(encoding.tokens, encoding.offsets, strict=True)
    ]
    spans = tokenizer.spans(text)
    assert any(not span.word_start for span in eager), "the text has word pieces"
    assert list(spans) == eager
    assert [spans[i] for i in range(-len(eager), 0)] == eager
    assert spans[2:5] == eager[2:5]
    assert [list(s) for s in tokenizer.spans_batch([text, "short"])] == [eager, list(tokenizer.spans("short"))]
