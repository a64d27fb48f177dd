"""graphtag.surgery.extraction and ``graphtag extract``: every module of the zoo, hand-built cases.

Zoo check, for EVERY module at every level of every model: the extracted model passes
``onnx.checker.check_model(full_check=True)``, runs in onnxruntime, and, fed with the
boundary values of ONE run of the full model (every intermediate value exposed as an
extra output), reproduces the full model's values of its outputs (<= 1e-5).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from cli_helpers import assert_clean_failure, run_cli
from onnx_builders import local_function, tagged_mlp
from zoo import ZOO
from zoo_exports import model_feeds, zoo_export, zoo_variant

import graphtag
from graphtag.analysis.boundaries import compute_boundaries
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.core.hierarchy import Hierarchy, ModuleInfo, is_ancestor_or_self
from graphtag.surgery.extraction import EXTRACTED_MODULE, extract_all, extract_module

# Dynamo (optimizer on) for every zoo model that exports with it, TorchScript otherwise,
# plus three models exported with optimize=False.
ZOO_CASES = [
    f"{name}:{'dynamo' if 'dynamo' in entry.exporters else entry.exporters[0]}"
    for name, entry in ZOO.items()
]
NOOPT_CASES = ["bert:noopt", "gpt2:noopt", "siblings:noopt"]
FLOAT = ir.TensorType(ir.DataType.FLOAT)


@dataclasses.dataclass
class Case:
    model: ir.Model  # weights in memory, so models serialize to bytes for onnxruntime
    values: dict[str, np.ndarray]  # every value of one full-model run, by name


def session(model: ir.Model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    data = ir.to_proto(model).SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def run_all_values(model: ir.Model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every main-graph value of one run: a copy of the model outputs all of them."""
    from graphtag.surgery.extraction import infer_main_graph_types

    full = model.clone()
    inferred = infer_main_graph_types(full)
    exposed = {v.name for v in full.graph.outputs}
    for node in full.graph:
        for value in node.outputs:
            if value.type is None and value.name in inferred:
                value.type, value.shape = inferred[value.name]
            if value.name and value.name not in exposed and value.type is not None:
                full.graph.outputs.append(value)
                exposed.add(value.name)
    sess = session(full)
    values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    return {**values, **feeds}


def module_failures(model: ir.Model, values: dict[str, np.ndarray]) -> tuple[int, list[str]]:
    """(modules checked, one line per module that fails any of the three checks)."""
    failures, count = [], 0
    for tag, extracted in extract_all(model):
        count += 1
        try:
            boundary = [*extracted.graph.inputs, *extracted.graph.outputs]
            untyped = [v.name for v in boundary if v.type is None or v.shape is None]
            assert not untyped, f"no type or shape: {untyped}"
            proto = ir.to_proto(extracted)
            onnx.checker.check_model(proto, full_check=True)
            sess = session(extracted)
            feeds = {i.name: values[i.name] for i in sess.get_inputs()}
            for spec, got in zip(sess.get_outputs(), sess.run(None, feeds)):
                np.testing.assert_allclose(got, values[spec.name], rtol=1e-5, atol=1e-5)
        except Exception as exc:
            failures.append(f"{tag}: {type(exc).__name__}: {str(exc)[:300]}")
    return count, failures


@functools.cache
def load_case(label: str) -> Case:
    """A zoo model as ``name:exporter`` (or ``name:noopt``), loaded once per session."""
    model, inputs = zoo_variant(label)
    return Case(model, run_all_values(model, model_feeds(model, inputs)))


@pytest.mark.parametrize("label", ZOO_CASES + NOOPT_CASES)
def test_every_module_checks_runs_and_matches_full_model(label):
    case = load_case(label)
    count, failures = module_failures(case.model, case.values)
    assert count == len(compute_boundaries(case.model)) > 1
    assert not failures, f"{len(failures)}/{count} modules fail:\n" + "\n".join(failures)


def test_source_untouched_and_weights_shared():
    model = load_case("bert:dynamo").model
    before = ir.to_proto(model).SerializeToString()
    tensors = {id(v.const_value) for v in model.graph.initializers.values()}
    for _, extracted in extract_all(model):
        for value in extracted.graph.initializers.values():
            assert id(value.const_value) in tensors  # shared by reference, never copied
    assert ir.to_proto(model).SerializeToString() == before


