"""PII redaction: emails, phone numbers, card numbers (Luhn-checked), IP addresses, secrets.

Why this exists:
    Chunks are embedded, indexed and shown to users and models; personal data and credentials
    must not travel past ingestion. Each hit is replaced by a typed placeholder (``[EMAIL]``,
    ``[CARD]``...) so that text stays readable and the redaction is visible, and each kind is
    counted so that monitoring can see PII rates.

Notes:
    Patterns favour precision: a card number must pass the Luhn check, a phone number needs
    7 to 15 digits with separators, an IP must parse with :mod:`ipaddress`. Secrets are matched
    by well-known token shapes and by ``key = value`` assignments to secret-like names.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

PLACEHOLDERS = {
    "secret": "[SECRET]",
    "email": "[EMAIL]",
    "card": "[CARD]",
    "ip": "[IP]",
    "phone": "[PHONE]",
}

_SECRET_TOKENS = re.compile(
    r"-----BEGIN (?:[A-Z ]+ )?PRIVATE KEY-----[\s\S]*?-----END (?:[A-Z ]+ )?PRIVATE KEY-----"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key id
    r"|\bsk-(?:proj-|live-|test-)?[A-Za-z0-9_-]{20,}"  # OpenAI / Stripe style
    r"|\bgh[pousr]_[A-Za-z0-9]{36,}\b"  # GitHub tokens
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|\bAIza[0-9A-Za-z_-]{35}\b"  # Google API key
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWT
)
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b((?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|password|passwd|token)"
    r"\s*[:=]\s*[\"']?)(?!\[SECRET\])([^\s\"']{8,})"
)
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_CARD_CANDIDATE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6_CANDIDATE = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_PHONE_CANDIDATE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w-])"
)


@dataclass(frozen=True)
class Redaction:
    """Redacted text and the number of hits per PII kind."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)


def luhn_valid(digits: str) -> bool:
    """Luhn checksum of a digit string (card numbers)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _is_card(match: re.Match[str]) -> bool:
    digits = re.sub(r"\D", "", match.group())
    return 13 <= len(digits) <= 19 and luhn_valid(digits) and len(set(digits)) > 1


def _is_ip(match: re.Match[str]) -> bool:
    try:
        address = ipaddress.ip_address(match.group())
    except ValueError:
        return False
    # "::" or "1:2" style fragments parse as IPv6 but are mostly code, not addresses.
    return address.version == 4 or match.group().count(":") >= 3


def _is_phone(match: re.Match[str]) -> bool:
    text = match.group()
    digits = re.sub(r"\D", "", text)
    if not 7 <= len(digits) <= 15:
        return False
    # Dotted or dashed triples like 2024-01-31 or 1.2.3 are dates and versions, not phones.
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) or re.fullmatch(r"\d{1,3}(?:\.\d{1,3}){1,3}", text):
        return False
    return text.startswith("+") or "(" in text or len(digits) >= 9 or bool(re.search(r"\d{3}[ .-]\d{4}$", text))


def _secret_assignment(match: re.Match[str]) -> str:
    return match.group(1) + PLACEHOLDERS["secret"]


_Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], bool] | None]
_RULES: dict[str, tuple[_Rule, ...]] = {
    "secret": ((_SECRET_TOKENS, None),),
    "email": ((_EMAIL, None),),
    "card": ((_CARD_CANDIDATE, _is_card),),
    "ip": ((_IPV4, _is_ip), (_IPV6_CANDIDATE, _is_ip)),
    "phone": ((_PHONE_CANDIDATE, _is_phone),),
}
ORDER = ("secret", "email", "card", "ip", "phone")


def redact_pii(text: str, kinds: Iterable[str] = ORDER) -> Redaction:
    """Replace every PII hit of the given kinds with its placeholder, and count them.

    Kinds run in a fixed order (secrets first, phones last) whatever order they are given in,
    so that a card number is never half-eaten by the phone pattern.
    """
    wanted = set(kinds)
    counts: dict[str, int] = {}
    for kind in ORDER:
        if kind not in wanted:
            continue
        hits = 0
        if kind == "secret":
            text, assignments = _SECRET_ASSIGNMENT.subn(_secret_assignment, text)
            hits += assignments
        for pattern, accept in _RULES[kind]:
            placeholder = PLACEHOLDERS[kind]

            def substitute(
                match: re.Match[str],
                accept: Callable[[re.Match[str]], bool] | None = accept,
                placeholder: str = placeholder,
            ) -> str:
                nonlocal hits
                if accept is None or accept(match):
                    hits += 1
                    return placeholder
                return match.group()

            text = pattern.sub(substitute, text)
        if hits:
            counts[kind] = hits
    return Redaction(text=text, counts=counts)
