"""namespace pass: tags into Model Explorer's ``namespace``, checked through its own adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from cli_helpers import run_cli, run_main
from onnx_builders import feeds, run_ort, tagged_mlp
from zoo_exports import zoo_export

import graphtag
from graphtag.core import metadata
from graphtag.passes.namespace import NamespacePass, namespace_for
from graphtag.pipeline import Pipeline

FLOAT = ir.TensorType(ir.DataType.FLOAT)
TESTS = Path(__file__).parent
TORCH_NS = "fc1: torch.nn.modules.linear.Linear"


def _copy(model: ir.Model) -> ir.Model:
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


def _mlp_with_torch_namespaces() -> ir.Model:
    model = tagged_mlp()
    for node in model.graph:
        node.metadata_props[metadata.NAMESPACE] = TORCH_NS
        node.metadata_props["other.key"] = "kept"
    return model


def test_writes_tags_and_keeps_the_original():
    model = _mlp_with_torch_namespaces()
    result = NamespacePass()(model)
    assert result.modified
    assert result.stats["written"] == len(model.graph) == result.stats["saved"]
    for node in model.graph:
        props = node.metadata_props
        assert props[metadata.NAMESPACE] == metadata.node_tag(node)
        assert props[metadata.ORIGINAL_NAMESPACE] == TORCH_NS
        assert props["other.key"] == "kept"
        assert metadata.node_tag(node) is not None  # the tag itself is untouched


def test_second_run_is_a_no_op_and_keeps_the_first_original():
    model = _mlp_with_torch_namespaces()
    NamespacePass()(model)
    before = ir.serde.serialize_model(model).SerializeToString()
    again = NamespacePass()(model)
    assert not again.modified
    assert ir.serde.serialize_model(model).SerializeToString() == before
    # A retag after the first run: the namespace follows, the torch original survives.
    node = next(iter(model.graph))
    metadata.set_tag(node, "/MLP/Other")
    third = NamespacePass()(model)
    assert third.modified and third.stats == {
        "written": 1,
        "saved": 0,
        "untagged": 0,
        "restored": 0,
    }
    assert node.metadata_props[metadata.NAMESPACE] == "/MLP/Other"
    assert node.metadata_props[metadata.ORIGINAL_NAMESPACE] == TORCH_NS


def test_restore_puts_the_original_back():
    model = tagged_mlp()
    first = next(iter(model.graph))
    first.metadata_props[metadata.NAMESPACE] = TORCH_NS  # the others have none
    original = _copy(model)
    NamespacePass()(model)
    restored = NamespacePass(restore=True)(model)
    assert restored.modified and restored.stats["restored"] == len(model.graph)
    for node, before in zip(model.graph, original.graph):
        assert dict(node.metadata_props) == dict(before.metadata_props)
    assert not NamespacePass(restore=True)(model).modified


def test_untagged_nodes_go_to_the_top_level():
    model = tagged_mlp()
    node = list(model.graph)[2]
    del node.metadata_props[metadata.MODULE]
    node.metadata_props[metadata.NAMESPACE] = TORCH_NS
    result = NamespacePass()(model)
    assert result.stats["untagged"] == 1
    assert node.metadata_props[metadata.NAMESPACE] == ""
    assert node.metadata_props[metadata.ORIGINAL_NAMESPACE] == TORCH_NS


def test_already_equal_namespace_is_not_modified():
    model = tagged_mlp()
    for node in model.graph:
        node.metadata_props[metadata.NAMESPACE] = metadata.node_tag(node)
    result = NamespacePass()(model)
    assert not result.modified
    assert all(metadata.ORIGINAL_NAMESPACE not in n.metadata_props for n in model.graph)


def _if_model() -> ir.Model:
    """/M/B is an If; its then-body holds a node of /M/B/Inner and one of /M/B, its
    else-body one of /Other (not inside /M/B)."""
    x = ir.Value(name="x", type=FLOAT, shape=ir.Shape([2]))
    cond = ir.Value(name="cond", type=ir.TensorType(ir.DataType.BOOL), shape=ir.Shape([]))

    def node(op, inputs, tag, name, **kw):
        n = ir.Node("", op, inputs, name=name, num_outputs=1, **kw)
        n.outputs[0].name = f"{name}_out"
        metadata.set_tag(n, tag)
        return n

    inner = node("Neg", [x], "/M/B/Inner", "inner")
    same = node("Relu", [inner.outputs[0]], "/M/B", "same")
    other = node("Abs", [x], "/Other", "other")
    then = ir.Graph([], [same.outputs[0]], nodes=[inner, same], name="then")
    otherwise = ir.Graph([], [other.outputs[0]], nodes=[other], name="else")
    branches = [ir.AttrGraph("then_branch", then), ir.AttrGraph("else_branch", otherwise)]
    cf = node("If", [cond], "/M/B", "if", attributes=branches)
    graph = ir.Graph([x, cond], [cf.outputs[0]], nodes=[cf], opset_imports={"": 21})
    return ir.Model(graph, ir_version=10)


def test_control_flow_bodies_get_the_path_below_their_enclosing_node():
    model = _if_model()
    NamespacePass()(model)
    by_name = {n.name: n for n in ir.traversal.RecursiveGraphIterator(model.graph)}
    ns = {name: n.metadata_props[metadata.NAMESPACE] for name, n in by_name.items()}
    assert ns == {"if": "/M/B", "inner": "/Inner", "same": "", "other": "/Other"}
    assert namespace_for(None) == ""
    assert namespace_for("/M/B/C", "/M") == "/B/C"
    assert namespace_for("/M", "/M/B") == "/M"


def test_pass_is_registered_and_runs_in_a_pipeline():
    model = _mlp_with_torch_namespaces()
    result = Pipeline.from_text("namespace")(model)
    assert result.modified
    assert all(n.metadata_props[metadata.NAMESPACE] == metadata.node_tag(n) for n in model.graph)


# ---------------------------------------------------------------- through Model Explorer


def _explorer_namespaces(path) -> tuple[str, dict[str, tuple[str, str]]]:
    """Model Explorer's own conversion: main graph id, node id -> (op label, namespace)."""
    pytest.importorskip("model_explorer_onnx", reason="model-explorer-onnx is a test extra")
    from model_explorer_onnx.main import ONNXAdapter

    graphs = ONNXAdapter().convert(str(path), {})["graphs"]
    main = graphs[0]
    return main.id, {n.id: (n.label, n.namespace) for n in main.nodes}


