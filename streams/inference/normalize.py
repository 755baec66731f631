"""Fold obfuscated text to the plain form a screen can read: NFKC, homoglyphs, leetspeak, spacing.

Why this exists:
    Attackers spell "ignore previous instructions" as ``іgnоrе`` (Cyrillic і, о, е), as
    ``1gn0r3``, with zero-width characters inside words, or in fullwidth letters. A screen that
    reads the raw text (a rule or an embedding) sees different tokens each time. Folding first
    gives the rules and the classifier one spelling to learn and match.

What it does, in order:
    1. Unicode NFKC (fullwidth and mathematical letters, ligatures become plain letters);
    2. format and control characters (zero-width space, joiners, bidi marks) are removed;
    3. confusables: Cyrillic and Greek letters that look like Latin ones become Latin, but only
       in words that mix them with Latin letters, or consist of look-alikes only in text that is
       mostly Latin-looking (so real Russian or Greek words stay as they are);
    4. leetspeak: ``0 1 3 4 5 7 8 @ $ ! |`` become letters in tokens that read as leet words
       (a digit between letters, or more letters than digits with two or more digits), and in
       every word with a letter once the text has two such words; numbers, versions, hex
       literals, ordinals and names like ``sha256`` or ``utf8`` stay as they are;
    5. whitespace: each run becomes one space, or one newline when it holds a line break (so
       line-anchored rules such as a markdown ``### New task`` header still see line starts).

    The function is pure and idempotent (``tests/unit/test_injection.py`` checks it with hypothesis).

Usage:
    >>> normalize_text("1gn0r3 аll\u200b prev1ous  instructions")
    'ignore all previous instructions'
"""

from __future__ import annotations

import re
import unicodedata

# Cyrillic and Greek letters that render like Latin ones (a small table from Unicode's
# confusables.txt, restricted to the look-alikes seen in homoglyph attacks).
CONFUSABLES: dict[str, str] = {
    # Cyrillic lower case
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ү": "y", "ɡ": "g", "ո": "n", "ս": "u",
    # Cyrillic upper case
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "У": "Y", "Х": "X", "І": "I", "Ї": "I", "Ј": "J", "Ѕ": "S", "Һ": "H",
    "Ԛ": "Q", "Ԝ": "W", "Ү": "Y",
    # Greek
    "α": "a", "β": "b", "γ": "y", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ω": "w", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H",
    "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Latin look-alikes outside ASCII that NFKC keeps
    "ı": "i", "ȷ": "j", "ł": "l", "ø": "o",
}  # fmt: skip

LEET: dict[str, str] = {
    "0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
    "@": "a", "$": "s", "!": "i", "|": "l",
}  # fmt: skip

_WORD = re.compile(r"\w+")
_TOKEN = re.compile(r"[A-Za-z0-9@$!|]+")
_KEEP = re.compile(
    r"\d+(?:st|nd|rd|th|s|k|m|g|x|px|ms|kb|mb|gb)?|0x[0-9a-f]+|[0-9a-f]{6,}|[a-z]+\d{2,}",
    re.IGNORECASE,
)
_SPACE = re.compile(r"\s+")


def _fold_confusables(word: str, latin_text: bool) -> str:
    look_alikes = sum(ch in CONFUSABLES for ch in word)
    if not look_alikes:
        return word
    letters = [ch for ch in word if ch.isalpha()]
    latin = sum(ch.isascii() for ch in letters)
    if latin or (latin_text and look_alikes == len(letters)):
        return "".join(CONFUSABLES.get(ch, ch) for ch in word)
    return word


def _latin_text(text: str) -> bool:
    # Latin letters (ASCII, or look-alikes inside words with ASCII letters) outnumber the others:
    # a word made only of look-alikes here is a disguised Latin word, while in Russian or Greek
    # text it is a real word. Folding never lowers this count, so a second pass decides the same.
    latin = other = 0
    for match in _WORD.finditer(text):
        letters = [ch for ch in match.group() if ch.isalpha()]
        mixed = any(ch.isascii() for ch in letters)
        counted = sum(ch.isascii() or (mixed and ch in CONFUSABLES) for ch in letters)
        latin, other = latin + counted, other + len(letters) - counted
    return latin > other


def _fold_leet(token: str, lenient: bool = False) -> str:
    core = token.rstrip("!|$@") if not lenient else token
    tail = token[len(core) :]
    if len(core) < (2 if lenient else 3) or (not lenient and _KEEP.fullmatch(core)):
        return token
    letters = sum(ch.isascii() and ch.isalpha() for ch in core)
    leet = [i for i, ch in enumerate(core) if ch in LEET]
    if not letters or not leet:
        return token
    interior = any(0 < i < len(core) - 1 and core[i - 1].isalpha() and core[i + 1].isalpha() for i in leet)
    leading = leet == [0] and core[0].isdigit() and core[1:].isalpha() and len(core) >= 3
    if lenient or interior or leading or (len(leet) >= 2 and letters >= len(leet)):
        return "".join(LEET.get(ch, ch) for ch in core) + tail
    return token


def _fold_leet_text(text: str) -> str:
    # In text with two or more clear leet words, every word with a letter and a leet character is
    # folded ("th3", "rul3$", "n0"): the writer is spelling in leet, not writing versions or names.
    strong = sum(_fold_leet(m.group()) != m.group() for m in _TOKEN.finditer(text))
    return _TOKEN.sub(lambda m: _fold_leet(m.group(), lenient=strong >= 2), text)


def _collapse(match: re.Match[str]) -> str:
    return "\n" if "\n" in match.group() else " "


def normalize_text(text: str) -> str:
    """The folded form of ``text`` (see the module docstring for the steps)."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if ch in "\n\t " or unicodedata.category(ch) not in {"Cf", "Cc"})
    latin_text = _latin_text(text)
    text = _WORD.sub(lambda m: _fold_confusables(m.group(), latin_text), text)
    text = _fold_leet_text(text)
    text = _SPACE.sub(_collapse, text).strip()
    # NFKC again: a fold can never produce a composable pair, but a removed format character
    # may have separated one (e.g. "e\u200b\u0301"); normalizing twice keeps the result stable.
    return unicodedata.normalize("NFKC", text)
