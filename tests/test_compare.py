"""``compare_topology`` and ``graphtag compare --topology`` on models that DO differ.

Each change below alters what a model computes or how it is wired while leaving the
rest alone; each must be reported (API and command: exit 1, a diff line naming the
place), and a metadata-only change must not be.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import onnx_ir as ir
import pytest
from cli_helpers import run_cli
from onnx_builders import local_function, run_ort

import graphtag
from graphtag.checks.compare import compare_topology
from graphtag.cli import main
from graphtag.core import metadata

FLOAT = ir.TensorType(ir.DataType.FLOAT)


def _value(name: str, shape=(2, 4), dtype=ir.DataType.FLOAT) -> ir.Value:
    return ir.Value(name=name, shape=ir.Shape(list(shape)), type=ir.TensorType(dtype))


def _node(op, inputs, name, *, domain="", **attributes) -> ir.Node:
    node = ir.node(op, inputs, attributes=attributes or None, domain=domain, name=name)
    node.outputs[0].name = name
    return node


def base() -> ir.Model:
    """x -> LeakyRelu(alpha) -> MatMul(w) -> two independent Negs -> Add -> If (its
    branches read the Add from the outer scope) -> call of local function Double -> y;
    and a Constant (a tensor attribute) nobody reads."""
    x, cond = _value("x"), _value("cond", (), ir.DataType.BOOL)
    w = ir.Value(name="w", shape=ir.Shape([4, 4]), type=FLOAT)
    w.const_value = ir.tensor(np.linspace(-1, 1, 16, dtype=np.float32).reshape(4, 4), name="w")
    leaky = _node("LeakyRelu", [x], "leaky", alpha=0.1)
    mm = _node("MatMul", [leaky.outputs[0], w], "mm")
    neg1 = _node("Neg", [mm.outputs[0]], "neg1")
    neg2 = _node("Neg", [x], "neg2")
    add = _node("Add", [neg1.outputs[0], neg2.outputs[0]], "add")
    then_node = _node("Elu", [add.outputs[0]], "then_elu", alpha=1.0)
    else_node = _node("Relu", [add.outputs[0]], "else_relu")
    for node in (then_node, else_node):
        node.outputs[0].type, node.outputs[0].shape = FLOAT, ir.Shape([2, 4])
    branch = _node(
        "If",
        [cond],
        "branch",
        then_branch=ir.Graph([], then_node.outputs, nodes=[then_node], name="then"),
        else_branch=ir.Graph([], else_node.outputs, nodes=[else_node], name="else"),
    )
    fx = ir.Value(name="fx")  # function inputs carry no type in ONNX
    inner = _node("Add", [fx, fx], "twice")
    double = local_function("Double", [fx], [inner])
    call = _node("Double", [branch.outputs[0]], "y", domain="pkg.test")
    call.outputs[0].type, call.outputs[0].shape = FLOAT, ir.Shape([2, 4])
    const = _node("Constant", [], "const", value=ir.tensor(np.arange(3, dtype=np.int64)))
    graph = ir.Graph(
        [x, cond],
        call.outputs,
        nodes=[leaky, mm, neg1, neg2, add, branch, call, const],
        initializers=[w],
        opset_imports={"": 21, "pkg.test": 1},
        name="g",
    )
    for node in graph:
        metadata.set_tag(node, "/M")
    return ir.Model(graph, ir_version=10, functions=[double])


def _by_name(model: ir.Model) -> dict[str, ir.Node]:
    return {n.name: n for n in model.graph}


def _attribute_value(model):
    _by_name(model)["leaky"].attributes["alpha"] = ir.AttrFloat32("alpha", 0.2)


def _initializer_bytes(model):
    w = model.graph.initializers["w"]
    array = w.const_value.numpy().copy()
    array[0, 0] += 1.0
    w.const_value = ir.tensor(array, name="w")


def _node_order(model):
    nodes = _by_name(model)
    model.graph.remove(nodes["neg2"])
    model.graph.insert_before(nodes["neg1"], nodes["neg2"])  # still topologically valid


def _subgraph_body(model):
    body = _by_name(model)["branch"].attributes["then_branch"].as_graph()
    next(iter(body)).attributes["alpha"] = ir.AttrFloat32("alpha", 0.5)


def _subgraph_op(model):
    body = _by_name(model)["branch"].attributes["else_branch"].as_graph()
    next(iter(body)).op_type = "Abs"


def _opset(model):
    model.graph.opset_imports[""] = 20


def _function_body(model):
    function = model.functions["pkg.test", "Double", ""]
    next(iter(function)).op_type = "Mul"


def _attribute_dropped(model):
    del _by_name(model)["leaky"].attributes["alpha"]  # LeakyRelu's default is 0.01


def _tensor_attribute(model):
    _by_name(model)["const"].attributes["value"] = ir.AttrTensor(
        "value", ir.tensor(np.array([0, 1, 5], dtype=np.int64))
    )


def _wiring(model):
    nodes = _by_name(model)
    nodes["add"].replace_input_with(1, nodes["neg1"].outputs[0])  # neg1 + neg1


# change -> what the diff must name
CHANGES = {
    "attribute-value": (_attribute_value, ["node #0 LeakyRelu: attribute alpha: 0.1 != 0.2"]),
    "initializer-bytes": (_initializer_bytes, ["initializer w", "sha256"]),
    "node-order": (_node_order, ["node #2", "Neg(mm)", "Neg(x)"]),
    "subgraph-attribute": (
        _subgraph_body,
        ["node #5 If then_branch: node #0 Elu: attribute alpha: 1.0 != 0.5"],
    ),
    "subgraph-op": (_subgraph_op, ["node #5 If else_branch: node #0", "Relu(add)", "Abs(add)"]),
    "opset": (_opset, ["opset imports", "21", "20"]),
    "function-body": (_function_body, ["function Double", "Add", "Mul"]),
    "wiring": (_wiring, ["node #4", "Add(neg1, neg2)", "Add(neg1, neg1)"]),
    "attribute-dropped": (_attribute_dropped, ["node #0 LeakyRelu: attribute alpha only in A"]),
    "tensor-attribute": (_tensor_attribute, ["node #7 Constant: attribute value: INT64[3]"]),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_each_change_is_reported(change, tmp_path):
    edit, fragments = CHANGES[change]
    a, b = base(), base()
    edit(b)
    diff = compare_topology(a, b)
    assert not diff.identical and diff.total >= 1
    report = diff.report()
    for fragment in fragments:
        assert fragment in report, report
    # The other direction finds it too, and a copy of the changed model equals it.
    assert not compare_topology(b, a).identical
    assert compare_topology(b, ir.serde.deserialize_model(ir.serde.serialize_model(b))).identical
    # The command: exit 1 and the same readable diff.
    paths = [graphtag.save(m, tmp_path / f"{side}.onnx") for side, m in (("a", a), ("b", b))]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["compare", "--topology", str(paths[0]), str(paths[1])])
    assert code == 1, out.getvalue()
    for fragment in fragments:
        assert fragment in out.getvalue(), out.getvalue()


def test_changes_matter_to_onnx_runtime():
    """The changes are real: each alters what ONNX Runtime computes (node order, the
    opset and an unread constant aside, which only the structure shows)."""
    feeds = {"x": np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4), "cond": np.array(True)}
    (expected,) = run_ort(base(), feeds)
    feeds_else = {**feeds, "cond": np.array(False)}
    (expected_else,) = run_ort(base(), feeds_else)
    changes = ["attribute-value", "attribute-dropped", "initializer-bytes", "subgraph-attribute"]
    for change in [*changes, "subgraph-op", "function-body", "wiring"]:
        model = base()
        CHANGES[change][0](model)
        (got,) = run_ort(model, feeds)
        (got_else,) = run_ort(model, feeds_else)
        assert not (np.allclose(got, expected) and np.allclose(got_else, expected_else)), change


def test_metadata_and_names_of_nothing_else_do_not_count(tmp_path):
    a, b = base(), base()
    for node in b.graph:
        metadata.set_tag(node, "/Other")
        node.metadata_props["pkg.test.note"] = "x"
        node.doc_string = "changed"
    b.graph.initializers["w"].metadata_props["pkg.test.note"] = "y"
    assert compare_topology(a, b).identical
    paths = [graphtag.save(m, tmp_path / f"{side}.onnx") for side, m in (("a", a), ("b", b))]
    assert main(["compare", "--topology", str(paths[0]), str(paths[1])]) == 0


def test_many_differences_are_counted_and_cut(tmp_path):
    a, b = base(), base()
    for edit, _ in CHANGES.values():
        if edit is not _node_order:
            edit(b)
    diff = compare_topology(a, b)
    assert diff.total >= 6 and diff.report().startswith(f"{diff.total} topology difference(s):")


def test_command_exits_1_with_the_diff(tmp_path):
    a, b = base(), base()
    _wiring(b)
    paths = [graphtag.save(m, tmp_path / f"{side}.onnx") for side, m in (("a", a), ("b", b))]
    proc = run_cli("compare", "--topology", *paths)
    assert proc.returncode == 1 and not proc.stderr, proc.stderr
    assert proc.stdout.splitlines() == [
        "1 topology difference(s):",
        "  graph: node #4 differs: A Add(neg1, neg2) -> add attrs=[] | B Add(neg1, neg1) -> add "
        "attrs=[]",
    ]
    same = run_cli("compare", "--topology", paths[0], paths[0])
    assert same.returncode == 0 and same.stdout.strip() == "topology identical"


def _one_op(**attributes) -> ir.Model:
    x = _value("x")
    node = _node("Op", [x], "op", domain="pkg.test", **attributes)
    graph = ir.Graph([x], node.outputs, nodes=[node], opset_imports={"pkg.test": 1}, name="g")
    return ir.Model(graph, ir_version=10)


def test_attribute_values_of_every_kind_are_shown():
    a = _one_op(alpha=0.5, scales=[0.1, 0.2], axes=[1, 2], mode="a")
    b = _one_op(alpha=0.25, scales=[0.1, 0.3], axes=[1, 3], mode="b")
    assert compare_topology(a, b).report().splitlines()[1:] == [
        "  graph: node #0 pkg.test::Op: attribute alpha: 0.5 != 0.25",
        "  graph: node #0 pkg.test::Op: attribute axes: (1, 2) != (1, 3)",
        "  graph: node #0 pkg.test::Op: attribute mode: 'a' != 'b'",
        "  graph: node #0 pkg.test::Op: attribute scales: [0.1, 0.2] != [0.1, 0.3]",
    ]
    assert compare_topology(
        a, _one_op(alpha=0.5, scales=[0.1, 0.2], axes=[1, 2], mode="a")
    ).identical


def test_long_attribute_values_are_cut_at_80_characters():
    exact = compare_topology(_one_op(mode="x" * 78), _one_op(mode="y" * 78)).report()
    assert f"'{'x' * 78}' != '{'y' * 78}'" in exact  # 80 characters each: shown whole
    cut = compare_topology(_one_op(mode="x" * 79), _one_op(mode="y" * 79)).report()
    assert f": '{'x' * 76}... != '{'y' * 76}..." in cut


def test_node_count_and_initializer_lists_are_reported():
    a, b = base(), base()
    b.graph.remove(_by_name(b)["const"], safe=True)  # the unread Constant
    assert "graph: 8 nodes in A, 7 nodes in B" in compare_topology(a, b).report()
    c = base()
    v = ir.Value(name="v", shape=ir.Shape([1]), type=FLOAT)
    v.const_value = ir.tensor(np.zeros(1, np.float32), name="v")
    c.graph.register_initializer(v)
    assert "initializers only in A: [], only in B: ['v']" in compare_topology(a, c).report()
    d = base()
    d.graph.initializers["w"].const_value = None
    assert "initializer w: value present in only one model" in compare_topology(a, d).report()


def test_graph_inputs_and_outputs_are_named_when_they_differ():
    a, b = base(), base()
    b.graph.inputs[0].shape = ir.Shape([3, 4])
    report = compare_topology(a, b).report()
    assert "graph: graph inputs differ: A (('x', 'FLOAT', ('2', '4'))" in report, report
    c = base()
    c.graph.outputs[0].name = "renamed"
    assert "graph: graph outputs differ: A" in compare_topology(a, c).report()


def test_attribute_type_reference_and_graph_lists_are_reported():
    a = _one_op(alpha=0.5)
    assert "attribute alpha: FLOAT != INT" in compare_topology(a, _one_op(alpha=1)).report()
    ref = _one_op()
    ref.graph.node(0).attributes["alpha"] = ir.RefAttr("alpha", "outer", ir.AttributeType.FLOAT)
    assert "attribute alpha: FLOAT != FLOAT" in compare_topology(a, ref).report()

    def bodies(*ops: str) -> list[ir.Graph]:
        graphs = []
        for op in ops:
            v = _value(f"b{len(graphs)}")
            node = _node(op, [v], f"n{len(graphs)}")
            graphs.append(ir.Graph([v], node.outputs, nodes=[node], name=f"g{len(graphs)}"))
        return graphs

    one, two = _one_op(branches=bodies("Relu")), _one_op(branches=bodies("Relu", "Neg"))
    assert "attribute branches: 1 != 2 graphs" in compare_topology(one, two).report()
    changed = compare_topology(two, _one_op(branches=bodies("Relu", "Abs"))).report()
    assert "pkg.test::Op branches[1]: node #0 differs" in changed, changed
