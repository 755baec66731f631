"""Text for the lexical (BM25) side of the index: what Milvus's ``standard`` analyzer cannot do.

Why this exists:
    Milvus Lite's BM25 ``Function`` only has the ``standard`` analyzer, and its stemming and
    stop-word filters are accepted but change nothing. So documents and queries are normalised
    here, the same way, before they reach the text field or a BM25 search: lower case, English
    stop words dropped, words stemmed (Snowball), and code identifiers kept whole *and* split
    into their parts (``JSONDecoder.raw_decode`` -> ``jsondecoder.raw_decode json decoder raw
    decode``), so a user who types an option name and one who types its words both match.

Usage:
    >>> lexical_text("Copying directory trees", title="shutil.copytree")
    'shutil.copytree shutil copytre shutil.copytree shutil copytre copi directori tree'
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

import snowballstemmer

# Words too common in questions and docstrings to say anything about a document.
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its itself
    just me more most my myself no nor not now of off on once only or other our ours ourselves out
    over own same she should so some such than that the their theirs them themselves then there
    these they this those through to too under until up very was we were what when where which
    while who whom why will with would you your yours yourself yourselves use used using want get
    way python""".split()  # noqa: SIM905 - a word list reads better as text
)

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*|\d+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
# A Snowball stemmer keeps the word it works on in the instance, so two threads sharing one corrupt
# each other's word (IndexError: string index out of range): each thread gets its own.
_STEMMERS = threading.local()


@lru_cache(maxsize=65_536)
def _stem(word: str) -> str:
    stemmer = getattr(_STEMMERS, "english", None)
    if stemmer is None:
        stemmer = _STEMMERS.english = snowballstemmer.stemmer("english")
    return str(stemmer.stemWord(word))


@lru_cache(maxsize=65_536)
def _terms_of(token: str) -> tuple[str, ...]:
    """The index terms of one token: an identifier whole (when it has parts) and its stemmed parts."""
    parts = [part.lower() for piece in re.split(r"[._]+", token) for part in _CAMEL.findall(piece)]
    words = tuple(_stem(part) for part in parts if part not in STOP_WORDS and len(part) > 1)
    lowered = token.lower()
    if len(parts) > 1 and len(lowered) <= 64:
        return (lowered, *words)
    return words


def terms(text: str) -> list[str]:
    """Normalised terms of ``text``, in order (what BM25 counts)."""
    return [term for token in _WORD.findall(text) for term in _terms_of(token)]


@lru_cache(maxsize=16_384)
def term_set(text: str) -> frozenset[str]:
    """The distinct terms of ``text``: ``set(terms(text))``, remembered for texts seen again.

    Ranking features and answers compare questions with the same retrieved chunks, titles and
    sentences request after request; each distinct token is looked up once.
    """
    return frozenset().union(*map(_terms_of, set(_WORD.findall(text))))


def lexical_text(text: str, title: str = "", max_bytes: int = 65_535) -> str:
    """The text-field value for a chunk: its title's terms, twice (the title counts), then the text's."""
    title_terms = " ".join(terms(title))
    body = " ".join(terms(text))
    value = f"{title_terms} {title_terms} {body}".strip() if title_terms else body
    encoded = value.encode("utf-8")
    if len(encoded) <= max_bytes:
        return value
    return encoded[:max_bytes].decode("utf-8", "ignore").rsplit(" ", 1)[0]


def query_text(question: str) -> str:
    """The BM25 query for ``question`` ('' when it has no term worth searching)."""
    return " ".join(terms(question))