def test_module_called_twice_gives_all_calls():
    model = load_case("siblings:dynamo").model
    boundaries = compute_boundaries(model)
    shared = boundaries["/SiblingsNet/Block.shared"]
    once = boundaries["/SiblingsNet/Block.left"]
    assert len(shared.nodes) == 2 * len(once.nodes)
    extracted = extract_module(model, "/SiblingsNet/Block.shared", boundaries=boundaries)
    assert len(extracted.graph) == len(shared.nodes)
    # one input (the first call's), one output (the second call's); the first call's
    # output feeds the second call inside the extracted model.
    assert len(extracted.graph.inputs) == len(extracted.graph.outputs) == 1
    assert extracted.metadata_props[EXTRACTED_MODULE] == "/SiblingsNet/Block.shared"
    tags = [metadata.node_tag(n) or "" for n in extracted.graph]
    assert all(is_ancestor_or_self("/SiblingsNet/Block.shared", t) for t in tags)


# --- hand-built models ------------------------------------------------------------


def _node(op, inputs, tag, name, *, attributes=(), domain="", num_outputs=1):
    node = ir.Node(domain, op, inputs, attributes, name=name, num_outputs=num_outputs)
    for index, out in enumerate(node.outputs):
        out.name = name if num_outputs == 1 else f"{name}_{index}"
    if tag:
        node.metadata_props[metadata.MODULE] = tag
    return node


def _input(name, shape=(2, 4), dtype=ir.DataType.FLOAT) -> ir.Value:
    return ir.Value(name=name, shape=ir.Shape(list(shape)), type=ir.TensorType(dtype))


def _model(inputs, outputs, nodes, initializers=(), opsets=None, functions=()) -> ir.Model:
    graph = ir.Graph(
        inputs, outputs, nodes=nodes, initializers=initializers, opset_imports=opsets or {"": 21}
    )
    return ir.Model(graph, ir_version=10, functions=functions)


def _initializer(name, array) -> ir.Value:
    tensor = ir.tensor(array, name=name)
    return ir.Value(name=name, shape=tensor.shape, type=FLOAT, const_value=tensor)


def shared_constants_model() -> ir.Model:
    """A Constant of /M/A and an untagged Constant read by /M/B; an initializer of both."""
    x = _input("x")
    w = _initializer("w", np.linspace(-1, 1, 16, dtype=np.float32).reshape(4, 4))
    value = ir.tensor(np.full((4,), 0.5, np.float32))
    c = _node("Constant", [], "/M/A", "c", attributes=[ir.AttrTensor("value", value)])
    k = _node("Constant", [], None, "k", attributes=[ir.AttrTensor("value", value)])
    a1 = _node("MatMul", [x, w], "/M/A", "a1")
    a2 = _node("Add", [a1.outputs[0], c.outputs[0]], "/M/A", "a2")
    b1 = _node("MatMul", [a2.outputs[0], w], "/M/B", "b1")
    b2 = _node("Add", [b1.outputs[0], c.outputs[0]], "/M/B", "b2")
    b3 = _node("Mul", [b2.outputs[0], k.outputs[0]], "/M/B", "b3")
    b3.outputs[0].type, b3.outputs[0].shape = FLOAT, ir.Shape([2, 4])
    return _model([x], [b3.outputs[0]], [c, k, a1, a2, b1, b2, b3], [w])


def control_flow_model() -> ir.Model:
    """/M/B is an If whose branches read /M/A's output and an initializer from outside;
    its then-branch holds a Loop (body inputs are local) and nodes tagged /M/B/Inner."""
    x, cond = _input("x"), _input("cond", (), ir.DataType.BOOL)
    w = _initializer("w", np.full((2, 4), 0.25, np.float32))
    a = _node("Relu", [x], "/M/A", "a")
    it, cin = _input("it", (), ir.DataType.INT64), _input("cin", (), ir.DataType.BOOL)
    v = _input("v")
    body_cond = _node("Identity", [cin], "/M/B/Inner", "body_cond")
    body_v = _node("Add", [v, a.outputs[0]], "/M/B/Inner", "body_v")
    body = ir.Graph(
        [it, cin, v],
        [body_cond.outputs[0], body_v.outputs[0]],
        nodes=[body_cond, body_v],
        name="body",
    )
    trips = ir.tensor(np.array(3, np.int64))
    m = _node("Constant", [], "/M/B/Inner", "m", attributes=[ir.AttrTensor("value", trips)])
    loop = _node(
        "Loop",
        [m.outputs[0], None, w],
        "/M/B/Inner",
        "loop",
        attributes=[ir.AttrGraph("body", body)],
    )
    then = ir.Graph([], [loop.outputs[0]], nodes=[m, loop], name="then")
    neg = _node("Mul", [a.outputs[0], w], None, "else_mul")
    otherwise = ir.Graph([], [neg.outputs[0]], nodes=[neg], name="else")
    branches = [ir.AttrGraph("then_branch", then), ir.AttrGraph("else_branch", otherwise)]
    cf = _node("If", [cond], "/M/B", "if", attributes=branches)
    out = _node("Neg", [cf.outputs[0]], "/M", "out")
    for value in (cf.outputs[0], out.outputs[0], loop.outputs[0], neg.outputs[0]):
        value.type, value.shape = FLOAT, ir.Shape([2, 4])
    return _model([x, cond], [out.outputs[0]], [a, cf, out], [w])


