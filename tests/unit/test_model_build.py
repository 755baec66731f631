"""Building the fp32 and int8 graphs from the shipped packages, and how close their vectors are."""

from pathlib import Path

import numpy as np
import pytest

from streams.index.embed import OnnxEmbedder
from streams.index.embedder_build import ModelFiles, ensure_models
from streams.ingest.chunk import default_tokenizer_path

TEXTS = [
    "Return a new list containing all items from the iterable in ascending order.",
    "Open a gzip-compressed file in binary or text mode.",
    "Create and return a temporary directory.",
    "The cat sat on the mat.",
] * 3


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return ensure_models(tmp_path_factory.mktemp("models"))


def embed(graph: Path) -> np.ndarray:
    return OnnxEmbedder(graph, default_tokenizer_path(), workers=1).embed(TEXTS)


def test_built_graphs_are_cached_by_their_inputs(files: ModelFiles) -> None:
    assert files.fp32.exists() and files.int8.exists()
    assert ensure_models(files.fp32.parent) == files
    assert files.int8.stat().st_size < files.fp32.stat().st_size / 3


def test_int8_graph_stays_close_to_the_fp32_reference(files: ModelFiles) -> None:
    reference = embed(files.fp32)
    shipped = OnnxEmbedder.default(workers=1).embed(TEXTS)
    quantized = embed(files.int8)
    assert float((reference * shipped).sum(1).min()) > 0.995, "fp32 weights replace the int8-dequantized ones"
    assert float((reference * quantized).sum(1).mean()) >= 0.99


def test_each_layer_attention_is_one_fused_kernel(files: ModelFiles) -> None:
    import onnx

    fp32_ops = [node.op_type for node in onnx.load(str(files.fp32)).graph.node]
    int8_ops = [node.op_type for node in onnx.load(str(files.int8)).graph.node]
    assert fp32_ops.count("Attention") == 6 and "Softmax" not in fp32_ops
    assert int8_ops.count("QAttention") == 6 and "MatMulInteger" in int8_ops


def test_int8_vectors_do_not_depend_on_what_is_embedded_alongside(files: ModelFiles) -> None:
    embedder = OnnxEmbedder(files.int8, default_tokenizer_path(), workers=2)
    alone = np.stack([embedder.embed([text])[0] for text in TEXTS[:4]])
    assert np.array_equal(embedder.embed(TEXTS)[:4], alone)
    assert np.array_equal(embedder.embed(TEXTS[:4][::-1])[::-1], alone)
