"""retag: the pass, the command, graphtag.retag, onnx-graphsurgeon round trips, bad input.

The zoo-wide checks (every tool, every model) are in test_retag_zoo.py; here: renamed
values (structural matching), functions inlined by ONNX Runtime, subgraphs, the pass in
a pipeline, errors, and the graphsurgeon interop.
"""

from __future__ import annotations

import collections
import json
import sys
from types import SimpleNamespace

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
from cli_helpers import assert_clean_failure, digest, run_cli
from onnx_builders import run_ort
from zoo_exports import zoo_export

import graphtag
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.core.graphs import iter_all_nodes, iter_graphs
from graphtag.passes.function_outlining import outline
from graphtag.passes.retag import RetagPass, node_tags_by_name
from graphtag.pipeline import Pipeline

FLOAT = ir.TensorType(ir.DataType.FLOAT)


def _copy(model: ir.Model) -> ir.Model:
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


def _strip_and_rename(model: ir.Model, prefix: str = "x/") -> ir.Model:
    """A copy with every node's metadata dropped and every value and node renamed."""
    copy = model.clone(deep_copy=True)
    ir.external_data.load_to_model(copy)
    for graph in iter_graphs(copy):
        values = [*graph.inputs]
        if isinstance(graph, ir.Graph):
            values.extend(graph.initializers.values())
        for node in graph:
            node.metadata_props.clear()
            node.name = prefix + (node.name or "")
            values.extend(node.outputs)
        for value in values:
            if value.name and not value.name.startswith(prefix):
                if value.is_initializer():
                    graph.initializers.pop(value.name)
                    value.name = prefix + value.name
                    graph.initializers[value.name] = value
                else:
                    value.name = prefix + value.name
    return copy


def _cli(capsys, *args) -> SimpleNamespace:
    """The command run in this process (faster than a subprocess; same output path)."""
    from graphtag.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def _nodes(model: ir.Model) -> list[ir.Node]:
    return list(iter_all_nodes(model))


@pytest.fixture(scope="module")
def bert():
    return zoo_export("bert", "dynamo")


@pytest.fixture(scope="module")
def bert_ort_all(bert, tmp_path_factory):
    path = bert.path.parent / "bert-dynamo.test-retag.ort-all.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(path)
    options.log_severity_level = 3
    ort.InferenceSession(str(bert.path), options, providers=["CPUExecutionProvider"])
    return path


# -- matching ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bert", "siblings", "t5"])
def test_every_value_and_node_renamed_is_matched_structurally(name):
    case = zoo_export(name, "torchscript" if name == "t5" else "dynamo")
    reference = graphtag.load(case.path)
    expected = {n.name: metadata.node_tag(n) for n in reference.graph}
    rewritten = _strip_and_rename(reference)
    report = graphtag.retag(reference, rewritten)
    got = {n.name[2:]: metadata.node_tag(n) for n in rewritten.graph}
    assert got == expected
    # value: renamed constants matched by content make their Constant nodes plain matches
    assert set(report.counts) == {"retag:structural", "retag:value"}
    assert report.counts["retag:structural"] >= len(expected) / 2
    assert report.match_rate == 1.0 and not report.unmatched


def test_functions_inlined_by_onnx_runtime(bert, tmp_path):
    """An outlined export, run through ONNX Runtime (which inlines functions and prefixes
    their values): each module gets the same nodes as in the flat export."""
    outlined = graphtag.load(bert.path)
    ir.external_data.load_to_model(outlined)
    result = outline(outlined, pattern="*/BertLayer.*")
    assert len(result.outlined) == 2 and outlined.functions
    reference = tmp_path / "outlined.onnx"
    graphtag.save(outlined, reference)
    inlined = tmp_path / "inlined.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.optimized_model_filepath = str(inlined)
    ort.InferenceSession(str(reference), options, providers=["CPUExecutionProvider"])
    model = graphtag.load(inlined)
    assert not model.functions
    assert any(n.name.startswith("_inlfunc_") for n in model.graph)
    report = graphtag.retag(reference, model)
    assert report.flattened and not report.unmatched
    flat = graphtag.load(bert.path)  # the export before outlining: the truth per module
    want = collections.Counter((metadata.node_tag(n), n.op_type) for n in flat.graph)
    got = collections.Counter((metadata.node_tag(n), n.op_type) for n in model.graph)
    assert got == want


