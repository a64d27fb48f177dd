"""Tests for graphtag.passes.toposort.TopologicalSortPass (torch-free)."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx_builders import run_ort

import graphtag.passes.toposort as toposort
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.passes import _node_list
from graphtag.passes.toposort import TopologicalSortPass

FLOAT = ir.TensorType(ir.DataType.FLOAT)
TAGS = ("/M/A", "/M/B", "/M/C")


# ---------------------------------------------------------------- helpers


def is_topological(nodes: list[ir.Node]) -> bool:
    """Every producer in ``nodes`` comes before each of its consumers (inputs only)."""
    position = {node: i for i, node in enumerate(nodes)}
    return all(
        position.get(value.producer(), -1) < i
        for i, node in enumerate(nodes)
        for value in node.inputs
        if value is not None
    )


def make_node(name: str, inputs: list[ir.Value], tag: str | None = None) -> ir.Node:
    node = ir.Node(
        "",
        "Sum" if inputs else "RandomNormal",
        inputs,
        name=name,
        num_outputs=1,
        metadata_props={metadata.MODULE: tag} if tag else None,
    )
    node.outputs[0].name = f"{name}_out"
    return node


def make_model(nodes: list[ir.Node], inputs=(), outputs=(), functions=()) -> ir.Model:
    graph = ir.Graph(list(inputs), list(outputs), nodes=nodes, opset_imports={"": 18}, name="main")
    return ir.Model(graph, ir_version=10, functions=list(functions))


@st.composite
def random_dags(draw, max_nodes: int = 25, tagged: bool | None = None):
    """(nodes in a topological order, a shuffled order of the same nodes, graph input)."""
    x = ir.Value(name="x", type=FLOAT)
    n = draw(st.integers(1, max_nodes))
    use_tags = draw(st.booleans()) if tagged is None else tagged
    nodes: list[ir.Node] = []
    for i in range(n):
        sources = [x] + [node.outputs[0] for node in nodes]
        picks = draw(st.lists(st.integers(0, len(sources) - 1), max_size=3))
        tag = draw(st.sampled_from(TAGS)) if use_tags else None
        nodes.append(make_node(f"n{i}", [sources[k] for k in picks], tag))
    shuffled = draw(st.permutations(nodes))
    return nodes, shuffled, x


def run(model: ir.Model, **options) -> ir.passes.PassResult:
    return TopologicalSortPass(**options)(model)


# ---------------------------------------------------------------- properties

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(params=["private-layout", "public-api"])
def node_list_path(request, monkeypatch):
    """Run a test once with the linked-list rewiring and once through onnx_ir's API."""
    monkeypatch.setattr(_node_list, "use_private_layout", request.param == "private-layout")
    return request.param