def function_model() -> ir.Model:
    """/M/B calls local function Twice, which calls local function Double."""
    fx = _input("fx")
    inner = _node("Add", [fx, fx], None, "d")
    double = local_function("Double", [fx], [inner])
    gx = _input("gx")
    call1 = _node("Double", [gx], None, "t1", domain="pkg.test")
    call2 = _node("Double", [call1.outputs[0]], None, "t2", domain="pkg.test")
    twice = local_function("Twice", [gx], [call1, call2], {"": 21, "pkg.test": 1})
    x = _input("x")
    a = _node("Relu", [x], "/M/A", "a")
    b = _node("Twice", [a.outputs[0]], "/M/B", "b", domain="pkg.test")
    b.outputs[0].type, b.outputs[0].shape = FLOAT, ir.Shape([2, 4])
    return _model(
        [x], [b.outputs[0]], [a, b], opsets={"": 21, "pkg.test": 1}, functions=[double, twice]
    )


def _consistent(model: ir.Model, feeds: dict[str, np.ndarray]) -> None:
    count, failures = module_failures(model, run_all_values(model, feeds))
    assert count and not failures, failures


def test_constants_shared_across_modules():
    model = shared_constants_model()
    extracted = extract_module(model, "/M/B")
    graph = extracted.graph
    assert [v.name for v in graph.inputs] == ["a2"]
    assert [v.name for v in graph.outputs] == ["b3"]
    assert list(graph.initializers) == ["w"]
    assert graph.initializers["w"].const_value is model.graph.initializers["w"].const_value
    assert [n.op_type for n in graph] == ["Constant", "Constant", "MatMul", "Add", "Mul"]
    _consistent(model, {"x": np.arange(8, dtype=np.float32).reshape(2, 4)})


@pytest.mark.parametrize("flag", [True, False])
def test_if_with_outer_scope_references(flag):
    model = control_flow_model()
    extracted = extract_module(model, "/M/B")
    assert sorted(v.name for v in extracted.graph.inputs) == ["a", "cond"]
    assert list(extracted.graph.initializers) == ["w"]
    onnx.checker.check_model(ir.to_proto(extracted), full_check=True)
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    _consistent(model, {"x": x, "cond": np.array(flag)})


def test_tag_only_inside_a_body_is_reported():
    with pytest.raises(GraphtagError, match="only tags nodes inside control-flow bodies"):
        extract_module(control_flow_model(), "/M/B/Inner")


def test_local_functions_are_copied_transitively():
    model = function_model()
    assert [f.name for f in extract_module(model, "/M/B").functions.values()] == [
        "Double",
        "Twice",
    ]
    assert not extract_module(model, "/M/A").functions
    _consistent(model, {"x": np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)})


def test_unknown_tag_names_the_closest():
    with pytest.raises(GraphtagError, match="unknown module tag") as info:
        extract_module(tagged_mlp(), "/MLP/Layer.fc3")
    assert "closest: /MLP/Layer.fc1" in str(info.value) or "/MLP/Layer.fc2" in str(info.value)


def test_module_without_nodes_is_reported():
    model = tagged_mlp()
    modules = {
        "/MLP": ModuleInfo("/MLP", "", "MLP"),
        "/MLP/Unused": ModuleInfo("/MLP/Unused", "unused", "Layer", parent="/MLP"),
    }
    Hierarchy(modules, {"": "/MLP", "unused": "/MLP/Unused"}).attach(model)
    with pytest.raises(GraphtagError, match="has no nodes"):
        extract_module(model, "/MLP/Unused")


