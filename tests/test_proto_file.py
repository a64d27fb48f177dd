"""proto_file: the model file written field by field is protobuf's own encoding, without
its whole serialization in memory."""

from __future__ import annotations

import tracemalloc

import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper
from onnx_builders import tagged_mlp

import graphtag
from graphtag.core import proto_file


def _rich_model() -> onnx.ModelProto:
    """Every kind of field graphtag's files carry: subgraphs, a local function, embedded
    and external initializers, value_info, metadata on model, nodes and values."""
    then_branch = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"], name="then_relu")],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e"], name="else_neg")],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2])],
    )
    nodes = [
        helper.make_node("Twice", ["x"], ["y"], name="call", domain="local"),
        helper.make_node(
            "If", ["c"], ["z"], name="branch", then_branch=then_branch, else_branch=else_branch
        ),
        helper.make_node("Add", ["z", "w"], ["out"], name="add"),
    ]
    for node in nodes:
        entry = node.metadata_props.add()
        entry.key, entry.value = "pkg.graphtag.module", f"/M/{node.name}"
    external = helper.make_tensor("big", TensorProto.FLOAT, [2], [0.0, 0.0])
    external.ClearField("float_data")
    external.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "m.onnx.data"), ("offset", "0"), ("length", "8")):
        item = external.external_data.add()
        item.key, item.value = key, value
    graph = helper.make_graph(
        nodes,
        "rich",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [2], [1.5, -2.0]), external],
        value_info=[helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])],
        doc_string="a graph",
    )
    function = helper.make_function(
        "local",
        "Twice",
        ["a"],
        ["b"],
        [helper.make_node("Add", ["a", "a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
        functions=[function],
        producer_name="test",
        doc_string="a model",
    )
    helper.set_model_props(model, {"pkg.graphtag.version": "0", "note": "é ✓"})
    return model


def test_bytes_are_protobufs_own_encoding(tmp_path):
    proto = _rich_model()
    path = tmp_path / "m.onnx"
    proto_file.write_proto(proto, path)
    assert path.read_bytes() == proto.SerializeToString()
    assert onnx.load(str(path), load_external_data=False) == proto


def test_over_the_protobuf_limit_nothing_is_written(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    graphtag.save(tagged_mlp(seed=1), path)
    before = path.read_bytes()
    size = len(ir.serde.serialize_model(tagged_mlp(seed=2)).SerializeToString())
    monkeypatch.setattr(proto_file, "MAX_MESSAGE_BYTES", size - 1)
    with pytest.raises(ValueError, match="exceeds maximum protobuf size"):
        proto_file.write_proto(ir.serde.serialize_model(tagged_mlp(seed=2)), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(graphtag.GraphtagError, match="exceeds maximum protobuf size"):
        graphtag.save(tagged_mlp(seed=2), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def _python_peak(action) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_file_is_never_held_whole_in_memory(tmp_path):
    nodes = [
        helper.make_node("Identity", [f"v{i}"], [f"v{i + 1}"], name=f"n{i}", doc_string="d" * 400)
        for i in range(20_000)
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("v0", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("v20000", TensorProto.FLOAT, [1])],
    )
    proto = helper.make_model(graph)
    size = proto.ByteSize()
    assert size > 8_000_000
    # The measure sees a whole serialization when there is one...
    whole = _python_peak(lambda: (tmp_path / "a.onnx").write_bytes(proto.SerializeToString()))
    assert whole >= size
    # ... and writing field by field holds one node at a time (plus the write buffer).
    streamed = _python_peak(lambda: proto_file.write_proto(proto, tmp_path / "b.onnx"))
    assert streamed < size / 4
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "a.onnx").read_bytes()
