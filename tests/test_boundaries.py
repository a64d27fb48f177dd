"""graphtag.analysis.boundaries and the boundary-detection pass.

Every module at every level of every zoo model (the cases of test_extraction, loaded
once per session) satisfies the definitions of graphtag.analysis.boundaries, checked here from
first principles; plus control-flow scoping and the pass's contract.
"""

from __future__ import annotations

import json

import onnx_ir as ir
import pytest
from onnx_builders import tagged_mlp
from test_extraction import NOOPT_CASES, ZOO_CASES, control_flow_model, load_case

import graphtag
from graphtag.analysis.boundaries import (
    boundary_of,
    compute_boundaries,
    module_boundaries,
    reentrant_inputs,
)
from graphtag.core import metadata
from graphtag.core.graphs import subgraphs_of
from graphtag.core.hierarchy import is_ancestor_or_self
from graphtag.core.scoping import NodeScope
from graphtag.passes.boundary_detection import BOUNDARIES, BoundaryDetectionPass, boundaries_summary
from graphtag.pipeline import Pipeline


def _reads(node: ir.Node) -> list[ir.Value]:
    """Values ``node`` reads: its inputs and what its bodies read from outside them."""
    found = [v for v in node.inputs if v is not None]
    local: set[int] = set()
    stack = subgraphs_of(node)
    bodies = []
    while stack:
        graph = stack.pop()
        bodies.append(graph)
        local.update(id(v) for v in [*graph.inputs, *graph.initializers.values()])
        for inner in graph:
            local.update(id(v) for v in inner.outputs)
            stack.extend(subgraphs_of(inner))
    for graph in bodies:
        found.extend(graph.outputs)
        for inner in graph:
            found.extend(v for v in inner.inputs if v is not None)
    return [v for v in found if id(v) not in local]


def _enclosing(model: ir.Model) -> dict[int, ir.Node]:
    """id(node) -> main-graph node holding it (itself for main-graph nodes)."""
    owner = {}
    for node in model.graph:
        owner[id(node)] = node
        for sub in subgraphs_of(node):
            for inner in ir.traversal.RecursiveGraphIterator(sub):
                owner[id(inner)] = node
    return owner


def check_invariants(model: ir.Model) -> int:
    """Assert the documented properties for every module; returns the module count."""
    boundaries = compute_boundaries(model)
    owner = _enclosing(model)
    graph_outputs = {id(v) for v in model.graph.outputs}
    expected_tags = set()
    for node in model.graph:
        tag = metadata.node_tag(node)
        while tag:
            expected_tags.add(tag)
            tag = tag.rsplit("/", 1)[0] if tag.count("/") > 1 else None
    assert set(boundaries) == expected_tags
    for tag, b in boundaries.items():
        inside = [n for n in model.graph if is_ancestor_or_self(tag, metadata.node_tag(n) or "//")]
        assert [id(n) for n in b.nodes] == [id(n) for n in inside], tag
        members = {id(n) for n in inside}
        produced = {id(v) for n in inside for v in n.outputs}
        read = {id(v): v for n in inside for v in _reads(n)}
        ins, outs = {id(v) for v in b.inputs}, {id(v) for v in b.outputs}
        consts = {id(v) for v in b.constants}
        assert len(ins) == len(b.inputs) and len(outs) == len(b.outputs), tag
        # Everything read comes from inside, an input, or a constant; nothing else.
        assert set(read) <= produced | ins | consts, tag
        assert ins <= set(read) - produced and consts <= set(read) - produced, tag
        assert all(_constant(v) for v in b.constants), tag
        assert not any(_constant(v) for v in b.inputs), tag
        # Outputs: produced inside and seen outside; internal values: used inside only.
        for value in b.outputs:
            used_outside = any(id(owner[id(u.node)]) not in members for u in value.uses())
            assert id(value) in produced and (id(value) in graph_outputs or used_outside), tag
        assert {id(v) for v in b.internal} == produced - outs, tag
        for value in b.internal:
            assert all(id(owner[id(u.node)]) in members for u in value.uses()), tag
        flagged = {
            id(n)
            for n in inside
            if any(id(v) in ins for v in _reads(n)) or any(id(v) in outs for v in n.outputs)
        }
        assert {id(n) for n in b.boundary_nodes} == flagged, tag
        # The boundary of the same nodes as an arbitrary scope (what scoped passes use).
        again = boundary_of(tag, NodeScope(b.nodes, [tag]), model.graph)
        for field in ("nodes", "inputs", "outputs", "constants", "internal", "boundary_nodes"):
            assert [id(x) for x in getattr(again, field)] == [id(x) for x in getattr(b, field)], (
                tag,
                field,
            )
    return len(boundaries)


def _constant(value: ir.Value) -> bool:
    """The definition of a constant (copied into extractions), from the ONNX side: an
    initializer, or the output of a node with no inputs and no body (Constant)."""
    if value.is_initializer():
        return True
    node = value.producer()
    return node is not None and not node.inputs and not subgraphs_of(node)


@pytest.mark.parametrize("label", ZOO_CASES + NOOPT_CASES)
def test_zoo_boundaries_follow_the_definitions(label):
    assert check_invariants(load_case(label).model) > 1