def test_a_module_s_subtree_stays_though_a_child_has_no_node():
    """The extracted module's whole subtree is kept (a child whose nodes the exporter
    folded away is still part of it); modules outside the module and its ancestors
    with no node in the extraction are not."""
    model = tagged_mlp()
    modules = {
        "/MLP": ModuleInfo("/MLP", "", "MLP"),
        "/MLP/Layer.fc1": ModuleInfo("/MLP/Layer.fc1", "fc1", "Layer", parent="/MLP"),
        "/MLP/Layer.fc2": ModuleInfo("/MLP/Layer.fc2", "fc2", "Layer", parent="/MLP"),
        "/MLP/Layer.fc2/Dropout": ModuleInfo(
            "/MLP/Layer.fc2/Dropout", "fc2.drop", "Dropout", parent="/MLP/Layer.fc2"
        ),
    }
    names = {"": "/MLP", "fc1": "/MLP/Layer.fc1", "fc2": "/MLP/Layer.fc2"}
    Hierarchy(modules, {**names, "fc2.drop": "/MLP/Layer.fc2/Dropout"}).attach(model)
    cut = Hierarchy.from_model(extract_module(model, "/MLP/Layer.fc2"))
    assert list(cut.modules) == ["/MLP", "/MLP/Layer.fc2", "/MLP/Layer.fc2/Dropout"]
    assert cut.name_to_tag == {
        "": "/MLP",
        "fc2": "/MLP/Layer.fc2",
        "fc2.drop": "/MLP/Layer.fc2/Dropout",
    }


def test_untyped_boundary_values_get_inferred_types():
    model = tagged_mlp()  # intermediate values carry no type
    extracted = extract_module(model, "/MLP/Layer.fc2")
    (value,) = extracted.graph.inputs
    assert value.name == "t2" and value.dtype == ir.DataType.FLOAT
    assert value.shape == ir.Shape([2, 8])
    assert model.graph.node(2).outputs[0].type is None  # the source is not annotated


def test_untypable_boundary_value_is_reported():
    model = tagged_mlp()
    relu = model.graph.node(2)
    relu.domain, relu.op_type = "pkg.unknown", "Mystery"
    model.graph.opset_imports["pkg.unknown"] = 1
    with pytest.raises(GraphtagError, match="no type known for boundary value"):
        extract_module(model, "/MLP/Layer.fc2")


def test_boundary_value_with_a_type_but_no_shape_gets_its_shape():
    model = tagged_mlp()
    model.graph.node(2).outputs[0].type = ir.TensorType(ir.DataType.FLOAT)  # no shape
    (value,) = extract_module(model, "/MLP/Layer.fc2").graph.inputs
    assert value.shape == ir.Shape([2, 8])


@pytest.mark.parametrize(
    ("raised", "shown"),
    [
        (ValueError("outer\nsecond line"), "(outer)"),  # no cause: the error itself
        (RuntimeError(""), "(RuntimeError)"),  # no message: its type
    ],
)
def test_a_graph_onnx_ir_cannot_copy_is_one_line_naming_the_module(monkeypatch, raised, shown):
    """onnx_ir refuses to copy a damaged graph (a value owned by two graphs): one line
    naming the module and onnx_ir's reason (its cause's first line when chained)."""
    model = tagged_mlp()

    def refuse(self):
        raise raised

    monkeypatch.setattr(ir.GraphView, "clone", refuse)
    with pytest.raises(GraphtagError) as info:
        extract_module(model, "/MLP/Layer.fc2")
    assert str(info.value) == (
        f"module /MLP/Layer.fc2: cannot be extracted, the graph is malformed {shown}"
    )

    def refuse_chained(self):
        try:
            raise ValueError("value t2 belongs to graph 'then'\ndetails")
        except ValueError as inner:
            raise RuntimeError("copy failed") from inner

    monkeypatch.setattr(ir.GraphView, "clone", refuse_chained)
    with pytest.raises(GraphtagError, match=r"malformed \(value t2 belongs to graph 'then'\)$"):
        extract_module(model, "/MLP/Layer.fc2")


def test_typed_boundaries_need_no_shape_inference(monkeypatch):
    """Shape inference (on the whole model: costly on a large one) runs only for
    boundary values lacking a type or a shape."""
    from graphtag.surgery import extraction

    model = tagged_mlp()
    for node in model.graph:
        for value in node.outputs:
            value.type = ir.TensorType(ir.DataType.FLOAT)
            value.shape = ir.Shape([2, 8 if node.op_type != "MatMul" or value.name == "t0" else 3])

    def refuse(*args, **kwargs):
        raise AssertionError("shape inference ran though every boundary value is typed")

    monkeypatch.setattr(extraction, "infer_main_graph_types", refuse)
    (value,) = extract_module(model, "/MLP/Layer.fc2").graph.inputs
    assert value.shape == ir.Shape([2, 8])


