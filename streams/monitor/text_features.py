"""Numeric features of a text that input drift is tested on.

Why this exists:
    Embedding drift says *that* inputs changed; these features say *how*, in words people act
    on: texts got longer, the vocabulary no longer spells them (unknown WordPiece tokens),
    another script or alphabet arrived (non-ASCII share), or personal data started to flow.

Features (one value per text):
    * ``length_chars``: characters.
    * ``tokens``: WordPiece tokens of the embedder's tokenizer (also summed as tokens processed).
    * ``unknown_token_rate``: share of those tokens that are ``[UNK]``.
    * ``non_ascii_share``: share of characters outside ASCII.
    * ``pii_hits``: redaction placeholders already in the text (chunks on ``docs.embeddings`` are
      redacted at ingestion), plus what :func:`streams.ingest.redact.redact_pii` finds in unredacted text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from streams.ingest.pipeline import redact_pii_counts_in
from streams.ingest.redact import redact_pii
from streams.monitor.drift import Floats

DRIFT_FEATURES = ("length_chars", "unknown_token_rate", "non_ascii_share", "pii_hits")


class UnknownTokenCounter(Protocol):
    """What feature extraction needs of a tokenizer."""

    def count_unknown_batch(self, texts: Sequence[str]) -> list[tuple[int, int]]:
        """(tokens, unknown tokens) per text."""
        ...


def pii_hits(text: str, redacted: bool = False) -> int:
    """PII hits in ``text``: placeholders left by earlier redaction, plus new finds unless ``redacted``."""
    placeholders = sum(redact_pii_counts_in(text).values())
    return placeholders if redacted else placeholders + sum(redact_pii(text).counts.values())


def text_features(texts: Sequence[str], tokenizer: UnknownTokenCounter, redacted: bool = False) -> dict[str, Floats]:
    """Each feature as an array with one value per text.

    Args:
        texts: The texts.
        tokenizer: Counts tokens and unknown tokens.
        redacted: The texts went through ingestion's redaction (chunks on docs.embeddings), so
            PII is counted by its placeholders alone; scanning again would find nothing new
            and would cost more than the rest of monitoring together.
    """
    counts = tokenizer.count_unknown_batch(texts) if texts else []
    tokens = np.array([total for total, _ in counts], dtype=np.float64)
    unknown = np.array([missing for _, missing in counts], dtype=np.float64)
    return {
        "length_chars": np.array([len(t) for t in texts], dtype=np.float64),
        "tokens": tokens,
        "unknown_token_rate": np.divide(unknown, tokens, out=np.zeros_like(unknown), where=tokens > 0),
        "non_ascii_share": np.array(
            [(len(t) - len(t.encode("ascii", "ignore"))) / len(t) if t else 0.0 for t in texts], dtype=np.float64
        ),
        "pii_hits": np.array([pii_hits(t, redacted) for t in texts], dtype=np.float64),
    }
