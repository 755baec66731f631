"""The learned ranker: its name features, listwise training, and rankers that read fewer features."""

from __future__ import annotations

import numpy as np
import pytest

from streams.index.lexical import term_set
from streams.index.retrieval import FEATURES, name_features, rank_documents
from streams.index.vectorstore import Candidate
from streams.models.ranker import OnnxRanker, ranker_graph, train_ranker

NAME_FEATURES = ("name_match", "title_depth", "private_name", "special_method", "private_module")


def names(title: str, question: str) -> dict[str, float]:
    words = {w.lower() for w in question.replace("?", " ").split()}
    return dict(zip(NAME_FEATURES, name_features(title, words, term_set(question)), strict=True))


def test_the_name_features_read_what_a_dotted_title_says() -> None:
    assert FEATURES[-len(NAME_FEATURES) :] == NAME_FEATURES
    assert names("tempfile.mkstemp", "mkstemp text flag") == {
        "name_match": 1.0,
        "title_depth": 2.0,
        "private_name": 0.0,
        "special_method": 0.0,
        "private_module": 0.0,
    }
    assert names("tempfile._mkstemp_inner", "mkstemp text flag")["private_name"] == 1.0
    assert names("tempfile._mkstemp_inner", "mkstemp text flag")["name_match"] == 0.0
    assert names("zipfile.ZipFile.__init__", "zipfile mode x") == {
        "name_match": 0.0,
        "title_depth": 3.0,
        "private_name": 0.0,  # a special method is not private
        "special_method": 1.0,
        "private_module": 0.0,
    }
    assert names("_pydecimal.localcontext", "raise decimal precision in a block")["private_module"] == 1.0
    # A name asked for in another form counts too: the stem of "compressing" is the name's only term.
    assert names("gzip.compress", "compressing bytes in memory")["name_match"] == 1.0


def test_a_title_that_is_not_a_dotted_name_is_one_part() -> None:
    found = names("Copying directory trees", "copying directory trees")
    assert found["title_depth"] == 1.0 and found["name_match"] == 1.0  # all of its terms are asked for
    assert found["private_module"] == 0.0 and names("_Notes on v1.2", "notes")["private_module"] == 0.0


def synthetic_groups(seed: int, questions: int = 60) -> list[tuple[np.ndarray, np.ndarray]]:
    """Questions of 20 candidates; feature 0 (plus noise) decides which one is relevant, feature 1 is noise."""
    rng = np.random.default_rng(seed)
    groups = []
    for _ in range(questions):
        features = rng.normal(size=(20, 2)).astype(np.float32)
        labels = np.zeros(20, dtype=np.int64)
        labels[int(np.argmax(features[:, 0] + 0.3 * rng.normal(size=20)))] = 1
        groups.append((features, labels))
    return groups


def test_listwise_training_puts_the_relevant_candidate_first_and_explains_it_exactly() -> None:
    trained = train_ranker(synthetic_groups(0), ("signal", "noise"))
    assert trained.coefficients["signal"] > 5 * abs(trained.coefficients["noise"])
    ranker = OnnxRanker(trained.onnx, name="test", version="1")
    assert ranker.features == ("signal", "noise")
    firsts = []
    for features, labels in synthetic_groups(1):
        scores, attributions = ranker.score(features)
        np.testing.assert_allclose(attributions.sum(axis=1), scores, rtol=1e-5, atol=1e-5)  # bias 0: exact
        firsts.append(labels[int(np.argmax(scores))] == 1)
    assert np.mean(firsts) >= 0.7  # held-out questions: the noise of the labels caps it below 1


def test_training_without_a_relevant_candidate_says_so() -> None:
    features = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="no question has a relevant document"):
        train_ranker([(features, np.zeros(3, dtype=np.int64))], ("a", "b"))


def candidate(doc_id: str, dense: float, bm25_rank: int | None) -> Candidate:
    return Candidate(
        chunk_id=f"{doc_id}#0",
        doc_id=doc_id,
        chunk_index=0,
        title=doc_id,
        text=f"text of {doc_id}",
        dense=dense,
        bm25=0.0 if bm25_rank is None else 10.0 - bm25_rank,
        dense_rank=0,
        bm25_rank=bm25_rank,
    )


def test_a_ranker_trained_on_fewer_features_reads_only_its_own_columns() -> None:
    # A version from before the name features existed: it reads dense and rrf, in its own order.
    older = ("rrf", "dense")
    graph = ranker_graph(
        np.zeros(2, np.float32), np.ones(2, np.float32), np.asarray([0.0, 1.0], np.float32), 0.0, older
    )
    ranker = OnnxRanker(graph, name="older", version="1")
    found = rank_documents("q", [candidate("a.low", 0.2, 0), candidate("b.high", 0.9, None)], ranker, None, None)
    assert [d.doc_id for d in found] == ["b.high", "a.low"]  # by cosine alone, as it was trained
    assert set(found[0].attributions) == set(older) and set(found[0].features) == set(FEATURES)
    assert found[0].attributions["dense"] == pytest.approx(0.9)


def test_a_ranker_reading_an_unknown_feature_is_refused_by_name() -> None:
    graph = ranker_graph(
        np.zeros(1, np.float32), np.ones(1, np.float32), np.ones(1, np.float32), 0.0, ("from_the_future",)
    )
    ranker = OnnxRanker(graph, name="newer", version="2")
    with pytest.raises(ValueError, match=r"from_the_future.*llmops models train-ranker"):
        rank_documents("q", [candidate("a", 0.5, 0)], ranker, None, None)