@pytest.mark.parametrize(
    ("attribute", "dtype", "shape"),
    [
        (ir.AttrTensor("value", ir.tensor(np.ones((2, 8), np.float32))), ir.DataType.FLOAT, [2, 8]),
        (ir.AttrFloat32("value_float", 1.5), ir.DataType.FLOAT, []),
        (ir.AttrInt64s("value_ints", [1, 2, 3]), ir.DataType.INT64, [3]),
    ],
)
def test_an_untyped_constant_output_is_typed_from_its_tensor(monkeypatch, attribute, dtype, shape):
    """A boundary output made by a Constant node takes its type and shape from the
    node's tensor: no shape inference over the whole model for it."""
    from graphtag.surgery import extraction

    model = tagged_mlp()
    constant = ir.Node("", "Constant", [], [attribute], name="c", num_outputs=1)
    constant.outputs[0].name = "c_out"
    metadata.set_tag(constant, "/MLP/Layer.fc1", "test")
    model.graph.insert_before(model.graph.node(0), constant)
    relu = model.graph.node(3)
    assert relu.op_type == "Relu"
    relu.outputs[0].type, relu.outputs[0].shape = ir.TensorType(ir.DataType.FLOAT), ir.Shape([2, 8])
    consumer = ir.Node("", "Identity", [constant.outputs[0]], name="reader", num_outputs=1)
    metadata.set_tag(consumer, "/MLP/Layer.fc2", "test")
    model.graph.append(consumer)
    consumer.outputs[0].name = "c_copy"
    model.graph.outputs.append(consumer.outputs[0])
    add = model.graph.node(2)
    add.outputs[0].type, add.outputs[0].shape = ir.TensorType(ir.DataType.FLOAT), ir.Shape([2, 8])

    def refuse(*args, **kwargs):
        raise AssertionError("shape inference ran for a Constant's output")

    monkeypatch.setattr(extraction, "infer_main_graph_types", refuse)
    extracted = extract_module(model, "/MLP/Layer.fc1")
    by_name = {v.name: v for v in extracted.graph.outputs}
    assert by_name["c_out"].dtype == dtype
    assert by_name["c_out"].shape == ir.Shape(shape)
    assert constant.outputs[0].type is None  # the source is not annotated


def _mystery_feeding(outputs: int, *, typed: bool = False) -> ir.Model:
    """tagged_mlp with an unknown op of ``outputs`` outputs between the two layers, all
    of them read by fc2's MatMul (typed without a shape when ``typed``)."""
    model = tagged_mlp()
    relu = model.graph.node(2)
    relu.domain, relu.op_type = "pkg.unknown", "Mystery"
    model.graph.opset_imports["pkg.unknown"] = 1
    mystery = ir.Node("pkg.unknown", "Mystery", relu.inputs, name="many", num_outputs=outputs)
    mystery.metadata_props[metadata.MODULE] = "/MLP"
    model.graph.insert_after(relu, mystery)
    matmul = model.graph.node(4)
    for k, value in enumerate(mystery.outputs):
        value.name = f"m{k}"
        if typed:
            value.type = ir.TensorType(ir.DataType.FLOAT)
    sink = ir.Node("", "Sum", [matmul.inputs[0], *mystery.outputs], name="sum", num_outputs=1)
    sink.metadata_props[metadata.MODULE] = "/MLP/Layer.fc2"
    model.graph.insert_before(matmul, sink)
    matmul.replace_input_with(0, sink.outputs[0])
    return model


@pytest.mark.parametrize(
    ("outputs", "shown"), [(4, "t2, m0, m1, m2, m3"), (5, "t2, m0, m1, m2, m3 ...")]
)
def test_untypable_boundary_values_are_named_up_to_five(outputs, shown):
    with pytest.raises(GraphtagError) as info:
        extract_module(_mystery_feeding(outputs), "/MLP/Layer.fc2")
    assert f"no type known for boundary value(s) {shown}, even after" in str(info.value)


def test_boundary_value_with_a_type_and_no_shape_anywhere_is_reported():
    model = _mystery_feeding(1, typed=True)
    model.graph.node(2).outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    with pytest.raises(
        GraphtagError, match=r"no shape \(rank\) known for boundary value\(s\) t2, m0,"
    ):
        extract_module(model, "/MLP/Layer.fc2")


@pytest.mark.parametrize("length", [5, 7])
def test_a_cycle_inside_a_module_is_one_line_naming_five_of_its_nodes(length):
    """A damaged file whose module's nodes form a cycle: refused, naming the cycle's
    first nodes (five at most)."""
    model = tagged_mlp()
    fc1_add = model.graph.node(1)
    chain, previous = [], fc1_add.outputs[0]
    for k in range(length):
        node = ir.Node("", "Identity", [previous], name=f"loop{k}", num_outputs=1)
        node.metadata_props[metadata.MODULE] = "/MLP/Layer.fc1"
        chain.append(node)
        previous = node.outputs[0]
    model.graph.insert_after(fc1_add, chain)
    chain[0].replace_input_with(0, chain[-1].outputs[0])  # close the loop
    with pytest.raises(GraphtagError) as info:
        extract_module(model, "/MLP/Layer.fc1")
    names = re.search(r"form a cycle \(([^)]*)\)", str(info.value))[1].split(", ")
    assert len(names) == min(length, 5) and set(names) <= {f"loop{k}" for k in range(length)}
    assert str(info.value).startswith("module /MLP/Layer.fc1: its nodes form a cycle")


