"""Selections (graphtag.select, graphtag nodes) and the shared tag pattern language."""

from __future__ import annotations

import json
import warnings

import pytest
from cli_helpers import assert_clean_failure, digest, run_cli
from scoped_builders import KEYED, called_twice, keyed, layers, with_body

import graphtag
from graphtag.analysis.selection import known_tags, module_scopes, no_match_error, select
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.core.patterns import match_tags, split_patterns, tag_pattern
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


def test_an_exact_tag_comes_before_glob_and_alternation():
    tags = ["/M", *KEYED, "/M/Head"]
    # Read as '/M/Leaf.d.c' or 'd', and as a class '[0]': the decoys, not the tags.
    assert match_tags("/M/Leaf.d.c|d", tags) == ["/M/Leaf.d.c|d"]
    assert match_tags("/M/Leaf.d.e[0]", tags) == ["/M/Leaf.d.e[0]"]
    assert match_tags(" /M/Leaf.d.e[0] ", tags) == ["/M/Leaf.d.e[0]"]
    # An alternative that is a whole tag is exact too; the others stay globs.
    assert match_tags("/M/Leaf.d.e[0]|*/Head", tags) == ["/M/Leaf.d.e[0]", "/M/Head"]
    # Several texts: each read on its own, so a tag holding '|' survives.
    assert match_tags(["/M/Leaf.d.c|d", "*/Head"], tags) == ["/M/Leaf.d.c|d", "/M/Head"]
    assert match_tags("/M/Leaf.d.c|d|*/Head", tags) == ["/M/Leaf.d.c", "/M/Head"]  # a glob
    # Not a tag: globs and alternation as before.
    assert match_tags("*/Leaf.d.e[0]", tags) == ["/M/Leaf.d.e0"]
    assert match_tags("*/Leaf.d.*", tags) == list(KEYED)
    assert match_tags("*/Leaf.d.e*|/M", tags) == ["/M", "/M/Leaf.d.e[0]", "/M/Leaf.d.e0"]
    assert match_tags("*/Nope", tags) == [] and match_tags([], tags) == []
    # The escape: a special character inside [...] is itself (no FutureWarning from re).
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert match_tags("*/Leaf.d.e[[]*", tags) == ["/M/Leaf.d.e[0]"]
        assert match_tags("*/Leaf.d.e[[]0[]]", tags) == ["/M/Leaf.d.e[0]"]
        assert match_tags("/M/Leaf.d.c[|]d|*/Head", tags) == ["/M/Leaf.d.c|d", "/M/Head"]
        assert match_tags("*/Leaf.d.?[|&~]?", tags) == ["/M/Leaf.d.c|d"]
        assert tag_pattern("[*]").fullmatch("/M/*") and not tag_pattern("[*]").fullmatch("/M/a")
    # tag_pattern alone knows no tags (a glob); given them, it is exact first as well.
    assert not tag_pattern("/M/Leaf.d.e[0]").fullmatch("/M/Leaf.d.e[0]")
    exact = tag_pattern("/M/Leaf.d.e[0]", set(tags))
    assert exact.fullmatch("/M/Leaf.d.e[0]") and not exact.fullmatch("/M/Leaf.d.e0")


def test_select_and_scopes_take_an_exact_tag_with_pattern_characters():
    model = keyed()
    for tag in KEYED:
        selection = select(model, tag)
        assert selection.modules == [tag]
        assert {metadata.node_tag(n) for n in selection.nodes} == {tag}
        assert [t for t, _ in module_scopes(model, tag)] == [tag]
    rest = select(model, "/M", exclude=["/M/Leaf.d.c|d", "/M/Leaf.d.e[0]"])
    assert rest.excluded_modules == ["/M/Leaf.d.c|d", "/M/Leaf.d.e[0]"]
    assert {metadata.node_tag(n) for n in rest.nodes} == {"/M", "/M/Leaf.d.c", "/M/Leaf.d.e0"}


def test_no_match_never_suggests_the_rejected_text():
    model = keyed()
    with pytest.raises(GraphtagError) as info:
        select(model, "/M/Leaf.d.e[1]")
    message = str(info.value)
    assert message.startswith("pattern '/M/Leaf.d.e[1]' matches no module; closest: ")
    assert "/M/Leaf.d.e[0]" in message.split("closest: ")[1].split(", ")  # the tag meant
    # Even asked with known tags that hold the text itself (a caller's stale list).
    error = no_match_error(["/M", *KEYED], "/M/Leaf.d.c|d")
    closest = str(error).split("closest: ")[1].split(", ")
    assert "/M/Leaf.d.c|d" not in closest and "/M/Leaf.d.c" not in closest
    error = no_match_error(["/M/A", "/M/B"], ["/M/A", "/M/C"])
    assert str(error) == "pattern '/M/A', '/M/C' matches no module; closest: /M/B"


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


def test_nodes_command_selects_an_exact_tag_with_pattern_characters(tmp_path):
    model = keyed()
    path = tmp_path / "keyed.onnx"
    graphtag.save(model, path)
    names = {tag: [n.name for n in model.graph if metadata.node_tag(n) == tag] for tag in KEYED}
    for tag in ("/M/Leaf.d.c|d", "/M/Leaf.d.e[0]"):
        proc = run_cli("nodes", path, "--module", tag)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines() == names[tag]
    proc = run_cli(
        "nodes",
        path,
        "--module",
        "/M/Leaf.d.e[0]",
        "--module",
        "/M/Leaf.d.c|d",
        "--exclude",
        "/M/Leaf.d.c|d",
        "--format",
        "json",
    )
    data = json.loads(proc.stdout)
    assert data["modules"] == ["/M/Leaf.d.c|d", "/M/Leaf.d.e[0]"]
    assert data["excluded_modules"] == ["/M/Leaf.d.c|d"]
    assert [n["name"] for n in data["nodes"]] == names["/M/Leaf.d.e[0]"]
    proc = run_cli("nodes", path, "--module", "*/Leaf.d.c[|]d|*/Leaf.d.e[[]*")
    assert proc.stdout.splitlines() == names["/M/Leaf.d.c|d"] + names["/M/Leaf.d.e[0]"]
    assert_clean_failure(
        run_cli("nodes", path, "--module", "/M/Leaf.d.e[1]"),
        "pattern '/M/Leaf.d.e[1]' matches no module; closest: ",
        "/M/Leaf.d.e[0]",
    )


def test_nodes_command_errors(layers_path, tmp_path):
    assert_clean_failure(
        run_cli("nodes", layers_path, "--module", "*/Layr.0"),
        "matches no module; closest: /M/Layer.0",
    )
    assert_clean_failure(run_cli("nodes", tmp_path / "missing.onnx", "--module", "/M"))
    proc = run_cli("nodes", layers_path, "--module", "/M/Head", "--exclude", "/M")
    assert proc.returncode == 0 and proc.stdout == ""
    assert "no node of the main graph is left" in proc.stderr
