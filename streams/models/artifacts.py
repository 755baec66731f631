"""Model artifacts are loaded only from verified, self-contained bytes.

Why this exists:
    An ONNX graph may keep tensors in "external data" files that ONNX Runtime reads by a path
    relative to where it runs: a classifier head whose initializer points at ``./.env`` loads
    fine and returns that file's bytes as its output. So a graph is accepted only when every
    tensor's data is inside the graph's own bytes, the bytes are no larger than a cap
    (``LLMOPS_MODEL_MAX_BYTES``), and their sha256 is the one the version record names.

Usage:
    >>> check_onnx_bytes(graph, max_bytes=settings.model_max_bytes)   # raises ControlRejected
    >>> verify_digest("model.onnx", graph, version.files)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

from streams.models.rejections import ControlRejected, Reason

# A few MB above the largest head we train (10 classes x 384 dims: about 16 KB) and above the
# largest inline artifact a control record can carry (900 KB under Kafka's 1 MiB message limit).
DEFAULT_MAX_BYTES = 4 * 1024 * 1024


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify_digest(name: str, data: bytes, digests: Mapping[str, str]) -> None:
    """``data`` must hash to ``digests[name]``; raises DIGEST_MISMATCH (or when no digest is named)."""
    expected = digests.get(name)
    if expected is None:
        raise ControlRejected(
            Reason.DIGEST_MISMATCH, f"the record names no sha256 for {name!r}; register the model again"
        )
    actual = sha256_hex(data)
    if actual != expected:
        raise ControlRejected(
            Reason.DIGEST_MISMATCH,
            f"{name} hashes to {actual[:16]}..., the record says {expected[:16]}...: the bytes were changed "
            "after registration; register the model again from its original file",
        )


def _graph_tensors(graph: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every tensor a graph holds: initializers, sparse ones, and its nodes' (subgraphs included)."""
    for tensor in graph.initializer:
        yield f"{where} initializer {tensor.name!r}", tensor
    for sparse in graph.sparse_initializer:
        yield f"{where} sparse initializer {sparse.values.name!r}", sparse.values
        yield f"{where} sparse initializer {sparse.indices.name!r}", sparse.indices
    yield from _node_tensors(graph.node, where)


def _node_tensors(nodes: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Tensors in node attributes (a Constant's value, say) and in subgraphs (If, Loop, Scan)."""
    for node in nodes:
        for attribute in node.attribute:
            label = f"{where} node {node.name or node.op_type!r} attribute {attribute.name!r}"
            if attribute.HasField("t"):
                yield label, attribute.t
            for tensor in attribute.tensors:
                yield label, tensor
            if attribute.HasField("sparse_tensor"):
                yield label, attribute.sparse_tensor.values
            if attribute.HasField("g"):
                yield from _graph_tensors(attribute.g, f"{label} subgraph")
            for subgraph in attribute.graphs:
                yield from _graph_tensors(subgraph, f"{label} subgraph")


def check_onnx_bytes(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Refuse a graph that is too large, does not parse, or keeps any tensor outside its bytes.

    Raises:
        ControlRejected: TOO_LARGE, MALFORMED or EXTERNAL_DATA, with what to do about it.
    """
    if len(data) > max_bytes:
        raise ControlRejected(
            Reason.TOO_LARGE,
            f"the ONNX graph is {len(data)} bytes, above the {max_bytes}-byte cap (LLMOPS_MODEL_MAX_BYTES); "
            "use a smaller model or raise the cap on every worker",
        )
    import onnx

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as error:  # noqa: BLE001 - protobuf's DecodeError (no type stubs installed)
        raise ControlRejected(Reason.MALFORMED, f"the artifact is not an ONNX model: {error!r}") from None
    tensors = list(_graph_tensors(model.graph, "graph"))
    for function in model.functions:
        tensors.extend(_node_tensors(function.node, f"function {function.name!r}"))
    for where, tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0:
            locations = [entry.value for entry in tensor.external_data if entry.key == "location"]
            raise ControlRejected(
                Reason.EXTERNAL_DATA,
                f"the ONNX {where} keeps its data in an external file {locations[:1]}; only self-contained "
                "graphs load (save the model with all tensors inside: onnx.save(..., save_as_external_data=False))",
            )