def test_large_initializers_of_unknown_shape_are_still_read_by_shape_inference():
    """Large typed initializers go to shape inference as typed inputs (no weight
    serialized), but only with a shape: without one their data must be read."""
    model = tagged_mlp(hidden=128)  # fc1.weight: 2 KB, past the 1 KB cut
    weight = model.graph.initializers["fc1.weight"]
    weight.shape = None
    (value,) = extract_module(model, "/MLP/Layer.fc2").graph.inputs
    assert value.shape == ir.Shape([2, 128])


def test_shape_inference_sees_no_large_weight(monkeypatch):
    """Shape inference gets the model without its large weights (they become typed
    inputs): a multi-GB model is never serialized whole to type a boundary value."""
    model = tagged_mlp(hidden=128)  # fc1.weight 2 KB (large), fc1.bias 512 B (small)
    for name, size in (("at_the_cut", 1024), ("past_the_cut", 1025)):  # bytes
        tensor = ir.tensor(np.zeros(size, np.uint8), name=name)
        model.graph.register_initializer(
            ir.Value(name=name, shape=tensor.shape, type=ir.TensorType(tensor.dtype),
                     const_value=tensor)
        )  # fmt: skip
    seen = []
    real = onnx.shape_inference.infer_shapes

    def spy(proto, *args, **kwargs):
        seen.append(proto)
        return real(proto, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", spy)
    (value,) = extract_module(model, "/MLP/Layer.fc2").graph.inputs
    assert value.shape == ir.Shape([2, 128])  # t2: typed by the inference below
    (proto,) = seen
    assert {t.name for t in proto.graph.initializer} == {"fc1.bias", "at_the_cut"}
    assert {"fc1.weight", "fc2.weight", "past_the_cut"} <= {i.name for i in proto.graph.input}


def _gates(count: int) -> ir.Model:
    """``count`` If nodes (gate0, gate1, ...) of /M whose branches hold /M/Inner nodes."""
    x, cond = _input("x"), _input("cond", (), ir.DataType.BOOL)
    nodes, previous = [], x
    for k in range(count):
        branches = []
        for side in ("then", "else"):
            inner = _node("Relu" if side == "then" else "Neg", [previous], "/M/Inner",
                          f"g{k}_{side}")  # fmt: skip
            branches.append(ir.AttrGraph(f"{side}_branch", ir.Graph(
                [], [inner.outputs[0]], nodes=[inner], name=f"g{k}_{side}")))  # fmt: skip
        gate = _node("If", [cond], "/M", f"gate{k}", attributes=branches)
        nodes.append(gate)
        previous = gate.outputs[0]
    previous.type, previous.shape = FLOAT, ir.Shape([2, 4])
    return _model([x, cond], [previous], nodes)


@pytest.mark.parametrize(
    ("gates", "named"), [(3, "gate0, gate1, gate2"), (4, "gate0, gate1, gate2")]
)
def test_a_module_only_inside_bodies_names_three_enclosing_nodes(gates, named):
    with pytest.raises(GraphtagError) as info:
        extract_module(_gates(gates), "/M/Inner")
    assert f"inside control-flow bodies (of node(s) {named});" in str(info.value)


def test_unknown_tag_lists_at_most_five_closest_and_skips_untagged_nodes():
    model = tagged_mlp()
    del model.graph.node(2).metadata_props[metadata.MODULE]  # an untagged node
    tags = [f"/MLP/Layer.fc{k}" for k in range(3, 9)]
    modules = {t: ModuleInfo(t, t.rsplit("/", 1)[1], "Layer", parent="/MLP") for t in tags}
    modules["/MLP"] = ModuleInfo("/MLP", "", "MLP")
    Hierarchy(modules, {"": "/MLP", **{m.name: t for t, m in modules.items()}}).attach(model)
    with pytest.raises(GraphtagError, match="unknown module tag") as info:
        extract_module(model, "/MLP/Layer.fcX")
    close = str(info.value).split("closest: ")[1].split(", ")
    assert len(close) == 5 and set(close) <= {*tags, "/MLP/Layer.fc1", "/MLP/Layer.fc2"}


def test_symbolic_shape_inference_types_what_onnx_s_does():
    from graphtag.surgery.extraction import infer_main_graph_types

    model = tagged_mlp()  # intermediate values untyped
    for symbolic in (False, True):
        found = infer_main_graph_types(model, symbolic=symbolic)
        assert found["t2"] == (ir.TensorType(ir.DataType.FLOAT), ir.Shape([2, 8])), symbolic


def test_symbolic_inference_giving_up_leaves_nothing_in_the_working_directory(
    tmp_path, monkeypatch
):
    """ONNX Runtime's symbolic inference saves the model as sym_shape_infer_temp.onnx in
    the current directory when it cannot infer every shape (an op it does not know):
    graphtag removes that leftover, and does not remove a file of that name that was
    there before."""
    from graphtag.surgery.extraction import infer_main_graph_types

    x = _input("x")
    mystery = _node("Mystery", [x], "/M", "mystery", domain="custom.x")
    relu = _node("Relu", [mystery.outputs[0]], "/M", "relu")
    relu.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    model = _model([x], [relu.outputs[0]], [mystery, relu], opsets={"": 18, "custom.x": 1})
    monkeypatch.chdir(tmp_path)
    assert infer_main_graph_types(model, symbolic=True) == {}  # it gave up
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "sym_shape_infer_temp.onnx").write_text("the user's")
    infer_main_graph_types(model, symbolic=True)
    assert [p.name for p in tmp_path.iterdir()] == ["sym_shape_infer_temp.onnx"]


