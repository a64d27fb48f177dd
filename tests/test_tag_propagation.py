"""tag-propagation: untagged nodes get the deepest module around their neighbours."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx_ir as ir
import pytest
from onnx_builders import feeds, run_ort, tagged_mlp
from test_analysis import FC1, ROOT, mlp_with_hierarchy

from graphtag.checks.compare import compare_topology
from graphtag.core import metadata
from graphtag.passes.tag_propagation import TagPropagationPass


def _untag(model: ir.Model, *names: str) -> None:
    for node in model.graph:
        if node.name in names:
            del node.metadata_props[metadata.MODULE]


def _tags(model: ir.Model) -> dict[str, str | None]:
    return {n.name: metadata.node_tag(n) for n in model.graph}


def _copy(model: ir.Model) -> ir.Model:
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


def test_lca_of_neighbours_and_idempotent():
    model = tagged_mlp()
    # n1 (Add) sits between n0 in /MLP/Layer.fc1 and n2 in /MLP: their LCA is the root
    # /MLP, too coarse by default, so the producer side's LCA wins.
    _untag(model, "n1_Add")
    before = _copy(model)
    pass_ = TagPropagationPass()
    result = pass_(model)
    assert result.modified
    assert _tags(model)["n1_Add"] == "/MLP/Layer.fc1"
    node = next(n for n in model.graph if n.name == "n1_Add")
    assert node.metadata_props[metadata.TAG_SOURCE] == "inferred:producers-lca"
    assert result.stats == {"producers-lca": 1} and result.diagnostics == []
    # The pass keeps no state: a second run of the same instance reports its own figures.
    again = pass_(model)
    assert not again.modified and again.stats == {}
    assert compare_topology(model, before).identical
    np.testing.assert_array_equal(run_ort(model, feeds(model))[0], run_ort(before, feeds(model))[0])
    assert not TagPropagationPass()(model).modified


def test_root_is_used_only_when_allowed():
    model = tagged_mlp()
    _untag(model, "n1_Add")
    TagPropagationPass(allow_root=True)(model)
    assert _tags(model)["n1_Add"] == "/MLP"


def test_chain_of_untagged_nodes_is_filled_from_both_ends():
    model = tagged_mlp()
    _untag(model, "n1_Add", "n2_Relu")
    TagPropagationPass()(model)
    tags = _tags(model)
    assert tags["n1_Add"] == "/MLP/Layer.fc1"
    assert tags["n2_Relu"] in {"/MLP/Layer.fc1", "/MLP/Layer.fc2"}
    assert all(tags.values())


@pytest.mark.parametrize(
    ("strategy", "expected"), [("producers", "/MLP/Layer.fc1"), ("consumers", "/MLP")]
)
def test_strategies(strategy, expected):
    model = tagged_mlp()
    _untag(model, "n1_Add")
    TagPropagationPass(strategy=strategy)(model)
    assert _tags(model)["n1_Add"] == expected


def test_existing_tags_and_other_metadata_are_untouched():
    model = tagged_mlp()
    for node in model.graph:
        node.metadata_props["pkg.torch.onnx.name_scopes"] = json.dumps([node.name])
    original = {n.name: dict(n.metadata_props) for n in model.graph}
    assert not TagPropagationPass()(model).modified
    assert {n.name: dict(n.metadata_props) for n in model.graph} == original


def test_isolated_and_subgraph_nodes():
    model = tagged_mlp()
    # A constant nobody uses gets the root tag; a node inside an If body the If's tag.
    lonely = ir.node(
        "Constant", [], attributes={"value": ir.tensor(np.float32(1.0))}, name="lonely"
    )
    model.graph.insert_before(next(iter(model.graph)), lonely)
    cond = ir.node("Constant", [], attributes={"value": ir.tensor(True)}, name="cond")
    cond.metadata_props[metadata.MODULE] = "/MLP/Layer.fc2"
    x = model.graph.inputs[0]
    inner = ir.node("Identity", [x], name="inner")
    body = ir.Graph([], inner.outputs, nodes=[inner], name="then")
    other = ir.node("Identity", [x], name="other")
    else_body = ir.Graph([], other.outputs, nodes=[other], name="else")
    branch = ir.node(
        "If",
        [cond.outputs[0]],
        attributes={"then_branch": body, "else_branch": else_body},
        name="branch",
    )
    branch.metadata_props[metadata.MODULE] = "/MLP/Layer.fc2"
    model.graph.extend([cond, branch])
    result = TagPropagationPass()(model)
    assert metadata.node_tag(lonely) == "/MLP"
    assert metadata.node_tag(inner) == metadata.node_tag(other) == "/MLP/Layer.fc2"
    assert result.stats["root"] == 1 and result.stats["enclosing"] == 2


def test_model_without_any_tag_is_left_alone_and_says_why(caplog):
    model = tagged_mlp()
    for node in model.graph:
        node.metadata_props.clear()
    with caplog.at_level(logging.INFO, logger="graphtag.passes.tag_propagation"):
        result = TagPropagationPass()(model)
    assert not result.modified and result.stats == {"untagged": 4}
    assert result.diagnostics == ["4 nodes left untagged: the model has no tag to start from"]
    assert result.diagnostics[0] in caplog.text
    assert all(metadata.node_tag(n) is None for n in model.graph)


def test_a_node_with_no_tagged_neighbour_yet_does_not_stop_the_others():
    """An untagged node met first with no tagged neighbour waits; the nodes after it
    are still inferred (and an omitted optional input is no neighbour)."""
    model = tagged_mlp()
    lonely = ir.node(
        "Constant", [], attributes={"value": ir.tensor(np.float32(1.0))}, name="lonely"
    )
    model.graph.insert_before(next(iter(model.graph)), lonely)
    _untag(model, "n1_Add")
    add = model.graph.node(2)
    ceiling = ir.node("Constant", [], attributes={"value": ir.tensor(np.float32(6.0))})
    clip = ir.node("Clip", [add.outputs[0], None, ceiling.outputs[0]], name="clip")
    model.graph.insert_after(add, [ceiling, clip])
    TagPropagationPass(strategy="producers")(model)
    assert metadata.node_tag(add) == "/MLP/Layer.fc1"  # from its producer, not the root
    assert metadata.node_tag(clip) == "/MLP/Layer.fc1"
    assert metadata.node_tag(lonely) == "/MLP"


def _if_with_branches(model: ir.Model, tag: str, then_nodes, else_nodes) -> ir.Node:
    cond = ir.node("Constant", [], attributes={"value": ir.tensor(True)}, name="cond")
    cond.metadata_props[metadata.MODULE] = tag
    bodies = {}
    for name, body_nodes in (("then_branch", then_nodes), ("else_branch", else_nodes)):
        bodies[name] = ir.Graph([], body_nodes[-1].outputs, nodes=body_nodes, name=name)
    branch = ir.node("If", [cond.outputs[0]], attributes=bodies, name="branch")
    branch.metadata_props[metadata.MODULE] = tag
    model.graph.extend([cond, branch])
    return branch


def test_nodes_without_neighbours_take_the_module_whose_parameters_they_read():
    """torch's exporter gives nodes inside torch.cond branches no module: the weights
    they read name it, and their untagged neighbours follow from there."""
    model = mlp_with_hierarchy()
    x = model.graph.inputs[0]
    w1, b1 = model.graph.initializers["fc1.weight"], model.graph.initializers["fc1.bias"]
    matmul = ir.node("MatMul", [x, w1], name="then_matmul")
    add = ir.node("Add", [matmul.outputs[0], b1], name="then_add")
    after = ir.node("Relu", [add.outputs[0]], name="then_relu")  # reads no parameter
    plain = ir.node("Identity", [x], name="else_identity")  # reads no parameter
    _if_with_branches(model, ROOT, [matmul, add, after], [plain])
    result = TagPropagationPass()(model)
    assert result.modified
    assert metadata.node_tag(matmul) == metadata.node_tag(add) == FC1
    assert matmul.metadata_props[metadata.TAG_SOURCE] == "inferred:parameter"
    assert metadata.node_tag(after) == FC1  # from its producer
    assert metadata.node_tag(plain) == ROOT  # nothing to go by: the enclosing node's
    assert result.stats["parameter"] == 2 and result.stats["enclosing"] == 1
    assert not TagPropagationPass()(model).modified
    # A parameter of a module outside the enclosing node's does not decide.
    other = mlp_with_hierarchy()
    w2 = other.graph.initializers["fc2.weight"]
    inside = ir.node("Identity", [w2], name="reads_fc2")
    _if_with_branches(other, FC1, [inside], [ir.node("Identity", [w2], name="also")])
    TagPropagationPass()(other)
    assert metadata.node_tag(inside) == FC1
    assert inside.metadata_props[metadata.TAG_SOURCE] == "inferred:enclosing"
