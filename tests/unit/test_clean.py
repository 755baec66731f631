"""The cleaner: HTML to text, Unicode normalization, control characters, whitespace."""

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from streams.ingest.clean import clean_text, drop_control_chars, html_to_text, looks_like_html, normalize_text


def test_html_becomes_visible_text_without_scripts() -> None:
    html = (
        "<html><head><title>T</title><style>p{}</style></head><body><p>Hello&nbsp;<b>world</b></p>"
        "<script>alert(1)</script><ul><li>one</li><li>two &amp; three</li></ul></body></html>"
    )
    assert clean_text(html) == "Hello world\n\none\n\ntwo & three"


def test_plain_text_with_angle_brackets_is_not_treated_as_html() -> None:
    text = "Return <class 'int'> when a < b and b > c."
    assert not looks_like_html(text)
    assert clean_text(text) == text


def test_nfkc_folds_ligatures_and_full_width_and_drops_invisible_characters() -> None:
    assert normalize_text("\ufb01le ＡＢＣ\u200b zero\u00adwidth\x00\x07") == "file ABC zerowidth"


def test_whitespace_is_collapsed_and_paragraphs_kept() -> None:
    assert normalize_text("  a \t b  \r\n\r\n\r\n\r\n c\u2028d  ") == "a b\n\nc\nd"


@given(st.text(st.characters(exclude_categories=[])))
def test_dropping_controls_matches_a_test_of_every_character(text: str) -> None:
    dropped = {"Cc", "Cf", "Cs", "Co", "Cn"}
    expected = "".join(c for c in text if c in "\n\t" or unicodedata.category(c) not in dropped)
    assert drop_control_chars(text) == expected


@given(st.text())
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once


@given(st.text())
def test_output_has_no_control_or_format_characters_and_no_edge_whitespace(text: str) -> None:
    cleaned = clean_text(text)
    assert all(c == "\n" or unicodedata.category(c) not in {"Cc", "Cf", "Cs"} for c in cleaned)
    assert cleaned == cleaned.strip()
    assert "  " not in cleaned
    assert "\n\n\n" not in cleaned
    cleaned.encode("utf-8")  # always encodable: no lone surrogates


@given(st.lists(st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1), min_size=1, max_size=8))
def test_words_inside_html_tags_survive(words: list[str]) -> None:
    html = "<div>" + "".join(f"<p>{w}</p>" for w in words) + "</div>"
    assert html_to_text(html).split() == words
