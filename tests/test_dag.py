"""``graphtag dag``: per-module DAGs and operation metadata, checked against the graph."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path

import onnx_ir as ir
import pytest
from cli_helpers import assert_clean_failure, run_cli
from onnx_builders import tagged_mlp
from zoo_exports import zoo_export

import graphtag
from graphtag.core import metadata
from graphtag.core.hierarchy import Hierarchy
from graphtag.testing import GoldenJSONExtension
from graphtag.tools.dag import INITIALIZER_OP, module_dags, node_keys, operation_metadata


@pytest.fixture(scope="module")
def bert_path() -> Path:
    return zoo_export("bert", "dynamo").path


@pytest.fixture(scope="module")
def bert(bert_path) -> ir.Model:
    return graphtag.load(bert_path)


def _consumed(node: ir.Node) -> set[int]:
    from graphtag.core.graphs import outer_values

    return {id(v) for v in node.inputs if v is not None} | {id(v) for v in outer_values(node)}


def check_dags(model: ir.Model, dags: dict) -> None:
    keys = node_keys(model)
    by_key = {keys[id(n)]: n for n in model.graph}
    listed = Counter(name for entry in dags.values() for name in entry["nodes"])
    tagged = {keys[id(n)] for n in model.graph if metadata.node_tag(n)}
    # Every tagged node in exactly one module's list: the module of its own tag.
    assert set(listed) == tagged
    assert all(count == 1 for count in listed.values())
    for tag, entry in dags.items():
        assert all(metadata.node_tag(by_key[name]) == tag for name in entry["nodes"])
        own = set(entry["nodes"])
        edges = {tuple(edge) for edge in entry["edges"]}
        assert len(edges) == len(entry["edges"])  # no duplicates
        for src, dst in edges:  # every edge real: src produces a value dst reads
            assert src in own and dst in own
            produced = {id(v) for v in by_key[src].outputs}
            assert produced & _consumed(by_key[dst]), (src, dst)
        expected = {  # and every such pair among the module's nodes is an edge
            (src, dst)
            for dst in own
            for src in own
            if src != dst and {id(v) for v in by_key[src].outputs} & _consumed(by_key[dst])
        }
        assert edges == expected, tag
    hierarchy = Hierarchy.from_model(model)
    if hierarchy is not None:  # hierarchy order first, every module present
        assert list(dags)[: len(hierarchy)] == list(hierarchy.modules)


def check_ops(model: ir.Model, ops: dict) -> None:
    keys = node_keys(model)
    for node in model.graph:
        entry = ops[keys[id(node)]]
        assert entry["op_type"] == node.op_type
        assert entry["inputs"] == [v.name if v is not None else "" for v in node.inputs]
        assert entry["outputs"] == [v.name for v in node.outputs]
        tag = metadata.node_tag(node)
        assert entry["tags"][:1] == ([tag] if tag else [])
        if metadata.CONTEXTS in node.metadata_props:
            contexts = {c["module"] for c in json.loads(node.metadata_props[metadata.CONTEXTS])}
            assert contexts <= set(entry["tags"])
    initializers = [e for e in ops.values() if e["op_type"] == INITIALIZER_OP]
    assert len(initializers) == len(model.graph.initializers)
    assert len(ops) == len(list(model.graph)) + len(initializers)
    for name, value in model.graph.initializers.items():
        entry = ops.get(name) or ops[f"initializer:{name}"]
        assert entry["op_type"] == INITIALIZER_OP and entry["outputs"] == [name]
        users = {metadata.node_tag(use.node) for use in value.uses()} - {None}
        assert set(entry["tags"]) == users, name


def test_bert_dags_match_the_graph(bert):
    dags = module_dags(bert)
    check_dags(bert, dags)
    assert sum(len(e["edges"]) for e in dags.values()) > 0


def test_bert_ops_match_the_graph(bert):
    ops = operation_metadata(bert)
    check_ops(bert, ops)
    # A parameter shared by modules lists each of them.
    assert any(len(e["tags"]) > 1 for e in ops.values() if e["op_type"] == INITIALIZER_OP)


def test_siblings_unoptimized():
    # Unoptimized: more nodes per module, a module called twice, no fused contexts.
    from zoo import ZOO

    module, inputs = ZOO["siblings"].build()
    model = graphtag.export(module, inputs.args, optimize=False, verbose=False).model
    dags = module_dags(model)
    check_dags(model, dags)
    check_ops(model, operation_metadata(model))
    shared = dags["/SiblingsNet/Block.shared"]
    assert len(shared["nodes"]) > 4 and shared["edges"]


def test_unnamed_and_duplicate_node_names_get_unique_keys():
    model = tagged_mlp()
    nodes = list(model.graph)
    nodes[0].name = ""
    nodes[2].name = nodes[1].name
    keys = node_keys(model)
    assert len(set(keys.values())) == len(nodes)
    check_dags(model, module_dags(model))
    check_ops(model, operation_metadata(model))


# Golden files: golden/test_dag_golden_bert.json and golden/test_dag_golden_bert_ops.json.
def test_dag_golden_bert(bert, snapshot):
    assert module_dags(bert) == snapshot.use_extension(GoldenJSONExtension)


def test_dag_golden_bert_ops(bert, snapshot):
    assert operation_metadata(bert) == snapshot.use_extension(GoldenJSONExtension)


def test_cli_writes_both_files(bert, bert_path, tmp_path):
    out, ops = tmp_path / "dag.json", tmp_path / "ops.json"
    proc = run_cli("dag", bert_path, "-o", out, "--ops", ops)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text()) == module_dags(bert)
    assert json.loads(ops.read_text()) == operation_metadata(bert)
    assert "26 modules" in proc.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    again = tmp_path / "again.json"
    assert run_cli("dag", bert_path, "-o", again).returncode == 0
    assert again.read_bytes() == out.read_bytes()  # deterministic


def _main(*args, capsys) -> subprocess.CompletedProcess:
    """The command in-process (no interpreter start-up), as a CompletedProcess."""
    from graphtag.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_cli_bad_inputs(bert_path, tmp_path, capsys):
    def run_cli(*args):
        return _main(*args, capsys=capsys)

    missing = tmp_path / "missing.onnx"
    assert_clean_failure(run_cli("dag", missing, "-o", tmp_path / "d.json"), "no such file")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    assert_clean_failure(run_cli("dag", garbage, "-o", tmp_path / "d.json"), "not a readable")
    plain = tmp_path / "plain.onnx"
    model = tagged_mlp()
    for node in model.graph:
        node.metadata_props.pop(metadata.MODULE, None)
    graphtag.save(model, plain)
    assert_clean_failure(run_cli("dag", plain, "-o", tmp_path / "d.json"), "no node carries")
    # A bad --ops path fails before anything is written.
    out = tmp_path / "d.json"
    proc = run_cli("dag", bert_path, "-o", out, "--ops", tmp_path / "nope" / "ops.json")
    assert_clean_failure(proc, "does not exist")
    assert not out.exists()
    assert_clean_failure(run_cli("dag", bert_path, "-o", tmp_path), "is a directory")
    proc = run_cli("dag", bert_path)
    assert proc.returncode == 2 and "-o" in proc.stderr