@settings(FAST, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(dag=random_dags(), group_by_tag=st.booleans())
def test_random_dag_sorted_permutation(node_list_path, dag, group_by_tag):
    _, shuffled, x = dag
    props = {node: dict(node.metadata_props) for node in shuffled}
    model = make_model(list(shuffled), inputs=[x])
    was_valid = is_topological(list(shuffled))
    result = run(model, group_by_tag=group_by_tag, verify=True)
    after = list(model.graph)
    assert is_topological(after)
    assert len(after) == len(shuffled) and set(after) == set(shuffled)
    assert result.modified == (not was_valid)
    if was_valid:
        assert after == list(shuffled)
    assert {node: dict(node.metadata_props) for node in after} == props
    assert all(node.graph is model.graph for node in after)
    # The node list is consistent both ways and still works with onnx_ir's API.
    assert list(reversed(model.graph)) == after[::-1]
    assert len(model.graph) == len(after)
    assert [model.graph[i] for i in range(len(after))] == after
    # Idempotent: a second run keeps the order and reports no change.
    assert not run(model, group_by_tag=group_by_tag).modified
    assert list(model.graph) == after


def test_reordered_list_accepts_further_edits(node_list_path):
    a, b, x = _two_modules(4)
    model = make_model([n for pair in zip(a, b) for n in pair][::-1], inputs=[x])
    assert run(model).modified
    graph = model.graph
    order = list(graph)
    graph.remove(order[-1])
    graph.insert_before(order[0], order[-1])
    extra = make_node("extra", [order[1].outputs[0]])
    graph.insert_after(order[1], extra)
    expected = [order[-1], order[0], order[1], extra, *order[2:-1]]
    assert list(graph) == expected
    assert list(reversed(graph)) == expected[::-1]
    assert len(graph) == len(expected)


@FAST
@given(random_dags())
def test_sorted_input_is_unchanged(dag):
    ordered, _, x = dag
    model = make_model(list(ordered), inputs=[x])
    result = run(model)
    assert not result.modified
    assert list(model.graph) == ordered


@FAST
@given(random_dags(max_nodes=15), st.data())
def test_cycle_is_reported_with_its_nodes(dag, data):
    ordered, shuffled, x = dag
    # Close a cycle: an earlier node (topologically) consumes a later node's output,
    # where the later one depends on the earlier one (or is itself).
    later = data.draw(st.integers(0, len(ordered) - 1))
    ancestors = _ancestors(ordered[later])
    candidates = [node for node in ordered if node in ancestors or node is ordered[later]]
    earlier = data.draw(st.sampled_from(candidates))
    earlier.resize_inputs(len(earlier.inputs) + 1)
    earlier.replace_input_with(len(earlier.inputs) - 1, ordered[later].outputs[0])
    model = make_model(list(shuffled), inputs=[x])
    with pytest.raises(GraphtagError) as info:
        run(model)
    message = str(info.value)
    assert "cycle" in message
    names = message.split("has a cycle: ", 1)[1].split(" -> ")
    if "..." not in message:
        by_name = {node.name: node for node in ordered}
        cycle = [by_name[name] for name in names]
        assert cycle[0] is cycle[-1]
        for producer, consumer in itertools.pairwise(cycle):
            assert any(v is not None and v.producer() is producer for v in consumer.inputs)


def _ancestors(node: ir.Node) -> set[ir.Node]:
    seen: set[ir.Node] = set()
    stack = [node]
    while stack:
        for value in stack.pop().inputs:
            producer = value.producer() if value is not None else None
            if producer is not None and producer not in seen:
                seen.add(producer)
                stack.append(producer)
    return seen


# ---------------------------------------------------------------- examples


def test_appended_node_moves_just_before_its_first_consumer():
    x = ir.Value(name="x", type=FLOAT)
    chain = [make_node("c0", [x])]
    for i in range(1, 6):
        chain.append(make_node(f"c{i}", [chain[-1].outputs[0]]))
    extra = make_node("extra", [x])
    chain[3].resize_inputs(2)
    chain[3].replace_input_with(1, extra.outputs[0])
    model = make_model([*chain, extra], inputs=[x])
    assert run(model).modified
    assert [n.name for n in model.graph] == ["c0", "c1", "c2", "extra", "c3", "c4", "c5"]


def test_cycle_message_names_nodes():
    x = ir.Value(name="x", type=FLOAT)
    a = make_node("a", [x])
    b = make_node("b", [a.outputs[0]])
    c = make_node("c", [b.outputs[0]])
    tail = make_node("tail", [c.outputs[0]])
    a.resize_inputs(2)
    a.replace_input_with(1, c.outputs[0])
    model = make_model([tail, c, b, a], inputs=[x])
    with pytest.raises(GraphtagError, match="cycle") as info:
        run(model)
    message = str(info.value)
    for name in ("a", "b", "c"):
        assert f" {name} " in f" {message} " or f"{name} ->" in message
    assert "tail" not in message


def test_self_loop_is_a_cycle():
    x = ir.Value(name="x", type=FLOAT)
    a = make_node("loopy", [x])
    a.resize_inputs(2)
    a.replace_input_with(1, a.outputs[0])
    with pytest.raises(GraphtagError, match="loopy -> loopy"):
        run(make_model([a], inputs=[x]))


def test_valid_interleaved_modules_stay_put():
    x = ir.Value(name="x", type=FLOAT)
    a1, b1 = make_node("a1", [x], "/M/A"), make_node("b1", [x], "/M/B")
    a2, b2 = make_node("a2", [a1.outputs[0]], "/M/A"), make_node("b2", [b1.outputs[0]], "/M/B")
    nodes = [a1, b1, a2, b2]
    model = make_model(list(nodes), inputs=[x])
    assert not run(model).modified
    assert list(model.graph) == nodes


def _two_modules(n: int) -> tuple[list[ir.Node], list[ir.Node], ir.Value]:
    x = ir.Value(name="x", type=FLOAT)
    a = [make_node("a0", [x], "/M/A")]
    b = [make_node("b0", [x], "/M/B")]
    for i in range(1, n):
        a.append(make_node(f"a{i}", [a[-1].outputs[0]], "/M/A"))
        b.append(make_node(f"b{i}", [b[-1].outputs[0]], "/M/B"))
    return a, b, x


def test_independent_interleaved_modules_get_grouped():
    a, b, x = _two_modules(4)
    # Interleaved and reversed: invalid, so the pass reorders and groups.
    nodes = [n for pair in zip(a, b) for n in pair][::-1]
    model = make_model(nodes, inputs=[x])
    assert run(model).modified
    order = [node.name[0] for node in model.graph]
    assert order in (list("aaaabbbb"), list("bbbbaaaa"))
    assert is_topological(list(model.graph))


def test_without_grouping_interleaving_is_kept():
    a, b, x = _two_modules(4)
    nodes = [n for pair in zip(a, b) for n in pair]
    nodes[0], nodes[2] = nodes[2], nodes[0]  # a1 before a0: invalid
    model = make_model(nodes, inputs=[x])
    assert run(model, group_by_tag=False).modified
    # a0 is hoisted to just before its consumer a1; the interleaving stays.
    assert [n.name for n in model.graph] == ["a0", "a1", "b0", "b1", "a2", "b2", "a3", "b3"]


def test_modules_group_around_a_shared_dependency():
    # B consumes A's outputs; A's nodes still come out together, then B's.
    x = ir.Value(name="x", type=FLOAT)
    a = [make_node(f"a{i}", [x], "/M/A") for i in range(3)]
    b = [make_node(f"b{i}", [a[i].outputs[0]], "/M/B") for i in range(3)]
    model = make_model([b[0], a[0], b[1], a[1], b[2], a[2]], inputs=[x])
    run(model)
    assert [n.name[0] for n in model.graph] == list("aaabbb")


def _if_node(name: str, cond: ir.Value, then_nodes, then_out, else_out: ir.Value) -> ir.Node:
    """An If node; ``else_out`` is returned by an empty else branch as is."""
    then_graph = ir.Graph([], [then_out], nodes=then_nodes, name=f"{name}_then")
    else_graph = ir.Graph([], [else_out], nodes=[], name=f"{name}_else")
    node = ir.node(
        "If",
        [cond],
        attributes={"then_branch": then_graph, "else_branch": else_graph},
        name=name,
        num_outputs=1,
    )
    node.outputs[0].name = f"{name}_out"
    return node


def test_if_after_producer_of_value_used_in_branch():
    x = ir.Value(name="x", type=FLOAT)
    cond = ir.Value(name="cond", type=ir.TensorType(ir.DataType.BOOL))
    producer = make_node("p", [x])
    # The branch's nodes are out of order too, and one uses p's output.
    inner1 = make_node("inner1", [producer.outputs[0]])
    inner2 = make_node("inner2", [inner1.outputs[0]])
    other = make_node("other", [x])
    if_node = _if_node("if", cond, [inner2, inner1], inner2.outputs[0], other.outputs[0])
    model = make_model([if_node, other, producer], inputs=[x, cond])
    assert run(model).modified
    assert [n.name for n in model.graph][-1] == "if"
    then_graph = if_node.attributes["then_branch"].as_graph()
    assert [n.name for n in then_graph] == ["inner1", "inner2"]


def test_nested_subgraph_and_direct_output_dependencies():
    x = ir.Value(name="x", type=FLOAT)
    cond = ir.Value(name="cond", type=ir.TensorType(ir.DataType.BOOL))
    deep = make_node("deep_producer", [x])
    direct = make_node("direct_producer", [x])
    inner_use = make_node("inner_use", [deep.outputs[0]])
    spare = make_node("spare", [x])
    inner_if = _if_node("inner_if", cond, [inner_use], inner_use.outputs[0], spare.outputs[0])
    # The outer branch returns direct's output as is (no node inside uses it).
    outer_if = _if_node("outer_if", cond, [inner_if], inner_if.outputs[0], direct.outputs[0])
    model = make_model([outer_if, deep, spare, direct], inputs=[x, cond])
    assert toposort._first_violation(list(model.graph)) is outer_if
    assert run(model).modified
    names = [n.name for n in model.graph]
    assert names.index("outer_if") > names.index("deep_producer")
    assert names.index("outer_if") > names.index("direct_producer")
    assert names.index("outer_if") > names.index("spare")
    assert toposort._first_violation(list(model.graph)) is None
    # Already valid now: nothing to do.
    assert not run(model).modified


def test_functions_are_sorted():
    x = ir.Value(name="x", type=FLOAT)
    a = make_node("fa", [x])
    b = make_node("fb", [a.outputs[0]])
    c = make_node("fc", [b.outputs[0]])
    body = ir.Graph([x], [c.outputs[0]], nodes=[c, a, b], opset_imports={"": 18}, name="body")
    function = ir.Function("pkg.test", "Chain", "", graph=body, attributes=[])
    y = ir.Value(name="y", type=FLOAT)
    call = ir.Node("pkg.test", "Chain", [y], name="call", num_outputs=1)
    model = make_model([call], inputs=[y], outputs=[call.outputs[0]], functions=[function])
    assert run(model).modified
    assert [n.name for n in function] == ["fa", "fb", "fc"]
    assert not run(model).modified


def test_public_reorder_path_matches_fast_path(monkeypatch):
    a, b, x = _two_modules(5)
    order = [n for pair in zip(a, b) for n in pair][::-1]
    fast = make_model(list(order), inputs=[x])
    run(fast)
    expected = [n.name for n in fast.graph]
    a, b, x = _two_modules(5)
    slow = make_model([n for pair in zip(a, b) for n in pair][::-1], inputs=[x])
    monkeypatch.setattr(_node_list, "use_private_layout", False)
    run(slow)
    assert [n.name for n in slow.graph] == expected


@pytest.mark.parametrize("moved", ["prefix", "middle", "suffix"])
def test_partial_reorders_keep_the_rest(moved):
    x = ir.Value(name="x", type=FLOAT)
    chain = [make_node("c0", [x])]
    for i in range(1, 6):
        chain.append(make_node(f"c{i}", [chain[-1].outputs[0]]))
    nodes = list(chain)
    swap = {"prefix": 0, "middle": 2, "suffix": 4}[moved]
    nodes[swap], nodes[swap + 1] = nodes[swap + 1], nodes[swap]
    model = make_model(nodes, inputs=[x])
    assert run(model).modified
    assert list(model.graph) == chain


# ---------------------------------------------------------------- end to end


def _concrete_model() -> ir.Model:
    """x, y -> a few ops and an If whose branches use outer values -> z."""
    shape = ir.Shape([2, 3])
    x = ir.Value(name="x", shape=shape, type=FLOAT)
    y = ir.Value(name="y", shape=shape, type=FLOAT)
    flag = ir.Value(name="flag", shape=ir.Shape([]), type=ir.TensorType(ir.DataType.BOOL))

    def op(op_type: str, inputs, name: str, tag: str, **attrs) -> ir.Node:
        node = ir.node(op_type, inputs, attributes=attrs or None, name=name, num_outputs=1)
        node.outputs[0].name = f"{name}_out"
        node.metadata_props[metadata.MODULE] = tag
        return node

    relu = op("Relu", [x], "relu", "/Net/A")
    add = op("Add", [relu.outputs[0], y], "add", "/Net/A")
    mul = op("Mul", [add.outputs[0], x], "mul", "/Net/B")
    then_neg = op("Neg", [mul.outputs[0]], "then_neg", "/Net/If")
    else_abs = op("Abs", [add.outputs[0]], "else_abs", "/Net/If")
    then_graph = ir.Graph([], [then_neg.outputs[0]], nodes=[then_neg], name="then")
    else_graph = ir.Graph([], [else_abs.outputs[0]], nodes=[else_abs], name="else")
    branch = op("If", [flag], "branch", "/Net/If", then_branch=then_graph, else_branch=else_graph)
    out = op("Sub", [branch.outputs[0], relu.outputs[0]], "out", "/Net")
    out.outputs[0].name = "z"
    for node in (relu, add, mul, then_neg, else_abs, branch, out):
        node.outputs[0].shape, node.outputs[0].type = shape, FLOAT
    graph = ir.Graph(
        [x, y, flag],
        [out.outputs[0]],
        nodes=[relu, add, mul, branch, out],
        opset_imports={"": 18},
        name="net",
    )
    return ir.Model(graph, ir_version=10)


@pytest.mark.parametrize("flag", [True, False])
def test_sorted_model_checks_and_runs_like_the_original(flag):
    model = _concrete_model()
    rng = np.random.default_rng(0)
    feeds = {
        "x": rng.standard_normal((2, 3)).astype(np.float32),
        "y": rng.standard_normal((2, 3)).astype(np.float32),
        "flag": np.array(flag),
    }
    expected = run_ort(model, feeds)
    nodes = list(model.graph)
    model.graph.remove(nodes)
    model.graph.extend([nodes[i] for i in (4, 3, 2, 1, 0)])  # fully reversed
    tags = {n.name: n.metadata_props[metadata.MODULE] for n in nodes}
    assert run(model, verify=True).modified
    onnx.checker.check_model(ir.serde.serialize_model(model), full_check=True)
    for actual, wanted in zip(run_ort(model, feeds), expected):
        np.testing.assert_allclose(actual, wanted)
    assert {n.name: n.metadata_props[metadata.MODULE] for n in model.graph} == tags


def test_registered_and_documented():
    from graphtag.passes import BUILTIN_PASSES

    assert BUILTIN_PASSES["toposort"].endswith(":TopologicalSortPass")
    summary = TopologicalSortPass.__doc__.strip().splitlines()[0]
    assert summary and not summary.endswith(":")
