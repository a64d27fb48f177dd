"""``graphtag.checks.validation`` and ``graphtag validate``: each rule failing and passing."""

from __future__ import annotations

import csv
import dataclasses
import io
import json

import numpy as np
import onnx_ir as ir
import pytest
from cli_helpers import assert_clean_failure, run_cli
from onnx_builders import tagged_mlp
from test_analysis import FC1, FC2, ROOT, mlp_with_hierarchy, nodes

import graphtag
from graphtag.analysis.summary import analyze
from graphtag.checks.validation import RULES, validate
from graphtag.core import metadata

ALL_PASS = {rule: "PASS" for rule in RULES} | {"consumers": "SKIP"}


def statuses(model: ir.Model) -> dict[str, str]:
    return {r.rule: r.status for r in validate(model).results}


def result(model: ir.Model, rule: str):
    return next(r for r in validate(model).results if r.rule == rule)


def add_initializer(model: ir.Model, name: str, data: np.ndarray) -> ir.Value:
    value = ir.Value(
        name=name,
        shape=ir.Shape(data.shape),
        type=ir.TensorType(ir.DataType.from_numpy(data.dtype)),
        const_value=ir.tensor(data, name=name),
    )
    model.graph.register_initializer(value)
    return value


def test_tagged_model_passes_every_rule():
    report = validate(mlp_with_hierarchy())
    assert {r.rule: r.status for r in report.results} == ALL_PASS
    assert report.passed and report.counts() == {"PASS": 8, "FAIL": 0, "SKIP": 1}


def test_checker_failure():
    model = mlp_with_hierarchy()
    nodes(model)[2].op_type = "NoSuchOp"
    assert statuses(model) == ALL_PASS | {"onnx-checker": "FAIL"}


@pytest.mark.parametrize(
    ("tag", "rule", "fragment"),
    [
        ("MLP/Layer.fc1", "tag-format", "1 malformed tags: n1_Add='MLP/Layer.fc1'"),
        ("/MLP//fc1", "tag-format", "malformed"),
        ("/MLP/Layer.fc3", "tags-in-hierarchy", "1 tags not in the hierarchy: /MLP/Layer.fc3"),
    ],
)
def test_broken_tags(tag, rule, fragment):
    model = mlp_with_hierarchy()
    nodes(model)[1].metadata_props[metadata.MODULE] = tag
    report = validate(model)
    failed = {r.rule: r.detail for r in report.results if r.status == "FAIL"}
    assert list(failed) == [rule] and fragment in failed[rule]
    assert not report.passed


def test_untagged_node_fails_coverage():
    model = mlp_with_hierarchy()
    del nodes(model)[2].metadata_props[metadata.MODULE]
    check = result(model, "node-coverage")
    assert (check.status, check.items) == ("FAIL", ["n2_Relu"])
    assert "1 of 4 nodes untagged: n2_Relu" in check.detail


def test_model_without_graphtag_metadata_fails_tag_rules_without_crashing():
    model = tagged_mlp()
    for node in model.graph:
        node.metadata_props.clear()
    results = {r.rule: r for r in validate(model).results}
    assert {k: r.status for k, r in results.items()} == ALL_PASS | {
        "tag-format": "FAIL",
        "tags-in-hierarchy": "FAIL",
        "node-coverage": "FAIL",
        "parameter-coverage": "SKIP",
    }
    assert "not tagged by graphtag" in results["tag-format"].detail
    assert "no pkg.graphtag.core.hierarchy" in results["tags-in-hierarchy"].detail


def test_unreadable_hierarchy():
    model = mlp_with_hierarchy()
    model.metadata_props[metadata.HIERARCHY] = "{not json"
    check = result(model, "tags-in-hierarchy")
    assert check.status == "FAIL" and "unreadable pkg.graphtag.core.hierarchy" in check.detail


# -- parameter coverage ----------------------------------------------------------------------


def test_unaccounted_parameter_fails():
    model = mlp_with_hierarchy(fc1=["fc1.scale"])
    check = result(model, "parameter-coverage")
    assert check.status == "FAIL" and check.items == ["fc1.scale"]
    assert check.detail == "4 parameters: 3 initializers, 1 missing; 1 not found: fc1.scale"


def test_parameter_under_a_prefixed_name_fails():
    # What a wrapper module leaks into initializer names: the hierarchy's names no longer
    # find the weights.
    model = mlp_with_hierarchy()
    model.graph.initializers["fc2.weight"].name = "model.fc2.weight"
    check = result(model, "parameter-coverage")
    assert check.status == "FAIL"
    assert check.items == ["fc2.weight (stored as model.fc2.weight)"]
    assert "1 stored under another name" in check.detail