def _if_model() -> ir.Model:
    """x -> Relu (/M/A) -> If (/M/B; each branch reads the Relu output) -> Mul (/M)."""
    x = ir.Value(name="x", shape=ir.Shape([2, 3]), type=FLOAT)

    def node(op, inputs, name, tag, **kw):
        made = ir.Node("", op, inputs, name=name, **kw)
        made.outputs[0].name = f"{name}_out"
        made.outputs[0].type = FLOAT
        made.metadata_props[metadata.MODULE] = tag
        return made

    relu = node("Relu", [x], "relu", "/M/A")
    total = node("ReduceSum", [relu.outputs[0]], "sum", "/M/A")
    cond = node("Greater", [total.outputs[0], total.outputs[0]], "cond", "/M/A")
    cond.outputs[0].type = ir.TensorType(ir.DataType.BOOL)

    def branch(op):
        inner = node(op, [relu.outputs[0]], f"{op.lower()}_in_branch", "/M/B")
        return ir.Graph([], [inner.outputs[0]], nodes=[inner], name=f"{op}_body")

    choose = node(
        "If",
        [cond.outputs[0]],
        "choose",
        "/M/B",
        attributes=[
            ir.AttrGraph("then_branch", branch("Abs")),
            ir.AttrGraph("else_branch", branch("Neg")),
        ],
    )
    out = node("Mul", [choose.outputs[0], relu.outputs[0]], "out", "/M")
    graph = ir.Graph(
        [x],
        [out.outputs[0]],
        nodes=[relu, total, cond, choose, out],
        opset_imports={"": 20},
        name="if_model",
    )
    return ir.Model(graph, ir_version=10)


def test_nodes_inside_subgraphs_are_matched():
    reference = _if_model()
    expected = {n.name: metadata.node_tag(n) for n in _nodes(reference)}
    for rewritten in (_copy(reference), _strip_and_rename(reference)):
        for node in _nodes(rewritten):
            node.metadata_props.clear()
        report = graphtag.retag(reference, rewritten)
        got = {n.name.removeprefix("x/"): metadata.node_tag(n) for n in _nodes(rewritten)}
        assert got == expected
        assert report.nodes == 7 and not report.unmatched
        data = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
        want = run_ort(reference, {"x": data})[0]
        got = run_ort(rewritten, {rewritten.graph.inputs[0].name: data})[0]
        assert np.array_equal(want, got)


def _chain_model() -> ir.Model:
    """x -> Add (/M/A) -> Relu (/M/B/C) -> Mul with x (/M) -> y."""
    x = ir.Value(name="x", shape=ir.Shape([2, 3]), type=FLOAT)
    nodes, previous = [], x
    for op, name, tag, extra in (
        ("Add", "a", "/M/A", x),
        ("Relu", "r", "/M/B/C", None),
        ("Mul", "y", "/M", x),
    ):
        node = ir.Node("", op, [previous] + ([extra] if extra is not None else []), name=op)
        node.outputs[0].name, node.outputs[0].type = name, FLOAT
        node.metadata_props[metadata.MODULE] = tag
        nodes.append(node)
        previous = node.outputs[0]
    graph = ir.Graph([x], [previous], nodes=nodes, opset_imports={"": 20}, name="chain")
    return ir.Model(graph, ir_version=10)


def test_rewritten_and_fused_nodes():
    reference = _chain_model()
    # One new node (a new value name) standing for the Add alone.
    rewritten = _chain_model()
    add, relu, _ = list(rewritten.graph)
    alone = ir.Node("", "Mul", [add.inputs[0], add.inputs[0]], name="alone")
    alone.outputs[0].name = "fresh"
    relu.replace_input_with(0, alone.outputs[0])
    rewritten.graph.insert_before(add, alone)
    rewritten.graph.remove(add)
    for node in rewritten.graph:
        node.metadata_props.clear()
    graphtag.retag(reference, rewritten)
    assert metadata.node_tag(alone) == "/M/A" and metadata.tag_source(alone) == "retag:rewritten"
    assert metadata.tag_source(relu) == "retag:value" and metadata.node_tag(relu) == "/M/B/C"
    # One node replacing Add and Relu, producing Relu's value.
    rewritten = _chain_model()
    add, relu, mul = list(rewritten.graph)
    both = ir.Node("", "Sum", [add.inputs[0]], name="both")
    relu.outputs[0].name = "gone"
    both.outputs[0].name = "r"
    mul.replace_input_with(0, both.outputs[0])
    rewritten.graph.insert_before(add, both)
    rewritten.graph.remove([add, relu])
    report = graphtag.retag(reference, rewritten)
    assert metadata.node_tag(both) == "/M" and metadata.tag_source(both) == "retag:fused"
    assert metadata.contexts(both) == [
        {"module": "/M/A", "role": "fused"},
        {"module": "/M/B/C", "role": "fused"},
    ]
    assert report.counts == {"retag:fused": 1, "retag:value": 1}


