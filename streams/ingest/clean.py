"""Text cleaning: HTML to text, Unicode normalization, control characters, whitespace.

Why this exists:
    Upstream text arrives as HTML pages, copy-pasted PDFs and docstrings. Embeddings, dedup
    hashes and PII patterns all need one canonical form of the same words, so every document
    passes through ``clean_text`` before anything else looks at it.

Notes:
    HTML is converted only when the text looks like markup (known tags), because plain text
    such as ``<class 'int'>`` or ``a < b`` must survive untouched. NFKC folds compatibility
    forms (ligatures, full-width letters, non-breaking spaces) into their plain equivalents.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from html.parser import HTMLParser

_HTML_TAG = re.compile(
    r"</?(?:html|head|body|p|div|span|br|hr|a|b|i|u|em|strong|li|ul|ol|h[1-6]|table|thead|tbody|tr|td|th"
    r"|script|style|pre|code|blockquote|section|article|nav|header|footer|title|meta|img)\b[^>]*>",
    re.IGNORECASE,
)
_BLOCK_TAGS = frozenset(
    [
        "p",
        "div",
        "br",
        "hr",
        "li",
        "ul",
        "ol",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "table",
        "tr",
        "thead",
        "tbody",
        "pre",
        "blockquote",
        "section",
        "article",
        "header",
        "footer",
        "nav",
        "title",
    ]
)
_SKIPPED_TAGS = frozenset({"script", "style", "head", "noscript", "template"})
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_KEPT_CONTROLS = frozenset("\n\t")


class _TextExtractor(HTMLParser):
    """Collects the visible text of an HTML fragment, one line per block element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.parts.append(data)


def looks_like_html(text: str) -> bool:
    """True when the text contains at least one well-known HTML tag."""
    return _HTML_TAG.search(text) is not None


def html_to_text(html: str) -> str:
    """Visible text of an HTML document or fragment (scripts and styles dropped)."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    return "".join(extractor.parts)


@functools.lru_cache(maxsize=4096)
def _is_dropped_char(char: str) -> bool:
    if char in _KEPT_CONTROLS:
        return False
    # Cc: C0/C1 controls; Cf: format chars (zero-width spaces, BOM, bidi marks, soft hyphen);
    # Cs: lone surrogates that cannot be encoded; Co/Cn: private use and unassigned.
    return unicodedata.category(char) in {"Cc", "Cf", "Cs", "Co", "Cn"}


def drop_control_chars(text: str) -> str:
    """``text`` without control, format, surrogate, private-use and unassigned characters.

    Each distinct character is looked at once (a document uses a few dozen), not each of its
    thousands of positions: a Python test per character was a third of the ingest stage's CPU.
    """
    dropped = {ord(char): None for char in set(text) if _is_dropped_char(char)}
    return text.translate(dropped) if dropped else text


def normalize_text(text: str) -> str:
    """NFKC, drop control and format characters, tidy whitespace; idempotent."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
    # Drop before and after NFKC: removing a zero-width joiner can let NFKC compose the
    # neighbours, and NFKC can expand a character into one we drop.
    text = unicodedata.normalize("NFKC", drop_control_chars(text))
    text = drop_control_chars(text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    text = _BLANK_LINES.sub("\n\n", "\n".join(lines))
    return text.strip()


def clean_text(text: str) -> str:
    """The canonical text of a document: HTML stripped when present, then normalized."""
    if looks_like_html(text):
        text = html_to_text(text)
    return normalize_text(text)