@pytest.mark.parametrize(
    ("key", "text"),
    [
        (metadata.ONNXSCRIPT_FOLDED_FROM, "['fc2.weight', 'val_3']"),
        (metadata.ORIGIN, '["fc2.weight"]'),  # graphtag's own, from the multi-consumer pass
    ],
)
def test_folded_parameter_is_accounted_for(key, text):
    model = mlp_with_hierarchy()
    old = model.graph.initializers["fc2.weight"]
    folded = add_initializer(model, "val_0", old.const_value.numpy() * 2)
    folded.metadata_props[key] = text
    nodes(model)[3].replace_input_with(1, folded)
    model.graph.initializers.pop("fc2.weight")
    assert statuses(model) == ALL_PASS
    assert (
        "2 initializers, 1 folded (recorded origin)" in result(model, "parameter-coverage").detail
    )


def test_parameter_fused_into_a_derived_constant_is_counted_as_removed():
    model = mlp_with_hierarchy()
    old = model.graph.initializers.pop("fc1.bias")
    fused = add_initializer(model, "fc1.weight_bias", old.const_value.numpy() + 1)
    nodes(model)[1].replace_input_with(1, fused)
    check = result(model, "parameter-coverage")
    assert (check.status, check.items) == ("PASS", ["fc1.bias"])
    assert "1 removed by the optimizer" in check.detail


def test_int_constant_is_no_evidence_of_fusion():
    # A module that reads only shape-like constants cannot hold a float weight's value.
    model = mlp_with_hierarchy()
    model.graph.initializers.pop("fc1.bias")
    shape = add_initializer(model, "val_9", np.array([1, 8], np.int64))
    nodes(model)[1].replace_input_with(1, shape)
    assert result(model, "parameter-coverage").items == ["fc1.bias"]


def test_parameters_of_modules_that_did_not_run_or_have_no_nodes():
    model = mlp_with_hierarchy(root=["extra.weight"])
    hierarchy = graphtag.Hierarchy.from_model(model)
    skipped = graphtag.ModuleInfo(
        "/MLP/Layer.skip", "skip", "tests.Layer", ROOT, parameters=["skip.w"], executed=False
    )
    folded = graphtag.ModuleInfo(
        "/MLP/Layer.gone", "gone", "tests.Layer", ROOT, parameters=["gone.w"], executed=True
    )
    hierarchy.modules.update({m.tag: m for m in (skipped, folded)})
    hierarchy.attach(model)
    check = result(model, "parameter-coverage")
    assert check.status == "FAIL" and check.items == ["extra.weight"]  # root still has nodes
    assert "1 of modules that did not run" in check.detail
    assert "1 removed by the optimizer" in check.detail  # /MLP/Layer.gone has no node left


def test_tied_parameter_is_accounted_for():
    # Like GPT-2: the embedding reads the head's weight; the embedding's own name is gone.
    model = mlp_with_hierarchy()
    hierarchy = graphtag.Hierarchy.from_model(model)
    emb = graphtag.ModuleInfo(
        "/MLP/Embedding", "emb", "tests.Embedding", ROOT, parameters=["emb.weight"]
    )
    emb.executed = True
    hierarchy.modules[emb.tag] = emb
    hierarchy.attach(model)
    gather = ir.Node("", "Identity", [model.graph.initializers["fc2.weight"]], name="gather")
    gather.metadata_props[metadata.MODULE] = emb.tag
    model.graph.append(gather)
    model.graph.outputs.append(gather.outputs[0])
    check = result(model, "parameter-coverage")
    assert check.status == "PASS" and "1 tied to a shared parameter" in check.detail
    # Without the second consumer the same model has a missing parameter.
    gather.replace_input_with(0, nodes(model)[0].outputs[0])
    assert result(model, "parameter-coverage").items == ["emb.weight"]


# -- graph structure -------------------------------------------------------------------------


def test_dead_node_fails_orphans():
    model = mlp_with_hierarchy()
    dead = ir.Node("", "Relu", [nodes(model)[0].outputs[0]], name="dead")
    dead.metadata_props[metadata.MODULE] = FC1
    model.graph.append(dead)
    assert statuses(model) == ALL_PASS | {"orphan-nodes": "FAIL"}
    assert result(model, "orphan-nodes").items == ["dead"]


