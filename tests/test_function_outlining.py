"""function-outlining / function-inlining: hand-built graphs and the whole dynamo zoo."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx_builders import run_ort
from scoped_builders import KEYED, keyed
from zoo import ZOO
from zoo_exports import model_feeds, zoo_export

import graphtag
from graphtag.analysis.signature import tensor_digest
from graphtag.analysis.summary import analyze
from graphtag.checks.compare import compare_topology
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError, PipelineError
from graphtag.core.hierarchy import Hierarchy, ModuleInfo
from graphtag.passes import _outline_support as sup
from graphtag.passes.function_inlining import FunctionInliningPass
from graphtag.passes.function_outlining import FunctionOutliningPass, outline
from graphtag.pipeline.parse import parse_pipeline
from graphtag.pipeline.registry import registry

FLOAT = ir.TensorType(ir.DataType.FLOAT)
DYNAMO_MODELS = [name for name, entry in ZOO.items() if "dynamo" in entry.exporters]


# ---------------------------------------------------------------- helpers


def _copy(model: ir.Model) -> ir.Model:
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


@functools.cache
def _zoo(name: str) -> tuple[bytes, dict[str, np.ndarray]]:
    case = zoo_export(name, "dynamo")
    model = ir.external_data.load_to_model(graphtag.load(case.path))
    return ir.serde.serialize_model(model).SerializeToString(), model_feeds(model, case.inputs)


def zoo_model(name: str) -> tuple[ir.Model, dict[str, np.ndarray]]:
    data, feeds = _zoo(name)
    return ir.serde.deserialize_model(onnx.load_from_string(data)), feeds


def check_and_run(model: ir.Model, tmp_path: Path, feeds) -> list[np.ndarray]:
    path = tmp_path / "outlined.onnx"
    graphtag.save(model, path, external_data=False)
    onnx.checker.check_model(str(path), full_check=True)
    return run_ort(path, feeds)


def assert_same_outputs(expected, got) -> None:
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_allclose(have, want, rtol=0, atol=1e-6)


def metadata_of(model: ir.Model) -> list[tuple]:
    return [
        (n.name, dict(n.metadata_props), [dict(v.metadata_props) for v in n.outputs])
        for n in model.graph
    ]


def assert_round_trip(before: ir.Model, outlined: ir.Model) -> None:
    assert FunctionInliningPass()(outlined).modified
    diff = compare_topology(before, outlined)
    assert diff.identical, diff.report()
    assert metadata_of(outlined) == metadata_of(before)
    assert not outlined.functions


def calls(model: ir.Model) -> list[ir.Node]:
    return [n for n in model.graph if n.domain == sup.DOMAIN]


# ---------------------------------------------------------------- hand-built graphs


def _node(op, inputs, name, tag, **attrs) -> ir.Node:
    node = ir.Node("", op, inputs, attributes=[ir.AttrInt64(k, v) for k, v in attrs.items()])
    node.name = name
    node.outputs[0].name = f"{name}_out"
    node.metadata_props[metadata.MODULE] = tag
    return node


def layered(steps, tags: dict[str, str], weights: int = 0) -> ir.Model:
    """A chain-free builder: steps = (name, op, input names, tag); last step is the output."""
    rng = np.random.default_rng(0)
    x = ir.Value(name="x", shape=ir.Shape([2, 4]), type=FLOAT)
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": 21}, name="g")
    values = {"x": x}
    for i in range(weights):
        tensor = ir.tensor(rng.standard_normal((4, 4)).astype(np.float32), name=f"w{i}")
        value = ir.Value(name=f"w{i}", shape=tensor.shape, type=FLOAT, const_value=tensor)
        graph.register_initializer(value)
        values[f"w{i}"] = value
    for name, op, inputs, tag in steps:
        if op == "Constant":
            node = ir.Node(
                "", "Constant", [], attributes=[ir.AttrTensor("value", ir.tensor(np.float32(0.5)))]
            )
            node.name, node.outputs[0].name = name, f"{name}_out"
            node.metadata_props[metadata.MODULE] = tag
        else:
            node = _node(op, [values[i] for i in inputs], name, tag)
        values[name] = node.outputs[0]
        graph.append(node)
    out = values[steps[-1][0]]
    out.shape, out.type = ir.Shape([2, 4]), FLOAT
    graph.outputs.append(out)
    model = ir.Model(graph, ir_version=10)
    modules = {
        tag: ModuleInfo(tag=tag, name=name, class_name=cls, parent=tag.rsplit("/", 1)[0] or None)
        for tag, (name, cls) in {"/M": ("", "pkg.M"), **tags}.items()
    }
    Hierarchy(modules, {info.name: tag for tag, info in modules.items()}).attach(model)
    return model


L0, L1 = "/M/Layer.0", "/M/Layer.1"
LAYER_TAGS = {L0: ("layers.0", "pkg.mod.Layer"), L1: ("layers.1", "pkg.mod.Layer")}


def two_layers() -> ir.Model:
    """Two instances of one class: MatMul by its own weight, a Constant, Mul, Relu."""
    steps = [
        ("mm0", "MatMul", ["x", "w0"], L0),
        ("c0", "Constant", [], L0),
        ("mul0", "Mul", ["mm0", "c0"], L0),
        ("relu0", "Relu", ["mul0"], L0),
        ("mm1", "MatMul", ["relu0", "w1"], L1),
        ("c1", "Constant", [], L1),
        ("mul1", "Mul", ["mm1", "c1"], L1),
        ("relu1", "Relu", ["mul1"], L1),
        ("head", "Neg", ["relu1"], "/M"),
    ]
    return layered(steps, LAYER_TAGS, weights=2)


def test_same_class_instances_share_one_function(tmp_path):
    model = two_layers()
    before = _copy(model)
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)}
    expected = run_ort(before, feeds)
    result = FunctionOutliningPass(pattern="*/Layer.*")(model)
    assert result.modified
    assert result.skipped == [] and result.diagnostics == []
    assert [key for _, key in result.outlined] == ["pkg.graphtag::Layer"] * 2
    assert result.stats == {"outlined": 2, "functions": 1, "skipped": 0}
    (function,) = model.functions.values()
    assert function.identifier() == ("pkg.graphtag", "Layer", "")
    assert [n.op_type for n in function] == ["MatMul", "Constant", "Mul", "Relu"]
    assert len(function.inputs) == 2  # x and the weight: weights are passed in
    assert function.opset_imports == {"": 21}
    assert metadata.function_class(function) == "pkg.mod.Layer"
    assert set(model.graph.initializers) == {"w0", "w1"}
    assert model.opset_imports[sup.DOMAIN] == 1
    first, second = calls(model)
    assert [v.name for v in second.inputs] == ["relu0_out", "w1"]
    assert [v.name for v in second.outputs] == ["relu1_out"]
    for call, tag in [(first, L0), (second, L1)]:
        assert call.name == tag
        assert call.metadata_props[metadata.MODULE] == tag
        assert metadata.order(call) is not None
    assert_same_outputs(expected, check_and_run(model, tmp_path, feeds))
    assert_round_trip(before, model)


def _if_layers() -> ir.Model:
    """Two layers, each with an If whose branches read a value of the layer (outer scope)."""
    steps, tags, prev = [], {}, "x"
    for i in range(2):
        tag = f"/M/Layer.{i}"
        tags[tag] = (f"layers.{i}", "pkg.mod.Layer")
        steps += [(f"r{i}", "Relu", [prev], tag), (f"s{i}", "ReduceSum", [f"r{i}"], tag)]
        steps.append((f"c{i}", "Greater", [f"s{i}", f"s{i}"], tag))
        prev = f"r{i}"
    model = layered([*steps, ("head", "Neg", ["r1"], "/M")], tags)
    graph, by_name = model.graph, {n.name: n for n in model.graph}
    for i in range(2):
        tag, outer = f"/M/Layer.{i}", by_name[f"r{i}"].outputs[0]

        def branch(op: str, i=i, tag=tag, outer=outer) -> ir.Graph:
            node = _node(op, [outer], f"{op}{i}", tag)
            node.outputs[0].type = FLOAT
            return ir.Graph([], [node.outputs[0]], nodes=[node], name=f"{op}{i}_g")

        cond = by_name[f"c{i}"].outputs[0]
        branches = [
            ir.AttrGraph("then_branch", branch("Abs")),
            ir.AttrGraph("else_branch", branch("Neg")),
        ]
        if_node = ir.Node("", "If", [cond], attributes=branches, name=f"if{i}")
        if_node.outputs[0].name = f"if{i}_out"
        if_node.metadata_props[metadata.MODULE] = tag
        mul = _node("Mul", [if_node.outputs[0], outer], f"mul{i}", tag)
        graph.insert_after(by_name[f"c{i}"], [if_node, mul])
        user = by_name["r1" if i == 0 else "head"]
        user.replace_input_with(0, mul.outputs[0])
    return model


def test_subgraphs_reading_outer_values(tmp_path):
    model = _if_layers()
    before = _copy(model)
    feeds = {"x": np.random.default_rng(2).standard_normal((2, 4)).astype(np.float32)}
    expected = run_ort(before, feeds)
    result = outline(model, "*/Layer.*")
    assert result.skipped == [] and len(model.functions) == 1 and len(calls(model)) == 2
    assert_same_outputs(expected, check_and_run(model, tmp_path, feeds))
    assert_round_trip(before, model)  # subgraph node and value names restored too


def test_non_contiguous_module_is_skipped_with_reason(caplog):
    # Module A's two nodes are separated by B's node: a path leaves A and comes back.
    tags = {"/M/A": ("a", "pkg.A"), "/M/B": ("b", "pkg.B")}
    steps = [
        ("a1", "Relu", ["x"], "/M/A"),
        ("b1", "Neg", ["a1"], "/M/B"),
        ("a2", "Add", ["b1", "a1"], "/M/A"),
    ]
    model = layered(steps, tags)
    before = _copy(model)
    with caplog.at_level(logging.INFO, logger="graphtag.passes.function_outlining"):
        result = FunctionOutliningPass(pattern="/M/A")(model)
    assert not result.modified
    reason = "not contiguous: a path leaves the module and re-enters it"
    assert result.skipped == [("/M/A", reason)]
    assert result.diagnostics == [f"not outlined /M/A: {reason}"]
    assert f"not outlined /M/A: {reason}" in caplog.text
    assert metadata_of(model) == metadata_of(before)  # no order keys left behind
    assert not model.functions and sup.DOMAIN not in model.opset_imports


def test_modules_forming_a_cycle_together_skip_one():
    # A and B are each contiguous, but a1 -> b1 and b2 -> a2: collapsing both is a cycle.
    tags = {"/M/A": ("a", "pkg.Part"), "/M/B": ("b", "pkg.Part")}
    steps = [
        ("a1", "Relu", ["x"], "/M/A"),
        ("b1", "Neg", ["a1"], "/M/B"),
        ("b2", "Neg", ["x"], "/M/B"),
        ("a2", "Add", ["b2", "x"], "/M/A"),
        ("out", "Add", ["a2", "b1"], "/M"),
    ]
    model = layered(steps, tags)
    before = _copy(model)
    result = FunctionOutliningPass(classes="Part")(model)
    assert result.modified
    assert len(result.skipped) == 1 and "would create a cycle" in result.skipped[0][1]
    assert len(calls(model)) == 1
    assert_round_trip(before, model)


def test_pattern_matching_nothing_is_an_error():
    with pytest.raises(GraphtagError, match=r"pattern '\*/Nope\.\*' matches no module"):
        FunctionOutliningPass(pattern="*/Nope.*")(two_layers())
    with pytest.raises(GraphtagError, match="classes 'Nope' matches no module"):
        FunctionOutliningPass(classes="Nope")(two_layers())


@pytest.mark.parametrize("tag", ["/M/Leaf.d.c|d", "/M/Leaf.d.e[0]"])
def test_pattern_that_is_an_exact_tag_outlines_that_module(tag, tmp_path):
    """'|', '[' and ']' in a tag (ModuleDict keys): the pipeline option selects exactly the
    tag, not the decoy its '|' or glob reading names (``scoped_builders.keyed``)."""
    model = keyed()
    before = _copy(model)
    feeds = {"x": np.random.default_rng(2).standard_normal((2, 4)).astype(np.float32)}
    expected = run_ort(before, feeds)
    (invocation,) = parse_pipeline(f"function-outlining{{pattern='{tag}'}}")
    result = registry().get("function-outlining").create(invocation.options)(model)
    assert result.modified and [t for t, _ in result.outlined] == [tag]
    (call,) = calls(model)
    assert call.metadata_props[metadata.MODULE] == tag
    assert_same_outputs(expected, check_and_run(model, tmp_path, feeds))
    assert_round_trip(before, model)


def test_no_match_suggests_tags_but_never_the_rejected_text():
    with pytest.raises(GraphtagError) as info:
        FunctionOutliningPass(pattern="/M/Leaf.d.e[1]")(keyed())
    message = str(info.value)
    assert message.startswith("function-outlining: pattern '/M/Leaf.d.e[1]' matches no module")
    closest = message.split("closest: ")[1].split(", ")
    assert "/M/Leaf.d.e[0]" in closest and set(closest) <= {"/M", *KEYED}


def test_exactly_one_selection_kind():
    with pytest.raises(PipelineError, match="exactly one"):
        FunctionOutliningPass()
    with pytest.raises(PipelineError, match="exactly one"):
        FunctionOutliningPass(pattern="*", all=True)


def test_inlining_without_functions_is_a_no_op():
    model = two_layers()
    assert not FunctionInliningPass()(model).modified
    outline(model, "*/Layer.*")
    assert FunctionInliningPass()(model).modified
    assert not FunctionInliningPass()(model).modified


def test_tag_patterns_stay_within_segments():
    regex = sup.tag_pattern("*/Layer.*")
    assert regex.fullmatch("/M/Enc/Layer.0")
    assert not regex.fullmatch("/M/Enc/Layer.0/Attn")
    assert sup.tag_pattern("/M/**/Attn").fullmatch("/M/Enc/Layer.0/Attn")
    assert not sup.tag_pattern("/Enc/Layer.0").fullmatch("/M/Enc/Layer.0")
    assert sup.tag_pattern("Layer.[01]").fullmatch("/M/Layer.1")


def test_registered_with_options():
    (invocation,) = parse_pipeline('function-outlining{classes="Layer"}')
    pass_ = registry().get("function-outlining").create(invocation.options)
    model = two_layers()
    assert pass_(model).modified and len(calls(model)) == 2
    assert registry().get("function-inlining").create({})(model).modified


# ---------------------------------------------------------------- the zoo


@pytest.mark.parametrize("name", DYNAMO_MODELS)
def test_zoo_outline_all_runs_and_round_trips(name, tmp_path):
    model, feeds = zoo_model(name)
    before = _copy(model)
    expected = run_ort(before, feeds)
    result = FunctionOutliningPass(all=True)(model)
    assert result.modified
    assert result.outlined and model.functions
    assert_same_outputs(expected, check_and_run(model, tmp_path, feeds))
    assert_round_trip(before, model)


def test_bert_layers_share_one_function(tmp_path):
    model, feeds = zoo_model("bert")
    before = _copy(model)
    expected = run_ort(before, feeds)
    for selection in ({"pattern": "*/BertLayer.*"}, {"classes": "BertLayer"}):
        outlined = _copy(model)
        assert FunctionOutliningPass(**selection)(outlined).skipped == []
        assert list(outlined.functions) == [("pkg.graphtag", "BertLayer", "")]
        layer_calls = calls(outlined)
        assert [c.metadata_props[metadata.MODULE] for c in layer_calls] == [
            "/BertModel/BertEncoder/BertLayer.0",
            "/BertModel/BertEncoder/BertLayer.1",
        ]
        function = outlined.functions["pkg.graphtag", "BertLayer", ""]
        assert metadata.function_class(function) == (
            "transformers.models.bert.modeling_bert.BertLayer"
        )
        assert not function.graph.initializers
        assert analyze(outlined).functions == {"pkg.graphtag::BertLayer": 2}
    assert_same_outputs(expected, check_and_run(outlined, tmp_path, feeds))
    assert_round_trip(before, outlined)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_bert_outline_by_depth_runs_and_round_trips(depth, tmp_path):
    """The depth selection, like all/pattern/classes above, checked by ONNX Runtime: every
    module exactly ``depth`` levels below the root is a call, the rest stays inline."""
    model, feeds = zoo_model("bert")
    before = _copy(model)
    expected = run_ort(before, feeds)
    result = FunctionOutliningPass(depth=depth)(model)
    assert result.modified and result.skipped == []
    at_depth = {t for t in Hierarchy.from_model(before).modules if t.count("/") == depth + 1}
    called = {c.metadata_props[metadata.MODULE] for c in calls(model)}
    assert called and called == {t for t in at_depth if any(_contains(before, t))}
    assert_same_outputs(expected, check_and_run(model, tmp_path, feeds))
    assert_round_trip(before, model)


def _contains(model: ir.Model, tag: str):
    for node in model.graph:
        own = node.metadata_props.get(metadata.MODULE, "")
        if own == tag or own.startswith(tag + "/"):
            yield node


def test_bert_nested_layer_and_attention(tmp_path):
    model, feeds = zoo_model("bert")
    before = _copy(model)
    expected = run_ort(before, feeds)
    result = outline(
        model, classes="BertLayer,transformers.models.bert.modeling_bert.BertAttention"
    )
    assert result.skipped == []
    assert set(model.functions) == {
        ("pkg.graphtag", "BertLayer", ""),
        ("pkg.graphtag", "BertAttention", ""),
    }
    layer = model.functions["pkg.graphtag", "BertLayer", ""]
    inner = [n for n in layer if n.domain == sup.DOMAIN]
    assert [n.op_type for n in inner] == ["BertAttention"]
    assert [c.op_type for c in calls(model)] == ["BertLayer", "BertLayer"]
    assert layer.opset_imports[sup.DOMAIN] == 1
    assert analyze(model).functions == {
        "pkg.graphtag::BertAttention": 1,
        "pkg.graphtag::BertLayer": 2,
    }
    assert_same_outputs(expected, check_and_run(model, tmp_path, feeds))
    assert_round_trip(before, model)


def test_depth_selection_on_gpt2(tmp_path):
    model, feeds = zoo_model("gpt2")
    before = _copy(model)
    expected = run_ort(before, feeds)
    result = outline(model, depth=1)
    assert {tag.count("/") for tag, _ in result.outlined} == {2}
    assert_same_outputs(expected, check_and_run(model, tmp_path, feeds))
    assert_round_trip(before, model)


def test_export_cli_outline_and_analyze(tmp_path, monkeypatch, capsys):
    from cli_helpers import run_cli, run_main

    out = tmp_path / "outlined.onnx"
    # The export in this process: torch is imported already (test_cli_export runs the
    # command as a real process); analyze as a real process.
    proc = run_main(
        monkeypatch,
        capsys,
        "export",
        "graphtag.exporter.examples:tiny_bert",
        out,
        "--outline",
        "*/BertLayer.*",
    )
    assert proc.returncode == 0, proc.stderr
    assert "functions" in proc.stdout
    onnx.checker.check_model(str(out), full_check=True)
    # Formal inputs carry no instance's module path: both layers call the same function.
    (function,) = onnx.load(str(out)).functions
    assert "attention.self.query.bias" in function.input
    assert not [name for name in function.input if name.startswith("encoder.layer.")]
    analysis = json.loads(run_cli("analyze", out, "--format", "json").stdout)
    assert analysis["functions"] == {"pkg.graphtag::BertLayer": 2}
    assert list(analysis["function_classes"]) == [
        "transformers.models.bert.modeling_bert.BertLayer"
    ]
    table = run_cli("analyze", out, "--format", "detailed").stdout
    assert "pkg.graphtag::BertLayer" in table and "BertLayer" in table


KEYED_FACTORY = """
import torch
import torch.nn as nn


