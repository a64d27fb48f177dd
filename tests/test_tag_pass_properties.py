"""Properties of the tag passes on random tagged graphs (hypothesis).

Each tag pass changes metadata only: the graph structure is identical and ONNX Runtime
outputs are bit-identical before and after; and each is idempotent.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx_builders import run_ort

from graphtag.checks.compare import compare_topology
from graphtag.core import metadata
from graphtag.pipeline import registry

TAG_PASSES = ["tag-propagation", "multi-consumer", "residual-resolution"]
_UNARY = ["Relu", "Neg", "Sigmoid", "Abs"]
_BINARY = ["Add", "Mul", "Sub"]
_TAGS = [
    "/Net",
    "/Net/Block.0",
    "/Net/Block.0/Attention",
    "/Net/Block.0/Mlp",
    "/Net/Block.1",
    "/Net/Block.1/Attention",
    "/Net/Block.1/Mlp",
]


@st.composite
def tagged_graphs(draw) -> ir.Model:
    """A random DAG of elementwise ops; some nodes tagged, some not, some values shared."""
    x = ir.Value(name="x", shape=ir.Shape([2, 3]), type=ir.TensorType(ir.DataType.FLOAT))
    w = ir.Value(
        name="w",
        shape=ir.Shape([2, 3]),
        type=ir.TensorType(ir.DataType.FLOAT),
        const_value=ir.tensor(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3), name="w"),
    )
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": 21}, name="random")
    graph.register_initializer(w)
    available = [x, w]
    for index in range(draw(st.integers(1, 25))):
        binary = draw(st.booleans())
        op = draw(st.sampled_from(_BINARY if binary else _UNARY))
        inputs = [draw(st.sampled_from(available)) for _ in range(2 if binary else 1)]
        node = ir.Node("", op, inputs, name=f"n{index}", num_outputs=1)
        node.outputs[0].name = f"v{index}"
        if draw(st.integers(0, 3)):
            node.metadata_props[metadata.MODULE] = draw(st.sampled_from(_TAGS))
        node.metadata_props["pkg.test.keep"] = str(index)
        graph.append(node)
        available.append(node.outputs[0])
    produced = [v for v in available if v.producer() is not None]
    outputs = draw(st.lists(st.sampled_from(produced), min_size=1, max_size=3, unique=True))
    for value in outputs:
        value.shape = ir.Shape([2, 3])
        value.type = ir.TensorType(ir.DataType.FLOAT)
        graph.outputs.append(value)
    return ir.Model(graph, ir_version=10)


def _copy(model: ir.Model) -> ir.Model:
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


FEEDS = {"x": np.arange(6, dtype=np.float32).reshape(2, 3) / 7 - 0.4}


@pytest.mark.parametrize("pass_name", TAG_PASSES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=tagged_graphs())
def test_metadata_only_and_idempotent(pass_name, model):
    spec = registry().get(pass_name)
    before = _copy(model)
    kept = {n.name: n.metadata_props["pkg.test.keep"] for n in model.graph}
    tags = {n.name: metadata.node_tag(n) for n in model.graph if metadata.node_tag(n)}
    spec.create()(model)
    assert compare_topology(model, before).identical
    onnx.checker.check_model(ir.serde.serialize_model(model), full_check=True)
    for got, want in zip(run_ort(model, FEEDS), run_ort(before, FEEDS), strict=True):
        np.testing.assert_array_equal(got, want)
    # Other metadata survives, and tags present before are never changed.
    assert {n.name: n.metadata_props["pkg.test.keep"] for n in model.graph} == kept
    assert all(metadata.node_tag(n) == tags[n.name] for n in model.graph if n.name in tags)
    assert not spec.create()(model).modified