def test_control_flow_bodies_belong_to_their_node():
    model = control_flow_model()
    check_invariants(model)
    boundaries = compute_boundaries(model)
    # Loop body inputs (it, cin, v) are local to the nested body, not module inputs;
    # /M/A's output and the initializer read two bodies deep are.
    assert [v.name for v in boundaries["/M/B"].inputs] == ["cond", "a"]
    assert [v.name for v in boundaries["/M/B"].constants] == ["w"]
    assert [v.name for v in boundaries["/M"].inputs] == ["x", "cond"]
    assert [v.name for v in boundaries["/M/A"].outputs] == ["a"]  # read inside the If
    assert "/M/B/Inner" not in boundaries  # only tags nodes inside a body


def test_restricting_tags_gives_the_same_boundaries():
    model = load_case("bert:dynamo").model
    full = boundaries_summary(compute_boundaries(model))
    some = [tag for tag in full if tag.count("/") == 3][:3]
    assert boundaries_summary(compute_boundaries(model, some)) == {t: full[t] for t in some}


def test_mlp_boundaries():
    b = compute_boundaries(tagged_mlp())
    assert [v.name for v in b["/MLP/Layer.fc1"].inputs] == ["x"]
    assert [v.name for v in b["/MLP/Layer.fc1"].outputs] == ["t1"]
    assert [v.name for v in b["/MLP/Layer.fc1"].constants] == ["fc1.weight", "fc1.bias"]
    assert [v.name for v in b["/MLP"].outputs] == ["y"]
    assert [v.name for v in b["/MLP"].internal] == ["t0", "t1", "t2"]


# --- the pass --------------------------------------------------------------------


def test_pass_without_store_reports_unmodified():
    model = tagged_mlp()
    before = ir.to_proto(model).SerializeToString()
    result = BoundaryDetectionPass()(model)
    assert result.modified is False and result.model is model
    assert result.stats == {"modules": 3}
    assert BOUNDARIES not in model.metadata_props
    assert ir.to_proto(model).SerializeToString() == before
    assert set(module_boundaries(model)) == {"/MLP", "/MLP/Layer.fc1", "/MLP/Layer.fc2"}


def test_pass_store_is_idempotent_and_survives_save(tmp_path):
    model = tagged_mlp()
    first = BoundaryDetectionPass(store=True)(model)
    assert first.modified is True
    stored = json.loads(model.metadata_props[BOUNDARIES])
    assert stored["/MLP/Layer.fc2"] == {"inputs": ["t2"], "outputs": ["y"], "nodes": 1}
    assert stored["/MLP"]["nodes"] == 4
    text = model.metadata_props[BOUNDARIES]
    second = BoundaryDetectionPass(store=True)(model)
    assert second.modified is False and model.metadata_props[BOUNDARIES] == text
    graphtag.save(model, tmp_path / "m.onnx")
    assert graphtag.load(tmp_path / "m.onnx").metadata_props[BOUNDARIES] == text


def test_pass_from_the_pipeline_registry():
    model = tagged_mlp()
    result = Pipeline.from_text("boundary-detection{store=true}")(model)
    assert BOUNDARIES in result.model.metadata_props
    result = Pipeline.from_text("boundary-detection")(tagged_mlp())
    assert BOUNDARIES not in result.model.metadata_props


def test_inputs_computed_from_the_scope_s_own_outputs_are_found():
    """x -> A -> B -> A -> y (one module called twice around a sibling): A's second input
    is computed, outside A, from A's first output; a straight chain has none."""
    f32 = ir.TensorType(ir.DataType.FLOAT)
    x = ir.Value(name="x", shape=ir.Shape([2]), type=f32)
    nodes, previous = [], x
    for name, tag in (("a1", "/M/A"), ("b1", "/M/B"), ("a2", "/M/A")):
        node = ir.Node("", "Relu", [previous], name=name, num_outputs=1)
        node.outputs[0].name = f"{name}_out"
        node.metadata_props[metadata.MODULE] = tag
        nodes.append(node)
        previous = node.outputs[0]
    graph = ir.Graph([x], [previous], nodes=nodes, opset_imports={"": 21})
    model = ir.Model(graph, ir_version=10)
    position = {node: i for i, node in enumerate(graph)}
    boundaries = compute_boundaries(model)

    def reentrant(tag):
        scope = NodeScope(boundaries[tag].nodes, [tag])
        return reentrant_inputs(boundaries[tag], scope, position, lambda node: node)

    assert reentrant("/M/A") == {"b1_out": {"a1_out"}}
    assert reentrant("/M/B") == {}

    # A first use of a1_out by a node placed after the scope (pruned from the walk)
    # must not hide its second use, which leads back.
    late = ir.Node("", "Neg", [nodes[0].outputs[0]], name="late", num_outputs=1)
    late.metadata_props[metadata.MODULE] = "/M/C"
    late.outputs[0].name = "late_out"
    b1 = nodes[1]
    b1.replace_input_with(0, x)  # detach b1 ...
    graph.append(late)
    graph.outputs.append(late.outputs[0])
    b1.replace_input_with(0, nodes[0].outputs[0])  # ... and re-attach it after late
    assert [u.node.name for u in nodes[0].outputs[0].uses()] == ["late", "b1"]
    position = {node: i for i, node in enumerate(graph)}
    boundaries = compute_boundaries(model)
    assert reentrant("/M/A") == {"b1_out": {"a1_out"}}