def test_model_explorer_layers_are_graphtags_tree(tmp_path):
    """A real dynamo export through `graphtag run -p namespace`, converted by Model
    Explorer's ONNX adapter: every operator's layer path is its tag."""
    case = zoo_export("bert", "dynamo")
    out = tmp_path / "bert-ns.onnx"
    proc = run_cli("run", case.path, "-p", "namespace", "-o", out)
    assert proc.returncode == 0, proc.stderr
    source = graphtag.load(case.path)
    torch_ns = {n.name: n.metadata_props.get(metadata.NAMESPACE) for n in source.graph}
    assert any(torch_ns.values()), "torch's exporter no longer writes namespace"

    graph_id, explorer = _explorer_namespaces(out)
    model = graphtag.load(out)
    checked = 0
    for node in model.graph:
        tag = metadata.node_tag(node)
        assert node.metadata_props[metadata.ORIGINAL_NAMESPACE] == (torch_ns[node.name] or "")
        if node.op_type == "Constant":
            continue  # the adapter moves constants next to their users (its own rule)
        label, namespace = explorer[node.name]
        assert label == node.op_type
        assert namespace == graph_id + tag, node.name
        checked += 1
    assert checked == sum(1 for n in model.graph if n.op_type != "Constant") > 50

    # Metadata only: the file stays checker-clean and computes the same outputs.
    onnx.checker.check_model(onnx.load(out), full_check=True)
    inputs = {name: t.numpy() for name, t in case.inputs.kwargs.items()}
    assert [v.name for v in source.graph.inputs] == list(inputs)
    for a, b in zip(run_ort(case.path, inputs), run_ort(out, inputs)):
        np.testing.assert_array_equal(a, b)


def test_export_namespace_flag(tmp_path, monkeypatch, capsys):
    out = tmp_path / "siblings.onnx"
    # In this process: torch is imported already (test_cli_export runs real processes).
    proc = run_main(
        monkeypatch, capsys, "export", f"{TESTS / 'zoo.py'}:siblings", out, "--namespace"
    )
    assert proc.returncode == 0, proc.stderr
    graph_id, explorer = _explorer_namespaces(out)
    model = graphtag.load(out)
    tags = set()
    for node in model.graph:
        if node.op_type != "Constant":
            tag = metadata.node_tag(node)
            tags.add(tag)
            assert explorer[node.name][1] == graph_id + tag
    assert len(tags) > 5  # the siblings' blocks are separate layers


def test_hand_built_model_through_model_explorer(tmp_path):
    model = tagged_mlp()
    NamespacePass()(model)
    path = tmp_path / "mlp.onnx"
    graphtag.save(model, path)
    graph_id, explorer = _explorer_namespaces(path)
    for node in model.graph:
        assert explorer[node.name][1] == graph_id + metadata.node_tag(node)
    np.testing.assert_allclose(
        run_ort(path, feeds(model))[0], run_ort(tagged_mlp(), feeds(model))[0]
    )