def test_dead_nodes_torch_left_are_kept_and_listed_others_still_fail():
    model = mlp_with_hierarchy()
    first = nodes(model)[0].outputs[0]
    model.graph.append(ir.Node("", "Identity", [first], name="torch_dead"))
    metadata.set_exporter_dead_nodes(model, ["torch_dead"])
    check = result(model, "orphan-nodes")
    assert check.status == "PASS" and check.items == ["torch_dead"]
    assert "torch's exporter left" in check.detail
    # A dead node the record does not name fails, and only it is listed.
    model.graph.append(ir.Node("", "Relu", [first], name="ours"))
    check = result(model, "orphan-nodes")
    assert check.status == "FAIL" and check.items == ["ours"]
    metadata.set_exporter_dead_nodes(model, [])
    assert metadata.EXPORTER_DEAD_NODES not in model.metadata_props


def test_cycle_is_found():
    model = mlp_with_hierarchy()
    _, n1, n2, _ = nodes(model)
    n1.replace_input_with(0, n2.outputs[0])  # Add <- Relu <- Add
    check = result(model, "cycles")
    assert check.status == "FAIL"
    assert set(check.items) == {"n1_Add", "n2_Relu", "n3_MatMul"}  # n3 lies behind it
    assert statuses(model)["onnx-checker"] == "FAIL"
    assert "n0_MatMul" in result(model, "orphan-nodes").items


def test_subgraph_nodes_are_walked():
    model = mlp_with_hierarchy()
    relu_out = nodes(model)[2].outputs[0]
    cond = add_initializer(model, "cond", np.array(True))

    def branch(op: str, tag: str | None) -> ir.Graph:
        inner = ir.Node("", op, [relu_out], name=f"{op}_inner")
        dead = ir.Node("", "Neg", [relu_out], name=f"{op}_dead")
        for node in (inner, dead):
            if tag:
                node.metadata_props[metadata.MODULE] = tag
        return ir.Graph([], inner.outputs, nodes=[inner, dead], name=op)

    if_node = ir.Node(
        "",
        "If",
        [cond],
        attributes=[
            ir.AttrGraph("then_branch", branch("Relu", FC2)),
            ir.AttrGraph("else_branch", branch("Sigmoid", None)),
        ],
        name="if",
        num_outputs=1,
    )
    if_node.metadata_props[metadata.MODULE] = FC2
    model.graph.append(if_node)
    model.graph.outputs.append(if_node.outputs[0])
    report = {r.rule: r for r in validate(model).results}
    assert report["node-coverage"].items == ["Sigmoid_inner", "Sigmoid_dead"]
    assert sorted(report["orphan-nodes"].items) == ["Relu_dead", "Sigmoid_dead"]
    assert report["cycles"].status == "PASS"


def test_consumers_entries():
    model = mlp_with_hierarchy()
    w1 = model.graph.initializers["fc1.weight"]
    w1.metadata_props[metadata.CONSUMERS] = json.dumps([FC1])
    nodes(model)[0].outputs[0].metadata_props[metadata.CONSUMERS] = json.dumps([FC1])
    assert result(model, "consumers").status == "PASS"
    w1.metadata_props[metadata.CONSUMERS] = json.dumps([FC2])
    check = result(model, "consumers")
    assert check.status == "FAIL"
    assert check.items == [f"fc1.weight: recorded but not consuming ['{FC2}'], missing ['{FC1}']"]
    w1.metadata_props[metadata.CONSUMERS] = "{oops"
    assert "unreadable" in result(model, "consumers").items[0]


def test_consumers_written_by_the_multi_consumer_pass_agree():
    passes = pytest.importorskip("graphtag.passes.multi_consumer")
    model = mlp_with_hierarchy()
    passes.MultiConsumerPass()(model)
    check = result(model, "consumers")
    assert check.status == "PASS", check.detail


# -- the command -----------------------------------------------------------------------------