def test_node_tags_by_name(bert, bert_ort_all):
    report = graphtag.retag(bert.path, bert_ort_all)
    tags = report.tags_by_node_name()
    assert tags == node_tags_by_name(report.model)
    assert len(tags) == len({n.name for n in report.model.graph})
    assert all(tags[n.name] == metadata.node_tag(n) for n in report.model.graph)


# -- the pass --------------------------------------------------------------------------------


def test_pass_in_a_pipeline_modifies_once(bert, bert_ort_all):
    model = graphtag.load(bert_ort_all)
    pipeline = Pipeline.from_text(f"retag{{reference={bert.path}}}")
    result = pipeline(model)
    assert result.modified
    record = pipeline.report.records[0]
    assert record.stats["nodes"] == len(list(model.graph))
    assert record.stats["retag:fused"] > 0 and record.stats["retag:value"] > 0
    tags = {n.name: dict(n.metadata_props) for n in model.graph}
    hierarchy = model.metadata_props[metadata.HIERARCHY]
    reference = graphtag.load(bert.path)
    assert hierarchy == reference.metadata_props[metadata.HIERARCHY]
    again = Pipeline.from_text(f"retag{{reference={bert.path}}}")
    assert not again(model).modified  # idempotent, and metadata survived untouched
    assert {n.name: dict(n.metadata_props) for n in model.graph} == tags


def test_pass_from_a_model_keeps_no_state(bert, bert_ort_all):
    reference = graphtag.load(bert.path)
    pass_ = RetagPass.from_model(reference)
    first, second = graphtag.load(bert_ort_all), graphtag.load(bert_ort_all)
    a, b = pass_(first), pass_(second)
    assert a.modified and b.modified and a.stats == b.stats
    assert [metadata.node_tag(n) for n in first.graph] == [
        metadata.node_tag(n) for n in second.graph
    ]


def test_pass_without_reference_is_an_error():
    with pytest.raises(GraphtagError, match="no reference"):
        RetagPass()(_if_model())


# -- the command -----------------------------------------------------------------------------


