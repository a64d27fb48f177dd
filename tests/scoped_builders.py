"""Hand-built tagged models for the selection and scoped-pass tests (no torch)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphtag.core import metadata
from graphtag.core.hierarchy import Hierarchy, ModuleInfo

FLOAT = ir.TensorType(ir.DataType.FLOAT)


def _hierarchy(tags: list[str]) -> Hierarchy:
    modules = {}
    for tag in tags:
        parent = tag.rsplit("/", 1)[0] or None
        segment = tag.rsplit("/", 1)[1]
        modules[tag] = ModuleInfo(
            tag, "" if parent is None else segment.lower(), f"tests.{segment.split('.')[0]}", parent
        )
    return Hierarchy(modules, {info.name: tag for tag, info in modules.items()})


class _Builder:
    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.x = ir.Value(name="x", shape=ir.Shape([2, 4]), type=FLOAT)
        self.graph = ir.Graph([self.x], [], nodes=[], opset_imports={"": 21}, name="layers")
        self.count = 0

    def init(self, name: str, shape: tuple[int, ...]) -> ir.Value:
        tensor = ir.tensor(self.rng.standard_normal(shape).astype(np.float32), name=name)
        value = ir.Value(name=name, shape=tensor.shape, type=FLOAT, const_value=tensor)
        self.graph.register_initializer(value)
        return value

    def node(self, op: str, inputs: list, tag: str | None, **attributes) -> ir.Value:
        attrs = [ir.Attr(k, ir.AttributeType.TENSOR, v) for k, v in attributes.items()]
        node = ir.Node("", op, inputs, attrs, name=f"n{self.count}_{op}", num_outputs=1)
        node.outputs[0].name = f"v{self.count}"
        node.outputs[0].type = FLOAT
        self.count += 1
        if tag is not None:
            metadata.set_tag(node, tag)
        self.graph.append(node)
        return node.outputs[0]

    def model(self, output: ir.Value, tags: list[str]) -> ir.Model:
        output.shape = ir.Shape([2, 4])
        self.graph.outputs.append(output)
        model = ir.Model(self.graph, ir_version=10, producer_name="graphtag-tests")
        _hierarchy(tags).attach(model)
        return model


def layers(n: int = 2) -> ir.Model:
    """``/M/Layer.i``: MatMul, Add, a duplicated Relu (what CSE merges), Add of the two,
    a Mul by a Constant placed outside the layers (``/M``) that every layer reads; then
    ``/M/Head``: a Sigmoid. Every node tagged, a hierarchy attached; shapes [2, 4]."""
    b = _Builder()
    scale = b.node("Constant", [], "/M", value=ir.tensor(np.full((4,), 0.5, np.float32)))
    h = b.x
    for i in range(n):
        tag = f"/M/Layer.{i}"
        w, bias = b.init(f"layer.{i}.w", (4, 4)), b.init(f"layer.{i}.b", (4,))
        a = b.node("Add", [b.node("MatMul", [h, w], tag), bias], tag)
        r = b.node("Add", [b.node("Relu", [a], tag), b.node("Relu", [a], tag)], tag)
        h = b.node("Mul", [r, scale], tag)
    out = b.node("Sigmoid", [h], "/M/Head")
    return b.model(out, ["/M", *(f"/M/Layer.{i}" for i in range(n)), "/M/Head"])


KEYED = ("/M/Leaf.d.c|d", "/M/Leaf.d.c", "/M/Leaf.d.e[0]", "/M/Leaf.d.e0")


def keyed() -> ir.Model:
    """ModuleDict keys holding pattern characters: ``/M/Leaf.d.c|d`` and
    ``/M/Leaf.d.e[0]``, each next to the tag its glob or ``|`` reading would select
    instead (``/M/Leaf.d.c``, ``/M/Leaf.d.e0``). Each leaf: MatMul by its own weight,
    Relu, in the order of :data:`KEYED`; then ``/M``: a Sigmoid."""
    b = _Builder()
    h = b.x
    for i, tag in enumerate(KEYED):
        h = b.node("Relu", [b.node("MatMul", [h, b.init(f"leaf.{i}.w", (4, 4))], tag)], tag)
    return b.model(b.node("Sigmoid", [h], "/M"), ["/M", *KEYED])


def called_twice() -> ir.Model:
    """``/M/Shared`` runs twice with ``/M/Mid`` between the calls (one tag for both calls,
    as the exporter records it): the data leaves the module and comes back."""
    b = _Builder()
    first = b.node("Relu", [b.node("Neg", [b.x], "/M/Shared")], "/M/Shared")
    middle = b.node("Exp", [first], "/M/Mid")
    second = b.node("Relu", [b.node("Neg", [middle], "/M/Shared")], "/M/Shared")
    return b.model(b.node("Add", [second, first], "/M"), ["/M", "/M/Shared", "/M/Mid"])


def with_body() -> ir.Model:
    """``/M/Branch`` holds an If whose branches read a value of ``/M/Pre`` from outside."""
    b = _Builder()
    pre = b.node("Relu", [b.x], "/M/Pre")
    cond = ir.Value(name="cond", shape=ir.Shape([]), type=ir.TensorType(ir.DataType.BOOL))
    b.graph.inputs.append(cond)

    def branch(op: str, name: str) -> ir.Graph:
        inner = ir.Node("", op, [pre], name=f"{name}_{op}", num_outputs=1)
        inner.outputs[0].name = f"{name}_out"
        inner.outputs[0].type = FLOAT
        metadata.set_tag(inner, "/M/Branch")
        return ir.Graph([], [inner.outputs[0]], nodes=[inner], name=name)

    node = ir.Node(
        "",
        "If",
        [cond],
        [
            ir.Attr("then_branch", ir.AttributeType.GRAPH, branch("Neg", "then")),
            ir.Attr("else_branch", ir.AttributeType.GRAPH, branch("Exp", "else")),
        ],
        name="n_if",
        num_outputs=1,
    )
    node.outputs[0].name = "branch_out"
    node.outputs[0].type = FLOAT
    metadata.set_tag(node, "/M/Branch")
    b.graph.append(node)
    out = b.node("Sigmoid", [node.outputs[0]], "/M")
    return b.model(out, ["/M", "/M/Pre", "/M/Branch"])


def node_view(node: ir.Node) -> tuple:
    """What "untouched" means for a node: op, inputs, outputs, attributes, metadata."""
    attributes = []
    for key, attr in sorted(node.attributes.items()):
        if attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS):
            graphs = [attr.value] if attr.type == ir.AttributeType.GRAPH else attr.value
            value = tuple(tuple(node_view(n) for n in g) for g in graphs)
        elif attr.type == ir.AttributeType.TENSOR:
            value = (attr.value.dtype, tuple(attr.value.shape), attr.value.tobytes())
        else:
            value = repr(attr.value)
        attributes.append((key, value))
    return (
        node.domain,
        node.op_type,
        tuple(v.name if v is not None else None for v in node.inputs),
        tuple(v.name for v in node.outputs),
        tuple(attributes),
        tuple(sorted(node.metadata_props.items())),
    )


def views(model: ir.Model) -> dict[str, tuple]:
    return {node.name: node_view(node) for node in model.graph}
