"""Data exploration: a profile of a set of documents before (or instead of) ingesting them.

Why this exists:
    The first stage of the LLM lifecycle is looking at the data: how long documents are, where
    they come from, which scripts and languages they use, how many are broken, duplicated or
    full of PII, and which ones are outliers. ``llmops profile`` answers that for a JSONL file
    or a topic range with the same validation, cleaning, redaction and dedup code as ingestion,
    so its rates predict what the pipeline will do.
"""

from __future__ import annotations

import math
import re
import statistics
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.ingest.chunk import RegexTokenizer
from streams.ingest.clean import looks_like_html
from streams.ingest.dedup import DedupIndex, DocState
from streams.ingest.pipeline import IngestConfig, IngestPipeline, IngestRecord, _Prepared
from streams.ingest.validate import Rejection
from streams.kafka.avro import AvroCodec
from streams.records import DuplicateKind, RawDocument, SourceCoordinates

_STOPWORDS = {
    "en": {"the", "and", "of", "to", "is", "in", "that", "it", "for", "with", "this", "are", "be"},
    "de": {"der", "die", "und", "das", "ist", "nicht", "mit", "ein", "eine", "zu", "den", "von"},
    "fr": {"le", "la", "les", "et", "est", "des", "une", "un", "pour", "dans", "que", "pas"},
    "es": {"el", "la", "los", "las", "y", "es", "de", "que", "en", "un", "una", "para", "por"},
    "it": {"il", "lo", "gli", "e", "di", "che", "un", "una", "per", "non", "sono", "della"},
    "pt": {"o", "os", "as", "e", "de", "que", "um", "uma", "para", "não", "com", "por"},
    "nl": {"de", "het", "een", "en", "van", "is", "dat", "niet", "met", "voor", "op", "zijn"},
}
_WORD = re.compile(r"[^\W\d_]+")


def detect_script(text: str) -> str:
    """Dominant writing system of the letters: ascii, latin, cyrillic, greek, cjk, arabic, ..."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return "none"
    if all(c.isascii() for c in letters):
        return "ascii"
    scripts: Counter[str] = Counter()
    for char in letters:
        name = unicodedata.name(char, "UNKNOWN").split(" ")[0]
        scripts["cjk" if name in {"CJK", "HIRAGANA", "KATAKANA", "HANGUL"} else name.lower()] += 1
    return scripts.most_common(1)[0][0]


def detect_language(text: str) -> str:
    """ISO 639-1 code by stopword share for a few European languages, else 'und' (undetermined)."""
    words = [w.lower() for w in _WORD.findall(text[:5000])]
    if len(words) < 5:
        return "und"
    scores = {lang: sum(w in stops for w in words) / len(words) for lang, stops in _STOPWORDS.items()}
    best = max(scores, key=lambda lang: scores[lang])
    return best if scores[best] >= 0.08 else "und"


def percentiles(values: list[int], points: Iterable[int] = (1, 5, 25, 50, 75, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles, plus min, max and mean."""
    if not values:
        return {}
    ordered = sorted(values)
    result = {
        f"p{p}": float(ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]) for p in points
    }
    result.update(min=float(ordered[0]), max=float(ordered[-1]), mean=round(statistics.fmean(ordered), 1))
    return result


@dataclass
class Profile:
    """Everything ``llmops profile`` reports."""

    records: int = 0
    valid: int = 0
    deletions: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    lengths: list[int] = field(default_factory=list)
    sources: Counter[str] = field(default_factory=Counter)
    tenants: Counter[str] = field(default_factory=Counter)
    scripts: Counter[str] = field(default_factory=Counter)
    languages: Counter[str] = field(default_factory=Counter)
    html: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    pii: Counter[str] = field(default_factory=Counter)
    docs_with_pii: int = 0
    outliers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        valid = max(self.valid, 1)
        return {
            "records": self.records,
            "valid": self.valid,
            "deletions": self.deletions,
            "rejected": dict(self.rejected.most_common()),
            "length_chars": percentiles(self.lengths),
            "sources": dict(self.sources.most_common(20)),
            "tenants": dict(self.tenants.most_common(20)),
            "scripts": dict(self.scripts.most_common()),
            "languages": dict(self.languages.most_common()),
            "html_share": round(self.html / valid, 4),
            "exact_duplicate_rate": round(self.exact_duplicates / valid, 4),
            "near_duplicate_rate": round(self.near_duplicates / valid, 4),
            "pii_hits": dict(self.pii.most_common()),
            "docs_with_pii_share": round(self.docs_with_pii / valid, 4),
            "outliers": self.outliers[:20],
        }


