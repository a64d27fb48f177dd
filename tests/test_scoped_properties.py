"""Scoped CSE on random tagged graphs (hypothesis): the in-place pruning path gives the
model the full splice gives, and the model stays valid and computes the same outputs.

The graphs are built to have duplicates (few ops, few operands) and scopes whose nodes
are interleaved with other modules' nodes, where a rewired read may point forward.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from onnx_builders import run_ort
from scoped_builders import views

from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.pipeline import Scoped, registry
from graphtag.surgery import splice

_FLOAT = ir.TensorType(ir.DataType.FLOAT)
_TAGS = ["/Net/A", "/Net/B", "/Net/A/Inner"]
FEEDS = {"x": np.arange(6, dtype=np.float32).reshape(2, 3) / 7 - 0.4}


@st.composite
def graphs_with_duplicates(draw) -> ir.Model:
    x = ir.Value(name="x", shape=ir.Shape([2, 3]), type=_FLOAT)
    w = ir.Value(
        name="w",
        shape=ir.Shape([2, 3]),
        type=_FLOAT,
        const_value=ir.tensor(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3), name="w"),
    )
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": 21}, name="random")
    graph.register_initializer(w)
    available = [x, w]
    for index in range(draw(st.integers(2, 20))):
        binary = draw(st.booleans())
        op = draw(st.sampled_from(["Add", "Mul"] if binary else ["Relu", "Neg"]))
        # Operands from the last few values: the same op on the same operands recurs.
        pool = available[-3:]
        inputs = [draw(st.sampled_from(pool)) for _ in range(2 if binary else 1)]
        node = ir.Node("", op, inputs, name=f"n{index}", num_outputs=1)
        node.outputs[0].name = f"v{index}"
        node.outputs[0].type = _FLOAT
        metadata.set_tag(node, draw(st.sampled_from(_TAGS)))
        graph.append(node)
        available.append(node.outputs[0])
    produced = [v for v in available if v.producer() is not None]
    outputs = draw(st.lists(st.sampled_from(produced), min_size=1, max_size=3, unique=True))
    for value in outputs:
        value.shape = ir.Shape([2, 3])
        graph.outputs.append(value)
    return ir.Model(graph, ir_version=10)


def _copy(model: ir.Model) -> ir.Model:
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


def _cse() -> ir.passes.PassBase:
    return registry().get("ir.common-subexpression-elimination").create({})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=graphs_with_duplicates(), pattern=st.sampled_from(["/Net/A", "/Net/B", "*/A|*/B"]))
def test_scoped_cse_in_place_equals_the_full_splice(model, pattern):
    reference, full = _copy(model), _copy(model)
    tags = {metadata.node_tag(n) for n in model.graph}
    if pattern == "/Net/B" and "/Net/B" not in tags:
        with pytest.raises(GraphtagError, match="matches no module"):
            Scoped(_cse(), pattern)(model)
        return
    in_place = Scoped(_cse(), pattern)(model)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(splice._Wiring, "pruned", lambda self, graph: None)
        spliced = Scoped(_cse(), pattern)(full)
    assert in_place.modified == spliced.modified
    event(f"pruned in place: {in_place.stats.get('nodes_removed', 0) > 0}")
    assert views(model) == views(full)
    assert sorted(model.graph.initializers) == sorted(full.graph.initializers)
    assert [v.name for v in model.graph.outputs] == [v.name for v in reference.graph.outputs]
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    for got, want in zip(run_ort(model, FEEDS), run_ort(reference, FEEDS)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
