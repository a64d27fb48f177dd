"""``graphtag.analysis.summary`` and ``graphtag analyze``: hand-built graphs, formats, bad input."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import onnx_ir as ir
import pytest
from cli_helpers import assert_clean_failure, run_cli
from onnx_builders import tagged_mlp

import graphtag
from graphtag.analysis.summary import analyze
from graphtag.core import metadata
from graphtag.core.hierarchy import Hierarchy, ModuleInfo
from graphtag.core.metadata import parse_name_list

FC1, FC2, ROOT = "/MLP/Layer.fc1", "/MLP/Layer.fc2", "/MLP"


def mlp_with_hierarchy(**extra_params: list[str]) -> ir.Model:
    """tagged_mlp() plus the hierarchy an export would store (``extra_params``: tag suffix
    -> more recorded parameters of that module)."""
    model = tagged_mlp()
    infos = [
        ModuleInfo(ROOT, "", "tests.MLP", children={"fc1": "Layer", "fc2": "Layer"}),
        ModuleInfo(FC1, "fc1", "tests.Layer", ROOT, parameters=["fc1.weight", "fc1.bias"]),
        ModuleInfo(FC2, "fc2", "tests.Layer", ROOT, parameters=["fc2.weight"]),
    ]
    for info in infos:
        info.executed = True
        info.parameters.extend(extra_params.get(info.name or "root", []))
    hierarchy = Hierarchy({i.tag: i for i in infos}, {i.name: i.tag for i in infos})
    hierarchy.attach(model)
    return model


def nodes(model: ir.Model) -> list[ir.Node]:
    return list(model.graph)


def test_counts_histogram_and_order():
    model = mlp_with_hierarchy()
    extra = ir.Node("", "Relu", [nodes(model)[0].outputs[0]], name="extra")
    extra.metadata_props[metadata.MODULE] = "/MLP/Unknown"
    model.graph.append(extra)
    result = analyze(model)
    assert [m.tag for m in result.modules] == [ROOT, FC1, FC2, "/MLP/Unknown"]
    root, fc1, fc2, unknown = result.modules
    assert (fc2.nodes, fc2.nodes_inclusive) == (1, 1)
    assert (root.nodes, root.nodes_inclusive) == (1, 5)
    assert (fc1.nodes, fc1.nodes_inclusive, fc1.ops) == (2, 2, {"Add": 1, "MatMul": 1})
    assert fc1.parameters == 2 and fc1.class_name == "tests.Layer" and fc1.in_hierarchy
    assert (unknown.in_hierarchy, unknown.class_name, unknown.nodes) == (False, None, 1)
    assert (result.nodes, result.tagged, result.untagged) == (5, 5, [])
    assert result.has_hierarchy and result.shared_parameters == [] and result.functions == {}


def test_untagged_inferred_and_contexts():
    model = mlp_with_hierarchy()
    n0, n1, n2, _ = nodes(model)
    del n0.metadata_props[metadata.MODULE]
    n1.name = ""
    del n1.metadata_props[metadata.MODULE]
    n2.metadata_props[metadata.TAG_SOURCE] = "inferred:lca"
    n2.metadata_props[metadata.CONTEXTS] = json.dumps(
        [{"module": FC1, "role": "producer"}, {"module": FC2, "role": "consumer"}]
    )
    result = analyze(model)
    assert result.untagged == ["n0_MatMul", "Add#1"]
    assert result.tagged == 2 and result.module(FC1).nodes == 0
    assert result.inferred == {"lca": 1} and result.tag_sources == {"inferred:lca": 1}
    assert result.multi_context_nodes == 1
    assert result.context_roles == {"consumer": 1, "producer": 1}


def test_shared_parameters_come_from_the_graph_not_from_records():
    model = mlp_with_hierarchy()
    w1 = model.graph.initializers["fc1.weight"]
    reuse = ir.Node("", "Identity", [w1], name="reuse")
    reuse.metadata_props[metadata.MODULE] = FC2
    model.graph.append(reuse)
    shared = analyze(model).shared_parameters
    assert [(s.name, s.uses, s.initializers) for s in shared] == [
        ("fc1.weight", {FC1: 1, FC2: 1}, ["fc1.weight"])
    ]
    # The graph is the truth: a (wrong) pkg.graphtag.consumers record changes nothing
    # here; graphtag validate's consumers rule reports the disagreement.
    w2 = model.graph.initializers["fc2.weight"]
    w2.metadata_props[metadata.CONSUMERS] = json.dumps([FC2, ROOT])
    w1.metadata_props[metadata.CONSUMERS] = json.dumps([FC1])
    assert analyze(model).shared_parameters == shared


def test_module_called_twice_and_wrapper_prefix():
    # A module called twice reads its weight from two ops with the same tag: "reused",
    # reported with the shared ones. A wrapper's prefix ("model.") is seen through: the
    # parameter is reported under its PyTorch name, the initializer under its own.
    model = mlp_with_hierarchy()
    graph = model.graph
    w2 = graph.initializers["fc2.weight"]
    w2.name = "model.fc2.weight"
    second = ir.Node("", "MatMul", [nodes(model)[2].outputs[0], w2], name="fc2_again")
    second.metadata_props[metadata.MODULE] = FC2
    graph.append(second)
    (use,) = analyze(model).shared_parameters
    assert (use.name, use.initializers, use.uses) == ("fc2.weight", ["model.fc2.weight"], {FC2: 2})
    assert use.reused and not use.shared and use.owners == [FC2]
    assert json.loads(analyze(model).to_json())["shared_parameters"] == [
        {
            "name": "fc2.weight",
            "initializers": ["model.fc2.weight"],
            "uses": {FC2: 2},
            "owners": [FC2],
            "modules": [FC2],
        }
    ]


def test_shared_folded_initializer_reports_the_parameter_and_ignores_constants():
    model = mlp_with_hierarchy()
    graph = model.graph
    folded = ir.Value(
        name="val_7",
        shape=ir.Shape([3]),
        type=ir.TensorType(ir.DataType.FLOAT),
        const_value=ir.tensor(np.ones(3, np.float32), name="val_7"),
    )
    folded.metadata_props[metadata.ONNXSCRIPT_FOLDED_FROM] = "['fc2.weight', 'val_3']"
    graph.register_initializer(folded)
    shape = ir.Value(
        name="val_8",
        shape=ir.Shape([1]),
        type=ir.TensorType(ir.DataType.INT64),
        const_value=ir.tensor(np.array([3], np.int64), name="val_8"),
    )
    graph.register_initializer(shape)
    for index, tag in enumerate((FC1, FC2)):
        for value in (folded, shape):
            node = ir.Node("", "Identity", [value], name=f"use_{value.name}_{index}")
            node.metadata_props[metadata.MODULE] = tag
            graph.append(node)
    shared = analyze(model).shared_parameters
    # The shape constant is consumed by two modules too, but it is not a weight.
    assert [(s.name, s.initializers, s.tags) for s in shared] == [
        ("fc2.weight", ["fc2.weight", "val_7"], [FC1, FC2])
    ]


def test_functions_are_counted_by_calls():
    model = mlp_with_hierarchy()
    x = ir.Value(name="fx", type=ir.TensorType(ir.DataType.FLOAT))
    body = ir.Node("", "Relu", [x], name="fbody")
    fgraph = ir.Graph([x], body.outputs, nodes=[body], opset_imports={"": 21})
    for name in ("Block", "Unused"):
        function = ir.Function(
            "local", name, graph=fgraph if name == "Block" else _copy(), attributes=[]
        )
        model.functions[function.identifier()] = function
    source = nodes(model)[2].outputs[0]
    for index in range(2):
        call = ir.Node("local", "Block", [source], name=f"call{index}")
        call.metadata_props[metadata.MODULE] = ROOT
        model.graph.append(call)
    result = analyze(model)
    assert result.functions == {"local::Block": 2, "local::Unused": 0}
    assert result.nodes == 4 + 2 + 2  # main graph + calls + one body node per function
    assert result.untagged == ["fbody", "fbody2"]


def _copy() -> ir.Graph:
    x = ir.Value(name="fy", type=ir.TensorType(ir.DataType.FLOAT))
    body = ir.Node("", "Neg", [x], name="fbody2")
    return ir.Graph([x], body.outputs, nodes=[body], opset_imports={"": 21})


def test_model_without_graphtag_metadata():
    model = tagged_mlp()
    for node in model.graph:
        node.metadata_props.clear()
    result = analyze(model)
    assert result.modules == [] and not result.has_hierarchy
    assert result.untagged == ["n0_MatMul", "n1_Add", "n2_Relu", "n3_MatMul"]


def test_json_is_deterministic_and_filter_keeps_prefix(tmp_path):
    model = mlp_with_hierarchy()
    path = tmp_path / "m.onnx"
    graphtag.save(model, path)
    first = analyze(model).to_json()
    assert first == analyze(graphtag.load(path)).to_json()
    filtered = analyze(model).filtered("/MLP/Layer")
    assert [m.tag for m in filtered.modules] == [FC1, FC2]
    assert json.loads(filtered.to_json())["filter"] == "/MLP/Layer"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("['a.weight', 'val_1']", ["a.weight", "val_1"]),
        ('["a"]', ["a"]),
        ('"a"', ["a"]),
        ("not a list", None),
        ("[1, 2]", None),
    ],
)
def test_parse_name_list(text, expected):
    assert parse_name_list(text) == expected


# -- the command -----------------------------------------------------------------------------


@pytest.fixture
def tagged_path(tmp_path):
    path = tmp_path / "tagged.onnx"
    graphtag.save(mlp_with_hierarchy(), path)
    return path


def test_analyze_summary(tagged_path):
    proc = run_cli("analyze", tagged_path)
    assert proc.returncode == 0, proc.stderr
    assert "nodes: 4 (4 tagged, 0 untagged)" in proc.stdout
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("module "))
    assert lines[header].split() == ["module", "class", "nodes", "incl.", "ops"]
    assert lines[header + 2].split()[:4] == [FC1, "Layer", "2", "2"]


def test_analyze_detailed_json_csv(tagged_path):
    detailed = run_cli("analyze", tagged_path, "--format", "detailed")
    assert detailed.returncode == 0, detailed.stderr
    assert "MatMul:1 Add:1" in detailed.stdout or "Add:1 MatMul:1" in detailed.stdout
    data = json.loads(run_cli("analyze", tagged_path, "--format", "json").stdout)
    assert [m["tag"] for m in data["modules"]] == [ROOT, FC1, FC2]
    rows = list(csv.reader(io.StringIO(run_cli("analyze", tagged_path, "--format", "csv").stdout)))
    assert rows[0] == ["tag", "class", "executed", "nodes", "nodes_inclusive", "parameters", "ops"]
    assert [r[0] for r in rows[1:]] == [ROOT, FC1, FC2]
    assert rows[2][3:] == ["2", "2", "2", "Add:1;MatMul:1"]


def test_analyze_filter(tagged_path):
    proc = run_cli("analyze", tagged_path, "--format", "csv", "--filter", "/MLP/Layer.fc2")
    assert proc.returncode == 0, proc.stderr
    assert [r[0] for r in csv.reader(io.StringIO(proc.stdout))][1:] == [FC2]
    proc = run_cli("analyze", tagged_path, "--filter", "/MLP/Layr")
    assert_clean_failure(proc, "matches no module tag", "close tags:", FC1)


@pytest.mark.parametrize("kind", ["missing", "not-onnx"])
def test_analyze_bad_input(tmp_path, kind):
    path = tmp_path / "model.onnx"
    if kind == "not-onnx":
        path.write_text("hello")
    proc = run_cli("analyze", path)
    assert_clean_failure(proc, "no such file" if kind == "missing" else "not a readable ONNX model")
    assert proc.returncode == 2