def profile_records(
    records: Iterable[tuple[bytes | None, bytes | None]],
    codec: AvroCodec,
    config: IngestConfig | None = None,
) -> Profile:
    """Profile (key, value) records exactly as the ingest stage would see them."""
    config = config or IngestConfig()
    pipeline = IngestPipeline(config, codec, RegexTokenizer())
    dedup = DedupIndex({}, config.near_dup_max_hamming, config.near_dup_enabled)
    profile = Profile()
    ids: list[str] = []
    for offset, (key, value) in enumerate(records):
        profile.records += 1
        item = pipeline.prepare(IngestRecord(key, value, SourceCoordinates("profile", 0, offset, 0)))
        if isinstance(item, Rejection):
            profile.rejected[item.reason] += 1
            continue
        if isinstance(item, RawDocument):
            profile.deletions += 1
            continue
        _observe(profile, item, value or b"")
        ids.append(item.document.id)
        duplicate = dedup.find_duplicate(item.document.id, item.doc_hash, item.simhash if item.near_eligible else None)
        if duplicate is None:
            dedup.replace(item.document.id, DocState(item.doc_hash, item.simhash, 0, near_eligible=item.near_eligible))
        elif duplicate.kind is DuplicateKind.EXACT:
            profile.exact_duplicates += 1
        else:
            profile.near_duplicates += 1
    _find_outliers(profile, ids)
    return profile


def _observe(profile: Profile, item: _Prepared, value: bytes) -> None:
    document = item.document
    profile.valid += 1
    profile.lengths.append(len(item.text))
    profile.sources[document.source or "(none)"] += 1
    profile.tenants[document.tenant or "(none)"] += 1
    profile.scripts[detect_script(item.text)] += 1
    profile.languages[detect_language(item.text)] += 1
    if looks_like_html(document.text or ""):
        profile.html += 1
    if item.pii_counts:
        profile.docs_with_pii += 1
        profile.pii.update(item.pii_counts)


def _find_outliers(profile: Profile, ids: list[str]) -> None:
    """Documents whose log length is more than 3 standard deviations from the mean."""
    if len(profile.lengths) < 10:
        return
    logs = [math.log1p(n) for n in profile.lengths]
    mean, spread = statistics.fmean(logs), statistics.pstdev(logs) or 1.0
    scored = sorted(
        (
            (abs(value - mean) / spread, doc_id, length)
            for value, doc_id, length in zip(logs, ids, profile.lengths, strict=True)
        ),
        reverse=True,
    )
    profile.outliers = [
        {"id": doc_id, "length_chars": length, "z": round(z, 2)} for z, doc_id, length in scored if z > 3.0
    ]


def write_histogram(profile: Profile, path: Path, title: str = "Document length") -> Path:
    """PNG histogram of cleaned document lengths (log-scaled bins)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5), dpi=110)
    lengths = [max(1, n) for n in profile.lengths] or [1]
    bins = [10 ** (i / 10) for i in range(0, int(math.log10(max(lengths)) * 10) + 2)]
    axis.hist(lengths, bins=bins, color="#3b75af", edgecolor="white")
    axis.set_xscale("log")
    axis.set_xlabel("cleaned length (characters, log scale)")
    axis.set_ylabel("documents")
    stats = percentiles(profile.lengths)
    axis.set_title(
        f"{title}: {profile.valid} valid of {profile.records}; p50={stats.get('p50', 0):.0f}, "
        f"p95={stats.get('p95', 0):.0f}"
    )
    for name, colour in (("p50", "#d62728"), ("p95", "#ff7f0e")):
        if name in stats:
            axis.axvline(stats[name], color=colour, linestyle="--", label=name)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