def test_command_retags_reports_and_leaves_inputs_alone(bert, bert_ort_all, tmp_path):
    out = tmp_path / "out.onnx"
    before = digest(bert.path), digest(bert_ort_all)
    proc = run_cli("retag", bert.path, bert_ort_all, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "retag:fused" in proc.stdout and "retag:value" in proc.stdout
    assert "not matched: none" in proc.stdout
    assert (digest(bert.path), digest(bert_ort_all)) == before
    proc = run_cli("validate", out)
    assert proc.returncode == 0, proc.stdout
    proc = run_cli("retag", bert.path, bert_ort_all, "-o", out, "--format", "json")
    data = json.loads(proc.stdout)
    assert sum(data["kinds"].values()) == data["nodes"] == len(list(graphtag.load(out).graph))
    assert data["unmatched"] == [] and data["match_rate"] > 0.5


def test_command_lists_what_it_could_not_match(bert, tmp_path, capsys):
    # An Identity on a new graph output replaces nothing: only propagation can tag it.
    model = graphtag.load(bert.path)
    ir.external_data.load_to_model(model)
    first = next(iter(model.graph))
    first_tag = metadata.node_tag(first)
    extra = ir.Node("", "Identity", [first.outputs[0]], name="added_by_hand")
    extra.outputs[0].name = "added_value"
    model.graph.insert_after(first, extra)
    model.graph.outputs.append(extra.outputs[0])
    for node in model.graph:
        node.metadata_props.clear()
    rewritten = tmp_path / "edited.onnx"
    graphtag.save(model, rewritten)
    proc = _cli(capsys, "retag", bert.path, rewritten, "-o", tmp_path / "out.onnx")
    assert proc.returncode == 0, proc.stderr
    assert "not matched (1, tagged by tag-propagation):" in proc.stdout
    assert f"added_by_hand (Identity) -> {first_tag} [inferred:" in proc.stdout


def test_reference_without_tags_is_an_error(bert_ort_all, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    proc = _cli(capsys, "retag", bert_ort_all, bert_ort_all, "-o", out)
    assert_clean_failure(proc, "has no graphtag tags")
    assert not out.exists()


def test_wrong_reference_is_an_error_unless_forced(bert_ort_all, tmp_path, capsys):
    other = zoo_export("gpt2", "dynamo").path
    out = tmp_path / "out.onnx"
    before = digest(other), digest(bert_ort_all)
    proc = run_cli("retag", other, bert_ort_all, "-o", out)
    assert_clean_failure(proc, "of the rewritten model's values", "--force")
    rate = proc.stderr.split("only ")[1].split("%")[0]
    assert int(rate) < 33
    assert not out.exists() and not list(tmp_path.iterdir())
    proc = _cli(capsys, "retag", other, bert_ort_all, "-o", out, "--force")
    assert proc.returncode == 0 and out.exists()
    assert (digest(other), digest(bert_ort_all)) == before


def test_unwritable_output_is_an_error_and_writes_nothing(bert, bert_ort_all, tmp_path, capsys):
    def retag(out):
        return _cli(capsys, "retag", bert.path, bert_ort_all, "-o", out)

    assert_clean_failure(retag(tmp_path / "missing" / "out.onnx"), "does not exist")
    assert_clean_failure(retag(tmp_path), "is a directory")
    assert_clean_failure(retag(bert_ort_all), "would overwrite an input")
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        proc = retag(folder / "out.onnx")
        if proc.returncode != 0:  # (root writes anywhere)
            assert_clean_failure(proc, "not writable")
            assert not list(folder.iterdir())
    finally:
        folder.chmod(0o700)


def test_failed_write_leaves_nothing(bert, bert_ort_all, tmp_path, monkeypatch, capsys):
    from graphtag.cli import main
    from graphtag.core import proto_file

    def broken_write(proto, path):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(proto_file, "write_proto", broken_write)
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    assert main(["retag", str(bert.path), str(bert_ort_all), "-o", str(out)]) == 2
    assert "disk full" in capsys.readouterr().err
    assert not list(out.parent.iterdir())


# -- onnx-graphsurgeon ----------------------------------------------------------------------


def _metadata(model: ir.Model):
    nodes = [(n.name, dict(n.metadata_props)) for n in _nodes(model)]
    values = [(v.name, dict(v.metadata_props)) for g in iter_graphs(model) for v in g.inputs]
    values += [
        (v.name, dict(v.metadata_props))
        for g in iter_graphs(model)
        if isinstance(g, ir.Graph)
        for v in g.initializers.values()
    ]
    values += [(v.name, dict(v.metadata_props)) for n in _nodes(model) for v in n.outputs]
    functions = {key: dict(f.metadata_props) for key, f in model.functions.items()}
    # graphsurgeon keeps node order but sorts initializers: values compared by name.
    return nodes, dict(values), functions, dict(model.metadata_props)


def test_graphsurgeon_round_trip_is_lossless(bert, tmp_path):
    from graphtag.tools.graphsurgeon import from_graphsurgeon, to_graphsurgeon

    flat = graphtag.load(bert.path)
    outlined = graphtag.load(bert.path)
    ir.external_data.load_to_model(outlined)
    outline(outlined, pattern="*/BertLayer.*")
    for reference in (flat, outlined):
        before = _metadata(reference)
        graph = to_graphsurgeon(reference)
        assert not any(getattr(n, "metadata_props", None) for n in graph.nodes)
        back = from_graphsurgeon(graph, reference=reference)
        assert _metadata(back) == before
        assert _metadata(reference) == before  # the reference is not modified
        assert len(back.functions) == len(reference.functions)


def test_graphsurgeon_edit_is_retagged(bert):
    import onnx_graphsurgeon as gs

    from graphtag.tools.graphsurgeon import retag_graphsurgeon, to_graphsurgeon

    reference = graphtag.load(bert.path)
    graph = to_graphsurgeon(bert.path)
    softmax = next(n for n in graph.nodes if n.op == "Softmax")
    value = softmax.outputs[0]
    copy = gs.Variable("scaled", dtype=value.dtype, shape=value.shape)
    users = [(c, i) for c in value.outputs for i, x in enumerate(c.inputs) if x is value]
    graph.nodes.append(gs.Node("Identity", name="inserted", inputs=[value], outputs=[copy]))
    for consumer, index in users:
        consumer.inputs[index] = copy
    graph.toposort()
    report = retag_graphsurgeon(graph, reference)
    model = report.model
    inserted = next(n for n in model.graph if n.name == "inserted")
    softmax_tag = next(metadata.node_tag(n) for n in reference.graph if n.op_type == "Softmax")
    assert metadata.node_tag(inserted) == softmax_tag
    assert metadata.tag_source(inserted).startswith("inferred:")
    by_name = {n.name: n for n in reference.graph}
    for node in model.graph:
        if node.name in by_name:
            assert dict(node.metadata_props) == dict(by_name[node.name].metadata_props)
    assert graphtag.validate(model).passed


def test_graphsurgeon_missing_is_a_clear_error(monkeypatch, bert):
    from graphtag.tools import graphsurgeon

    monkeypatch.setitem(sys.modules, "onnx_graphsurgeon", None)
    with pytest.raises(GraphtagError, match="onnx-graphsurgeon is not installed"):
        graphsurgeon.to_graphsurgeon(bert.path)
