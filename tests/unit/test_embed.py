"""The ONNX embedder: pooling, normalization, batch invariance, versioning, thread priority."""

import os
import threading

import numpy as np
import pytest

from streams.index.embed import OnnxEmbedder, mean_pool_normalize, model_version
from streams.index.embedder_build import default_graph_path
from streams.ingest.chunk import default_tokenizer_path


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return OnnxEmbedder.default(workers=2)


def test_mean_pooling_ignores_padding_and_normalizes() -> None:
    hidden = np.array([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0]], dtype=np.int64)
    np.testing.assert_allclose(mean_pool_normalize(hidden, mask), [[1.0, 0.0]])


def test_vectors_are_unit_length_and_384_wide(embedder: OnnxEmbedder) -> None:
    vectors = embedder.embed(["a short text", "another, rather longer sentence about files and folders"])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_the_same_text_gives_the_same_vector_alone_or_in_any_batch(embedder: OnnxEmbedder) -> None:
    texts = [f"sentence number {i} " * (1 + i % 7) for i in range(11)]
    alone = np.stack([embedder.embed([t])[0] for t in texts])
    together = embedder.embed(texts)
    shuffled = embedder.embed(texts[::-1])[::-1]
    assert np.array_equal(alone, together) and np.array_equal(alone, shuffled)


def test_related_texts_are_closer_than_unrelated_ones(embedder: OnnxEmbedder) -> None:
    a, b, c = embedder.embed(["Compress data with gzip.", "Write a gzip-compressed file.", "The cat sat on a mat."])
    assert float(a @ b) > float(a @ c) + 0.2


def test_version_is_the_sha256_of_graph_tokenizer_and_pooling(embedder: OnnxEmbedder) -> None:
    assert embedder.version == model_version(default_graph_path(), default_tokenizer_path())
    assert len(embedder.version) == 64
    assert model_version(default_graph_path(), default_tokenizer_path(), {"mode": "cls"}) != embedder.version


def test_no_text_gives_an_empty_matrix(embedder: OnnxEmbedder) -> None:
    assert embedder.embed([]).shape == (0, 384)


def test_a_niceness_runs_the_model_in_threads_of_lower_priority_with_the_same_vectors(embedder: OnnxEmbedder) -> None:
    polite = OnnxEmbedder.default(workers=1, niceness=5)
    texts = ["bulk chunk one", "bulk chunk two"]
    seen: list[int] = []
    real_run = polite._run

    def run(ids: list[int]) -> np.ndarray:
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return real_run(ids)

    polite._run = run  # type: ignore[method-assign]  # observe the thread each run happens in
    assert np.array_equal(polite.embed(texts), embedder.embed(texts))
    assert seen == [os.getpriority(os.PRIO_PROCESS, 0) + 5] * 2
