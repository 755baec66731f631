"""The lexical normaliser's remembered term sets say what the term lists say."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.index.lexical import term_set, terms

WORDS = st.sampled_from(
    ["Copying", "directory", "trees", "shutil.copytree", "JSONDecoder.raw_decode", "the", "a", "HTTPServer", "42", "x"]
)


@given(st.lists(st.one_of(WORDS, st.text(max_size=12)), max_size=20).map(" ".join))
def test_the_term_set_of_a_text_is_the_set_of_its_terms(text: str) -> None:
    assert term_set(text) == set(terms(text))
    assert term_set(text) == set(terms(text))  # remembered: the same answer the second time


def test_term_sets_stem_drop_stop_words_and_keep_identifiers_whole_and_split() -> None:
    assert term_set("Copying the directory trees with shutil.copytree") == {
        "copi",
        "directori",
        "tree",
        "shutil.copytree",
        "shutil",
        "copytre",
    }