def test_the_source_graph_s_own_metadata_is_not_copied():
    """Graph metadata describes the whole source graph (torch's exporter stores the
    program's signature there, O(model) bytes): an extraction, a new graph, has none,
    while model, node and value metadata stay."""
    model = tagged_mlp()
    model.graph.metadata_props["pkg.torch.export.ExportedProgram.graph_signature"] = "x" * 5000
    model.metadata_props["owner"] = "team"
    model.graph.node(3).outputs[0].metadata_props["note"] = "kept"
    extracted = extract_module(model, "/MLP/Layer.fc2")
    assert dict(extracted.graph.metadata_props) == {}
    assert extracted.metadata_props["owner"] == "team"
    assert extracted.graph.node(0).outputs[0].metadata_props["note"] == "kept"
    assert metadata.node_tag(extracted.graph.node(0)) == "/MLP/Layer.fc2"
    assert len(model.graph.metadata_props) == 1  # the source keeps its own


def test_an_extracted_module_carries_its_part_of_the_hierarchy():
    """Its subtree, the modules its nodes carry and their ancestors (with their module
    names), nothing else: the whole hierarchy in every file made ``extract --all``
    quadratic."""
    from graphtag.checks.validation import validate

    model = load_case("siblings:dynamo").model
    left = "/SiblingsNet/Block.left"
    extracted = extract_module(model, left)
    full, cut = Hierarchy.from_model(model), Hierarchy.from_model(extracted)
    tags = {metadata.node_tag(n) for n in extracted.graph}
    expected = {t for t in full.modules if is_ancestor_or_self(t, left) or
                is_ancestor_or_self(left, t) or
                any(is_ancestor_or_self(t, tag) for tag in tags)}  # fmt: skip
    assert list(cut.modules) == [t for t in full.modules if t in expected]
    assert cut.modules[left] == full.modules[left]
    assert cut.name_to_tag == {n: t for n, t in full.name_to_tag.items() if t in expected}
    assert len(cut.modules) < len(full.modules)
    assert validate(extracted).passed


# --- the command ----------------------------------------------------------------


@pytest.fixture(scope="module")
def siblings_file() -> Path:
    return zoo_export("siblings", "dynamo").path


def test_cli_all_writes_index_and_one_file_per_module(siblings_file, tmp_path):
    out = tmp_path / "modules"
    proc = run_cli(
        "extract", siblings_file, "--all", "-o", out, "--progress-every", "5", columns=200
    )
    assert proc.returncode == 0, proc.stderr
    index = json.loads((out / "index.json").read_text())
    assert set(index) == set(compute_boundaries(graphtag.load(siblings_file)))
    # The source keeps its weights in a data file; so does each module (its own tensors).
    data = {f"{name}.data" for name in index.values() if (out / f"{name}.data").exists()}
    assert data
    assert sorted(os.listdir(out)) == sorted([*index.values(), *data, "index.json"])
    for tag, name in index.items():
        model = onnx.load(out / name)
        onnx.checker.check_model(model, full_check=True)
        assert {p.key: p.value for p in model.metadata_props}[EXTRACTED_MODULE] == tag
    assert "[5/13]" in proc.stderr and "[13/13]" in proc.stderr
    assert "/SiblingsNet/Block.shared" in proc.stdout


