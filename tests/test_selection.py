"""Selections (graphtag.select, graphtag nodes) and the shared tag pattern language."""

from __future__ import annotations

import json

import pytest
from cli_helpers import assert_clean_failure, digest, run_cli
from scoped_builders import called_twice, layers, with_body

import graphtag
from graphtag.analysis.selection import known_tags, module_scopes, select
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.core.patterns import split_patterns, tag_pattern
from graphtag.passes import _outline_support


def test_pattern_language():
    regex = tag_pattern("*/Layer.*")
    assert regex.fullmatch("/M/Enc/Layer.0")
    assert not regex.fullmatch("/M/Enc/Layer.0/Attn")  # '*' stays in its segment
    assert tag_pattern("/M/**/Attn").fullmatch("/M/Enc/Layer.0/Attn")
    assert not tag_pattern("/Enc/Layer.0").fullmatch("/M/Enc/Layer.0")  # anchored
    assert tag_pattern("Layer.[01]").fullmatch("/M/Layer.1")
    assert not tag_pattern("Layer.[!01]").fullmatch("/M/Layer.1")
    either = tag_pattern("*/Layer.0|/M/Head")
    assert either.fullmatch("/M/Layer.0") and either.fullmatch("/M/Head")
    assert not either.fullmatch("/M/Layer.1")
    assert split_patterns(" a | [|b] |") == ["a", "[|b]"]  # '|' inside [...] does not split
    # Outlining speaks the same language through the same function.
    assert _outline_support.tag_pattern is tag_pattern


def test_select_modules_with_descendants_self_only_and_exclude():
    model = layers(3)
    everything = select(model, "/M")
    assert len(everything.nodes) == len(model.graph)  # the root contains every node
    layer = select(model, "*/Layer.1")
    assert layer.modules == ["/M/Layer.1"]
    assert {metadata.node_tag(n) for n in layer.nodes} == {"/M/Layer.1"}
    assert [n.op_type for n in layer.nodes] == ["MatMul", "Add", "Relu", "Relu", "Add", "Mul"]
    assert select(model, "/M", self_only=True).nodes == [
        n for n in model.graph if metadata.node_tag(n) == "/M"
    ]
    rest = select(model, "/M", exclude="*/Layer.*")
    assert {metadata.node_tag(n) for n in rest.nodes} == {"/M", "/M/Head"}
    assert rest.excluded_modules == ["/M/Layer.0", "/M/Layer.1", "/M/Layer.2"]
    # Graph order, whatever the pattern order.
    both = select(model, "/M/Head|*/Layer.0")
    order = {n: i for i, n in enumerate(model.graph)}
    assert [order[n] for n in both.nodes] == sorted(order[n] for n in both.nodes)


def test_values_and_initializers_of_a_selection():
    model = layers(2)
    layer = select(model, "*/Layer.0")
    assert [v.name for v in layer.initializers()] == ["layer.0.w", "layer.0.b"]
    assert [v.name for v in layer.values()] == [n.outputs[0].name for n in layer.nodes]


def test_with_contexts_adds_nodes_naming_a_selected_module():
    model = layers(2)
    head = next(n for n in model.graph if metadata.node_tag(n) == "/M/Head")
    metadata.set_contexts(head, [{"module": "/M/Layer.1", "role": "producer"}])
    plain = select(model, "*/Layer.1")
    assert head not in plain.nodes
    assert head in select(model, "*/Layer.1", with_contexts=True).nodes
    assert head not in select(model, "*/Layer.1", with_contexts=True, exclude="/M/Head").nodes


def test_body_nodes_belong_to_their_enclosing_node():
    model = with_body()
    branch = select(model, "*/Branch")
    assert [n.name for n in branch.nodes] == ["n_if"]
    assert [n.name for n in branch.all_nodes()] == ["n_if", "then_Neg", "else_Exp"]
    assert "/M/Branch" in known_tags(model)


def test_no_match_names_the_closest_tags():
    model = layers(2)
    with pytest.raises(GraphtagError, match="matches no module; closest: /M/Layer.1") as info:
        select(model, "*/Layer.1x")
    assert "/M/Layer.0" in str(info.value)
    with pytest.raises(GraphtagError, match="exclude pattern 'Nope' matches no module"):
        select(model, "/M", exclude="Nope")
    with pytest.raises(GraphtagError, match="empty pattern"):
        select(model, " | ")


def test_module_scopes_outermost_first_then_graph_order():
    model = layers(3)
    scopes = module_scopes(model, "/M/Head|*/Layer.*|/M")
    assert [tag for tag, _ in scopes] == ["/M", "/M/Layer.0", "/M/Layer.1", "/M/Layer.2", "/M/Head"]
    assert len(scopes[0][1]) == len(model.graph)
    shared = dict(module_scopes(called_twice(), "*/Shared"))
    assert [n.op_type for n in shared["/M/Shared"]] == ["Neg", "Relu", "Neg", "Relu"]


@pytest.fixture
def layers_path(tmp_path):
    path = tmp_path / "layers.onnx"
    graphtag.save(layers(2), path)
    return path


def test_nodes_command_lines_and_json(layers_path):
    before = digest(layers_path)
    proc = run_cli("nodes", layers_path, "--module", "*/Layer.1")
    assert proc.returncode == 0, proc.stderr
    expected = [n.name for n in select(graphtag.load(layers_path), "*/Layer.1").nodes]
    assert proc.stdout.splitlines() == expected and proc.stderr == ""
    proc = run_cli(
        "nodes", layers_path, "--module", "*/Layer.*", "--module", "/M/Head", "--format", "json"
    )
    data = json.loads(proc.stdout)
    assert data["modules"] == ["/M/Layer.0", "/M/Layer.1", "/M/Head"]
    assert {n["module"] for n in data["nodes"]} == {"/M/Layer.0", "/M/Layer.1", "/M/Head"}
    assert data["initializers"] == ["layer.0.w", "layer.0.b", "layer.1.w", "layer.1.b"]
    assert len(data["values"]) == len(data["nodes"])
    proc = run_cli("nodes", layers_path, "--module", "/M", "--exclude", "*/Layer.*", "--values")
    assert proc.stdout.split() == [
        n.outputs[0].name
        for n in graphtag.load(layers_path).graph
        if metadata.node_tag(n) in ("/M", "/M/Head")
    ]
    proc = run_cli("nodes", layers_path, "--module", "*/Layer.0", "--initializers")
    assert proc.stdout.split() == ["layer.0.w", "layer.0.b"]
    assert digest(layers_path) == before  # the input is never modified


def test_nodes_command_errors(layers_path, tmp_path):
    assert_clean_failure(
        run_cli("nodes", layers_path, "--module", "*/Layr.0"),
        "matches no module; closest: /M/Layer.0",
    )
    assert_clean_failure(run_cli("nodes", tmp_path / "missing.onnx", "--module", "/M"))
    proc = run_cli("nodes", layers_path, "--module", "/M/Head", "--exclude", "/M")
    assert proc.returncode == 0 and proc.stdout == ""
    assert "no node of the main graph is left" in proc.stderr