class Leaf(nn.Module):
    def __init__(self, scale):
        super().__init__()
        self.lin = nn.Linear(6, 6)
        self.scale = scale

    def forward(self, x):
        return self.lin(x) * self.scale


class Keys(nn.Module):
    def __init__(self):
        super().__init__()
        self.d = nn.ModuleDict({"c|d": Leaf(2.0), "c": Leaf(3.0), "e[0]": Leaf(4.0)})

    def forward(self, x):
        return self.d["e[0]"](self.d["c"](self.d["c|d"](x)))


def model():
    torch.manual_seed(0)
    return Keys().eval(), (torch.randn(2, 6),)
"""


def test_exact_tags_with_pattern_characters_outline_from_export_and_run(
    tmp_path, monkeypatch, capsys
):
    """A real export whose ModuleDict keys hold '|', '[' and ']': ``export --outline``
    and ``run -p function-outlining{pattern=...}`` outline exactly the tag named."""
    from cli_helpers import run_cli, run_main

    factory = tmp_path / "keys.py"
    factory.write_text(KEYED_FACTORY, encoding="utf-8")
    plain, outlined, piped = (tmp_path / f"{n}.onnx" for n in ("plain", "outlined", "piped"))
    # The exports in this process: torch is imported already.
    proc = run_main(monkeypatch, capsys, "export", f"{factory}:model", plain)
    assert proc.returncode == 0, proc.stderr
    tags = {metadata.node_tag(n) for n in graphtag.load(plain).graph}
    assert {"/Keys/Leaf.d.c|d", "/Keys/Leaf.d.c", "/Keys/Leaf.d.e[0]"} <= tags
    proc = run_main(
        monkeypatch, capsys, "export", f"{factory}:model", outlined, "--outline", "/Keys/Leaf.d.c|d"
    )
    assert proc.returncode == 0, proc.stderr
    pipeline = "function-outlining{pattern='/Keys/Leaf.d.e[0]'}"
    proc = run_cli("run", plain, "-p", pipeline, "-o", piped)
    assert proc.returncode == 0, proc.stderr
    feeds = {"x": np.random.default_rng(3).standard_normal((2, 6)).astype(np.float32)}
    expected = run_ort(plain, feeds)
    for path, tag in [(outlined, "/Keys/Leaf.d.c|d"), (piped, "/Keys/Leaf.d.e[0]")]:
        onnx.checker.check_model(str(path), full_check=True)
        model = graphtag.load(path)
        assert [metadata.node_tag(call) for call in calls(model)] == [tag]
        assert_same_outputs(expected, run_ort(path, feeds))


def _string_layers(words: tuple[list[str], list[str]]) -> ir.Model:
    """Two layers, each comparing a string constant (a STRING tensor attribute) with
    itself and adding the result to the activations."""
    prev = "x"
    model = layered([("head", "Neg", ["x"], "/M")], LAYER_TAGS)
    graph = model.graph
    head = next(iter(graph))
    for i, tag in enumerate((L0, L1)):
        tensor = ir.StringTensor([w.encode() for w in words[i]], shape=ir.Shape([4]))
        const = ir.Node("", "Constant", [], attributes=[ir.AttrTensor("value", tensor)])
        equal = ir.Node("", "Equal", [const.outputs[0], const.outputs[0]])
        cast = ir.Node("", "Cast", equal.outputs, attributes=[ir.AttrInt64("to", 1)])
        add = ir.Node("", "Add", [graph.inputs[0] if prev == "x" else prev, cast.outputs[0]])
        for j, node in enumerate((const, equal, cast, add)):
            node.name = f"l{i}_{j}"
            node.outputs[0].name = f"l{i}_{j}_out"
            metadata.set_tag(node, tag)
        graph.insert_before(head, [const, equal, cast, add])
        prev = add.outputs[0]
    head.replace_input_with(0, prev)
    return model


@pytest.mark.parametrize("same", [True, False], ids=["same-strings", "other-strings"])
def test_string_tensor_attributes_are_digested(tmp_path, same):
    # ONNX's backend test data has string tensor attributes; StringTensor has no tobytes.
    words = ["a", "b", "c", "d"]
    model = _string_layers((words, words if same else ["ab", "", "c", "d"]))
    before = _copy(model)
    feeds = {"x": np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)}
    expected = run_ort(before, feeds)
    result = outline(model, "*/Layer.*")
    assert result.skipped == [] and len(calls(model)) == 2
    assert len(model.functions) == (1 if same else 2)  # ["a","b"] and ["ab",""] differ
    assert_same_outputs(expected, check_and_run(model, tmp_path, feeds))
    assert_round_trip(before, model)


def test_tensor_digest_covers_string_tensors():
    def digest(words, cls=ir.StringTensor):
        if cls is ir.StringTensor:
            data = [w.encode() for w in words]
            return tensor_digest(ir.StringTensor(data, shape=ir.Shape([len(data)])))
        return tensor_digest(ir.tensor(np.array(words, dtype=object)))

    assert digest(["a", "b"]) == digest(["a", "b"], cls=ir.Tensor)  # any STRING tensor
    assert digest(["a", "b"]) != digest(["ab", ""]) != digest(["ab"])
    assert tensor_digest(ir.tensor(np.float32([1, 2])))[:2] == ("FLOAT", (2,))
