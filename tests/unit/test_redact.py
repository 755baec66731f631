"""PII redaction: one example per kind, Luhn, false positives that must not fire, counting."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.ingest.redact import luhn_valid, redact_pii


@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        ("write to jane.doe+x@mail.example.org today", "write to [EMAIL] today", {"email": 1}),
        ("call +1 (555) 123-4567 or 030 1234 5678", "call [PHONE] or [PHONE]", {"phone": 2}),
        ("card 4111-1111-1111-1111 ok", "card [CARD] ok", {"card": 1}),
        ("hosts 10.0.0.12 and 2001:db8::8a2e:370:7334", "hosts [IP] and [IP]", {"ip": 2}),
        ("key AKIAIOSFODNN7EXAMPLE and token=abcdef0123456789", "key [SECRET] and token=[SECRET]", {"secret": 2}),
        ("ghp_" + "a" * 36, "[SECRET]", {"secret": 1}),
    ],
)
def test_each_kind_is_redacted_and_counted(text: str, expected: str, counts: dict[str, int]) -> None:
    result = redact_pii(text)
    assert result.text == expected
    assert result.counts == counts


@pytest.mark.parametrize(
    "text",
    [
        "Python 3.11.7 was released on 2023-12-04.",
        "range(10, 20) returns 10 numbers; PEP 8 allows 79 columns",
        "slice a[1:2] and the :: operator",
        "1234 5678 9012 3456 fails the Luhn check",
        "version 3.11.7 and 2.0 of the library",
    ],
)
def test_code_versions_and_dates_are_not_pii(text: str) -> None:
    assert redact_pii(text).counts == {}


def test_only_the_selected_kinds_are_redacted() -> None:
    result = redact_pii("a@b.io 10.1.2.3", kinds=["ip"])
    assert result.text == "a@b.io [IP]"
    assert result.counts == {"ip": 1}


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        ("4111111111111111", True),
        ("4111111111111112", False),
        ("79927398713", True),
        ("0", True),
        ("18", True),
        ("19", False),
    ],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


@given(st.text())
def test_redaction_is_idempotent(text: str) -> None:
    once = redact_pii(text).text
    again = redact_pii(once)
    assert again.text == once
    assert again.counts == {}