def test_cli_one_module_runs(siblings_file, tmp_path):
    out = tmp_path / "left.onnx"
    proc = run_cli("extract", siblings_file, "--module", "/SiblingsNet/Block.left", "-o", out)
    assert proc.returncode == 0, proc.stderr
    # The extracted module, fed the full model's values at its inputs, must compute the
    # full model's values at its outputs (ONNX Runtime on both; value names are kept).
    import oracles

    full = onnx.load(siblings_file)
    rng = np.random.default_rng(0)
    feeds = {
        i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(
            np.float32
        )
        for i in full.graph.input
    }
    values = oracles.all_values(full, feeds)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in sess.get_inputs()]
    got = sess.run(None, {name: values[name] for name in inputs})
    outputs = [o.name for o in sess.get_outputs()]
    assert outputs and not set(outputs) & set(feeds)  # computed inside the module
    for name, value in zip(outputs, got, strict=True):
        np.testing.assert_allclose(value, values[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_cli_unknown_tag(siblings_file, tmp_path):
    proc = run_cli(
        "extract", siblings_file, "--module", "/SiblingsNet/Block.lef", "-o", tmp_path / "x.onnx"
    )
    assert_clean_failure(proc, "unknown module tag", "closest: /SiblingsNet/Block.left")
    assert proc.returncode == 2 and not (tmp_path / "x.onnx").exists()


def _run_unprivileged(model: Path, parent: Path, tmp_path: Path):
    """``graphtag extract --all`` into read-only ``parent``, as an unprivileged user.

    Root ignores directory permissions, and the tests run as root here: the child then
    drops to ``nobody`` with os.setuid before the command (after one warm-up run as root
    that imports what it needs: the interpreter's files under /root are unreadable to
    nobody). The model is copied beside ``parent``, readable by all.
    """
    import shutil
    import subprocess
    import sys

    copy = parent.parent / model.name
    for path in model.parent.glob(model.name + "*"):  # with its external data file
        shutil.copyfile(path, parent.parent / path.name)
        (parent.parent / path.name).chmod(0o644)
    code = (
        "import os, sys\n"
        "from graphtag.cli import main\n"
        f"assert main(['extract', {str(copy)!r}, '--all', '-o', {str(tmp_path / 'warm')!r}]) == 0\n"
        "if os.geteuid() == 0:\n"
        "    import pwd\n"
        "    user = pwd.getpwnam('nobody')\n"
        "    os.setgroups([]); os.setgid(user.pw_gid); os.setuid(user.pw_uid)\n"
        f"sys.exit(main(['extract', {str(copy)!r}, '--all', '-o', {str(parent / 'modules')!r}]))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )


@pytest.mark.parametrize("where", ["readonly", "proc", "nonempty", "file"])
def test_cli_unwritable_output_leaves_nothing(siblings_file, tmp_path, where):
    parent = tmp_path / "parent"
    parent.mkdir()
    out = parent / "modules"
    if where == "readonly":
        import tempfile

        with tempfile.TemporaryDirectory() as folder:  # reachable by nobody, unlike tmp_path
            Path(folder).chmod(0o755)
            parent = Path(folder) / "parent"
            parent.mkdir(mode=0o555)
            proc = _run_unprivileged(siblings_file, parent, tmp_path)
            parent.chmod(0o755)
            assert_clean_failure(proc, "is not writable")
            assert os.listdir(parent) == []
        return
    if where == "proc":
        out = Path("/proc/graphtag-extract-test")
    elif where == "nonempty":
        out.mkdir()
        (out / "keep.txt").write_text("x")
    else:
        out.write_text("x")
    proc = run_cli("extract", siblings_file, "--all", "-o", out)
    parent.chmod(0o755)
    assert_clean_failure(proc)
    if where == "nonempty":
        assert os.listdir(out) == ["keep.txt"]
    elif where == "file":
        assert out.read_text() == "x"
    else:
        assert not out.exists()
    assert sorted(p.name for p in parent.iterdir()) == (
        ["modules"] if where in ("nonempty", "file") else []
    )


def test_cli_failure_midway_leaves_nothing(siblings_file, tmp_path, monkeypatch, capsys):
    from graphtag import cli
    from graphtag.core import io

    real_save, calls = io.save, []

    def failing_save(model, path):
        calls.append(path)
        if len(calls) == 4:
            raise GraphtagError(f"{path}: disk full")
        real_save(model, path)

    monkeypatch.setattr(io, "save", failing_save)
    out = tmp_path / "modules"
    assert cli.main(["extract", str(siblings_file), "--all", "-o", str(out)]) == 2
    assert "disk full" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
