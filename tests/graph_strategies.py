"""Random tagged graphs for the property tests (hypothesis strategies, no torch)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir
from hypothesis import strategies as st

from graphtag.core import metadata

FLOAT = ir.TensorType(ir.DataType.FLOAT)
FEEDS = {"x": np.arange(6, dtype=np.float32).reshape(2, 3) / 7 - 0.4}


@st.composite
def tagged_dags(
    draw,
    tags: Sequence[str],
    *,
    unary: Sequence[str] = ("Relu", "Neg", "Sigmoid", "Abs"),
    binary: Sequence[str] = ("Add", "Mul", "Sub"),
    nodes: tuple[int, int] = (1, 25),
    window: int | None = None,
    untagged: bool = True,
) -> ir.Model:
    """A random DAG of elementwise ops on ``x`` and an initializer ``w`` (all [2, 3]).

    Each node reads values drawn from those before it (the last ``window`` only, which
    makes the same op on the same operands recur), carries ``pkg.test.keep`` metadata
    and, with ``untagged``, one in four has no tag; one to three values are outputs.
    """
    x = ir.Value(name="x", shape=ir.Shape([2, 3]), type=FLOAT)
    w = ir.Value(
        name="w",
        shape=ir.Shape([2, 3]),
        type=FLOAT,
        const_value=ir.tensor(np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3), name="w"),
    )
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": 21}, name="random")
    graph.register_initializer(w)
    available = [x, w]
    for index in range(draw(st.integers(*nodes))):
        two = draw(st.booleans())
        op = draw(st.sampled_from(binary if two else unary))
        pool = available[-window:] if window else available
        inputs = [draw(st.sampled_from(pool)) for _ in range(2 if two else 1)]
        node = ir.Node("", op, inputs, name=f"n{index}", num_outputs=1)
        node.outputs[0].name = f"v{index}"
        node.outputs[0].type = FLOAT
        if not untagged or draw(st.integers(0, 3)):
            metadata.set_tag(node, draw(st.sampled_from(list(tags))))
        node.metadata_props["pkg.test.keep"] = str(index)
        graph.append(node)
        available.append(node.outputs[0])
    produced = [v for v in available if v.producer() is not None]
    outputs = draw(st.lists(st.sampled_from(produced), min_size=1, max_size=3, unique=True))
    for value in outputs:
        value.shape = ir.Shape([2, 3])
        graph.outputs.append(value)
    return ir.Model(graph, ir_version=10)


def copy_model(model: ir.Model) -> ir.Model:
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))
