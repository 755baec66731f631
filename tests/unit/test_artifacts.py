"""Model artifacts load only from verified, self-contained bytes (issue 18, finding 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from streams.models.artifacts import check_onnx_bytes, sha256_hex, verify_digest
from streams.models.classifier import OnnxClassifier
from streams.models.rejections import ControlRejected, Reason

SECRET = b"LLMOPS_SASL_PASSWORD=hunter2"


def identity_head(initializer: TensorProto, *, in_subgraph: bool = False) -> bytes:
    """A 'classifier head' whose output is ``initializer`` (as the attack returns a file's bytes)."""
    vectors = helper.make_tensor_value_info("vectors", TensorProto.FLOAT, [None, 4])
    output = helper.make_tensor_value_info("probabilities", initializer.data_type, list(initializer.dims))
    if not in_subgraph:
        graph = helper.make_graph(
            [helper.make_node("Identity", [initializer.name], ["probabilities"])],
            "head",
            [vectors],
            [output],
            initializer=[initializer],
        )
    else:  # the tensor hides in a Constant node of an If branch
        branch = helper.make_graph(
            [helper.make_node("Constant", [], ["leaked"], value=initializer)],
            "branch",
            [],
            [helper.make_tensor_value_info("leaked", initializer.data_type, list(initializer.dims))],
        )
        condition = helper.make_tensor("condition", TensorProto.BOOL, [], [True])
        graph = helper.make_graph(
            [helper.make_node("If", ["condition"], ["probabilities"], then_branch=branch, else_branch=branch)],
            "head",
            [vectors],
            [output],
            initializer=[condition],
        )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())


def external_tensor(location: str, length: int) -> TensorProto:
    tensor = TensorProto(name="leak", data_type=TensorProto.UINT8, dims=[length])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def test_a_head_whose_initializer_reads_a_local_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before the fix ONNX Runtime loaded this graph from bytes and returned the file's contents.
    (tmp_path / ".env").write_bytes(SECRET)
    monkeypatch.chdir(tmp_path)
    graph = identity_head(external_tensor("./.env", len(SECRET)))
    with pytest.raises(ControlRejected, match="external file") as refused:
        head = OnnxClassifier(graph, ["a"])
        leaked = bytes(head._session.run(["probabilities"], {"vectors": np.zeros((1, 4), np.float32)})[0])
        pytest.fail(f"the graph loaded and read {leaked!r}")
    assert refused.value.reason is Reason.EXTERNAL_DATA
    assert "hunter2" not in str(refused.value)


def test_external_data_hidden_in_a_subgraph_constant_is_refused() -> None:
    with pytest.raises(ControlRejected) as refused:
        check_onnx_bytes(identity_head(external_tensor("/etc/passwd", 8), in_subgraph=True))
    assert refused.value.reason is Reason.EXTERNAL_DATA and "subgraph" in refused.value.detail


def test_an_external_location_without_the_data_location_flag_is_refused() -> None:
    tensor = external_tensor("../../secrets.bin", 4)
    tensor.data_location = TensorProto.DEFAULT
    with pytest.raises(ControlRejected) as refused:
        check_onnx_bytes(identity_head(tensor))
    assert refused.value.reason is Reason.EXTERNAL_DATA


def test_a_self_contained_graph_loads_and_answers() -> None:
    inside = helper.make_tensor("inside", TensorProto.FLOAT, [2], [0.25, 0.75])
    head = OnnxClassifier(identity_head(inside), ["a", "b"])
    assert head.probabilities(np.zeros((1, 4), np.float32)).tolist() == [0.25, 0.75]


def test_artifacts_above_the_cap_are_refused_before_parsing() -> None:
    inside = helper.make_tensor("inside", TensorProto.FLOAT, [1000], [0.0] * 1000)
    graph = identity_head(inside)
    check_onnx_bytes(graph, max_bytes=len(graph))
    with pytest.raises(ControlRejected, match="LLMOPS_MODEL_MAX_BYTES") as refused:
        OnnxClassifier(graph, ["a"], max_bytes=len(graph) - 1)
    assert refused.value.reason is Reason.TOO_LARGE


def test_bytes_that_are_not_onnx_are_malformed() -> None:
    with pytest.raises(ControlRejected) as refused:
        check_onnx_bytes(b"\xff\xff\xff not a protobuf")
    assert refused.value.reason is Reason.MALFORMED


def test_digests_are_checked_against_the_record() -> None:
    verify_digest("model.onnx", b"graph", {"model.onnx": sha256_hex(b"graph")})
    with pytest.raises(ControlRejected, match="changed after registration") as refused:
        verify_digest("model.onnx", b"graph!", {"model.onnx": sha256_hex(b"graph")})
    assert refused.value.reason is Reason.DIGEST_MISMATCH
    with pytest.raises(ControlRejected, match="names no sha256"):
        verify_digest("model.onnx", b"graph", {})