def test_validate_cli_pass_fail_and_json(tmp_path):
    good = tmp_path / "good.onnx"
    graphtag.save(mlp_with_hierarchy(), good)
    proc = run_cli("validate", good)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["rule", "status", "detail"]
    assert [line.split()[0] for line in lines[2 : 2 + len(RULES)]] == list(RULES)
    assert lines[-1].endswith("8 passed, 0 failed, 1 skipped")
    # --help lists the rules without importing the checks (a constant kept equal here).
    from graphtag.cli.validate_cmd import RULE_NAMES

    assert tuple(RULES) == RULE_NAMES
    rows = list(csv.DictReader(io.StringIO(run_cli("validate", good, "--format", "csv").stdout)))
    assert [(r["rule"], r["status"]) for r in rows] == list(ALL_PASS.items())

    model = mlp_with_hierarchy()
    dead = ir.Node("", "Relu", [nodes(model)[0].outputs[0]], name="dead")
    model.graph.append(dead)
    bad = tmp_path / "bad.onnx"
    graphtag.save(model, bad)
    proc = run_cli("validate", bad, "--format", "json")
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["passed"] is False and data["model"] == str(bad)
    failed = {r["rule"]: r["items"] for r in data["rules"] if r["status"] == "FAIL"}
    assert failed == {"node-coverage": ["dead"], "orphan-nodes": ["dead"]}


@pytest.mark.parametrize("kind", ["missing", "not-onnx"])
def test_validate_bad_input(tmp_path, kind):
    path = tmp_path / "model.onnx"
    if kind == "not-onnx":
        path.write_bytes(b"\x00\x01garbage")
    proc = run_cli("validate", path)
    assert_clean_failure(proc)
    assert proc.returncode == 2


# -- real exports ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoo_path(tmp_path_factory):
    """Tagged dynamo exports (optimizer on), each built once; no plain export needed here."""
    pytest.importorskip("torch")
    from zoo import ZOO

    folder = tmp_path_factory.mktemp("zoo")
    paths = {}

    def export(name: str):
        if name not in paths:
            module, inputs = ZOO[name].build()
            paths[name] = folder / f"{name}.onnx"
            graphtag.export(module, inputs.args, inputs.kwargs, paths[name], verbose=False)
        return paths[name]

    return export


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "coverage"),
    [
        # Linear weights are transposed and folded; onnxscript records their origin.
        ("bert", "12 folded (recorded origin)"),
        # lm_head.weight and transformer.wte.weight are one tensor, stored under one name.
        ("gpt2-lmhead", "1 tied to a shared parameter"),
        # Batch norms are fused into the convolutions without a recorded origin.
        ("resnet", "12 removed by the optimizer"),
    ],
)
def test_zoo_exports_validate_and_analyze(zoo_path, name, coverage):
    path = zoo_path(name)
    proc = run_cli("validate", path, "--format", "json")
    assert proc.returncode == 0, proc.stdout
    rules = {r["rule"]: r for r in json.loads(proc.stdout)["rules"]}
    assert coverage in rules["parameter-coverage"]["detail"]
    analysis = analyze(graphtag.load(path))
    assert analysis.untagged == [] and analysis.modules[0].nodes_inclusive == analysis.nodes
    shared = [(s.name, len(s.tags)) for s in analysis.shared_parameters]
    assert shared == ([("lm_head.weight", 2)] if name == "gpt2-lmhead" else [])


def test_parameters_named_through_a_module_s_other_name():
    """One module object under two names (``pa.s`` and ``pb.inner``): the hierarchy
    records its parameters under the first name, dynamo names the initializers after
    the other. They count as held under another name of their module (was: "removed by
    the optimizer"), and only because the hierarchy knows that name."""
    from alias_models import two_parents

    from graphtag.checks.validation import parameter_kinds

    module, args = two_parents()
    model = graphtag.export(module, args, optimize=False, exporter="dynamo", verbose=False).model
    hierarchy = graphtag.Hierarchy.from_model(model)
    shared = hierarchy.tag_of("pa.s")
    assert hierarchy.tag_of("pb.inner") == shared and hierarchy.is_alias("pb.inner")
    assert not hierarchy.is_alias("pa.s") and not hierarchy.is_alias("pa.s.l")
    assert hierarchy.alias_roots() == {shared: ["pb.inner"]}
    assert "pb.inner.l.weight" in model.graph.initializers
    check = result(model, "parameter-coverage")
    assert check.status == "PASS" and "2 under another name of their module" in check.detail
    kinds = parameter_kinds(model, hierarchy)
    assert kinds["pa.s.l.weight"] == kinds["pa.s.l.bias"] == "alias"
    assert kinds["pa.own.weight"] == "initializer"
    # Without the second name the same initializers explain nothing by name.
    forgotten = dataclasses.replace(
        hierarchy,
        name_to_tag={n: t for n, t in hierarchy.name_to_tag.items() if not n.startswith("pb.")},
    )
    assert parameter_kinds(model, forgotten)["pa.s.l.weight"] != "alias"
