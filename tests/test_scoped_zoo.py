"""Scoped passes and node selections on real exports (the zoo), checked by ONNX Runtime.

* every registered pass (graphtag's, onnx_ir's, the demo plugin's) runs scoped to one
  module of each model: the nodes outside the scope are identical (op, inputs,
  outputs, attributes, metadata) to the input model's, node by node; the result passes
  the ONNX checker (full) and ONNX Runtime's outputs equal the input model's. A pass
  declaring ``whole_model`` is refused with an error naming it; a pass whose own
  unscoped run already fails (or already breaks the model) on that model is only held
  to failing cleanly or leaving the outside untouched;
* the recipes of the README: dynamic quantization except attention, float16 with the
  normalization modules blocked, CSE in one layer, a plugin pass in one layer.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from cli_helpers import run_cli
from scoped_builders import node_view
from zoo_exports import model_feeds, zoo_export, zoo_variant

import graphtag
from graphtag.analysis.selection import select
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.core.graphs import iter_values
from graphtag.pipeline import Pipeline, registry
from graphtag.pipeline.scoped import whole_model_reason

# One module per model (``name:variant``, variant ``noopt`` = exported with
# optimize=False, where the raw graph leaves the rewriting passes work to do): text
# layers, a module called twice (both calls in one scope), a vision layer.
SCOPES = {
    "bert:noopt": "*/BertLayer.1",
    "gpt2:noopt": "*/GPT2Block.1",
    "siblings:noopt": "*/Block.shared",
    "vit:dynamo": "*/ViTLayer.0",
}
OPTIONS = {"function-outlining": "{all=true}"}


@functools.cache
def base(label: str) -> tuple[ir.Model, dict[str, np.ndarray], list[np.ndarray]]:
    """A zoo export with its weights in memory, ONNX Runtime's feeds and outputs."""
    model, inputs = zoo_variant(label)
    feeds = model_feeds(model, inputs)
    return model, feeds, _run(model, feeds)


def _session(model: ir.Model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    data = ir.to_proto(model).SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _run(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return _session(model).run(None, feeds)


def _problem(model: ir.Model, feeds, expected) -> str | None:
    """None when the model passes the full checker and ORT reproduces ``expected``."""
    try:
        onnx.checker.check_model(ir.to_proto(model), full_check=True)
        for got, want in zip(_run(model, feeds), expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip()[:300]}"
    return None


def _pass_cases():
    names = registry().names()
    return [pytest.param(model, name, id=f"{model}-{name}") for model in SCOPES for name in names]


@pytest.mark.parametrize(("model_name", "pass_name"), _pass_cases())
def test_every_registered_pass_runs_scoped(model_name, pass_name):
    model, feeds, expected = base(model_name)
    scope = SCOPES[model_name]
    text = f"{pass_name}{OPTIONS.get(pass_name, '')}"
    spec = registry().get(pass_name)
    if whole_model_reason(spec.factory) is not None:
        with pytest.raises(GraphtagError, match=f"pass '{pass_name}' cannot run scoped"):
            Pipeline.from_text(f"{text}@'{scope}'")
        return
    # What the pass does to the whole model decides what can be asked of its scoped run.
    unscoped = model.clone()
    try:
        Pipeline.from_text(text)(unscoped)
        unscoped_problem = _problem(unscoped, feeds, expected)
    except Exception as exc:
        unscoped_problem = f"{type(exc).__name__}: {exc}"

    scoped = model.clone()
    inside = {n.name for n in select(scoped, scope).nodes}
    before = {n.name: node_view(n) for n in scoped.graph}
    try:
        pipeline = Pipeline.from_text(f"{text}@'{scope}'")
        pipeline(scoped)
    except GraphtagError as exc:
        # Only acceptable when the pass cannot do on the model what it would do scoped.
        assert unscoped_problem is not None, f"scoped run failed: {exc}"
        assert pass_name in str(exc)
        return
    after = {n.name: node_view(n) for n in scoped.graph}
    changed = [k for k, view in before.items() if k not in inside and after.get(k) != view]
    assert not changed, f"nodes outside {scope} changed: {changed[:5]}"
    assert all(k in after for k in before if k not in inside)
    if unscoped_problem is None:
        assert _problem(scoped, feeds, expected) is None, _problem(scoped, feeds, expected)
    record = pipeline.report.records[0]
    assert record.name == f"{pass_name}@{scope}"
    if record.modified:  # new nodes carry a tag inside the model's hierarchy
        tree = graphtag.Hierarchy.from_model(scoped)
        assert all(metadata.node_tag(n) in tree for n in scoped.graph)
    # What the pipeline leaves, validate accepts: every consumer record is true.
    stale = [
        v.name
        for v in iter_values(scoped)
        if metadata.CONSUMERS in v.metadata_props
        and metadata.consumers(v) != metadata.consumer_tags(v)
    ]
    assert not stale, f"stale {metadata.CONSUMERS} records: {stale[:5]}"


def test_a_module_whose_data_leaves_and_comes_back():
    """``Block.shared`` runs twice: its LayerNorm's first output goes through the rest of
    the block and comes back into the second call. A pass that joins the two calls is
    refused before anything changes; one that does not is spliced normally."""
    model, feeds, expected = base("siblings:noopt")
    scope = "*/Block.shared/LayerNorm"
    joined = model.clone()
    before = {n.name: node_view(n) for n in joined.graph}
    with pytest.raises(GraphtagError, match="the graph would have a cycle"):
        Pipeline.from_text(f"function-outlining{{all=true}}@{scope}")(joined)
    assert {n.name: node_view(n) for n in joined.graph} == before
    stamped = model.clone()
    pipeline = Pipeline.from_text(f"demo-stamp@{scope}")
    pipeline(stamped)
    assert pipeline.report.records[0].stats["scopes"] == 1
    assert sum("demo.stamp" in n.metadata_props for n in stamped.graph) == 2
    assert _problem(stamped, feeds, expected) is None


# -- the README recipes ---------------------------------------------------------------


@functools.cache
def bert_path():
    return zoo_export("bert", "dynamo").path


def _cli_nodes(path, *args: str) -> list[str]:
    proc = run_cli("nodes", path, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_recipe_dynamic_quantization_except_attention(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = bert_path()
    excluded = _cli_nodes(source, "--module", "*/*Attention*")
    model = graphtag.load(source)
    matmuls = [n for n in model.graph if n.op_type == "MatMul"]
    weighted = [n.name for n in matmuls if n.inputs[1].is_initializer()]
    kept = [name for name in weighted if name in excluded]
    quantized = [name for name in weighted if name not in excluded]
    assert kept and quantized  # both kinds exist in a BERT layer
    out = tmp_path / "bert-int8.onnx"
    quantize_dynamic(
        source,
        out,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=excluded,
        weight_type=QuantType.QInt8,
    )
    result = onnx.load(str(out))
    nodes = {n.name: n for n in result.graph.node}
    for name in kept:  # still a float MatMul reading the float weight
        assert nodes[name].op_type == "MatMul"
        assert not nodes[name].input[1].endswith("_quantized")
    for name in quantized:
        assert name not in nodes
        assert nodes[f"{name}_quant"].op_type == "MatMulInteger"
    assert not any(
        n.op_type == "MatMulInteger" and n.name[: -len("_quant")] in kept for n in nodes.values()
    )
    case = zoo_export("bert", "dynamo")
    feeds = model_feeds(model, case.inputs)
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    reference = session.run(None, feeds)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)
    diffs = [float(np.abs(a - b).max()) for a, b in zip(got, reference, strict=True)]
    print(
        f"\nint8 except attention: {len(quantized)} MatMuls quantized, {len(kept)} kept; "
        f"max abs diff to float per output: {diffs}"
    )
    assert 0 < max(diffs) < 0.25


def test_recipe_float16_with_normalization_blocked(tmp_path):
    float16 = pytest.importorskip("onnxconverter_common.float16")
    source = bert_path()
    blocked = _cli_nodes(source, "--module", "*/LayerNorm")
    model = graphtag.load(source)
    assert blocked and all(
        metadata.node_tag(n).endswith("/LayerNorm") for n in select(model, "*/LayerNorm").nodes
    )
    converted = float16.convert_float_to_float16(
        onnx.load(str(source)), keep_io_types=True, node_block_list=blocked
    )
    out = tmp_path / "bert-fp16.onnx"
    onnx.save(converted, str(out))
    onnx.checker.check_model(str(out), full_check=True)
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in [*converted.graph.value_info, *converted.graph.output, *converted.graph.input]
    }
    nodes = {n.name: n for n in converted.graph.node}
    for name in blocked:  # computed in float32
        assert types[nodes[name].output[0]] == onnx.TensorProto.FLOAT, name
    others = [n for n in converted.graph.node if n.op_type == "MatMul"]
    assert others and all(types[n.output[0]] == onnx.TensorProto.FLOAT16 for n in others)
    case = zoo_export("bert", "dynamo")
    feeds = model_feeds(model, case.inputs)
    reference = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"]).run(
        None, feeds
    )
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)
    diffs = [float(np.abs(a - b).max()) for a, b in zip(got, reference, strict=True)]
    print(f"\nfloat16, {len(blocked)} LayerNorm nodes kept in float32: max abs diff {diffs}")
    assert 0 < max(diffs) < 0.05


def test_recipe_cse_in_one_layer(tmp_path):
    source = str(tmp_path / "bert-noopt.onnx")  # the raw graph repeats shape computations
    graphtag.save(base("bert:noopt")[0], source)
    layer = "/BertModel/BertEncoder/BertLayer.0"
    out = tmp_path / "bert-cse.onnx"
    proc = run_cli(
        "run",
        source,
        "-p",
        f"ir.common-subexpression-elimination@{layer}",
        "-o",
        out,
        "--time-passes",
    )
    assert proc.returncode == 0, proc.stderr
    original, rewritten = graphtag.load(source), graphtag.load(out)
    inside = {n.name for n in select(original, layer).nodes}
    after = {n.name: node_view(n) for n in rewritten.graph}
    outside = [n for n in original.graph if n.name not in inside]
    assert all(after.get(n.name) == node_view(n) for n in outside)
    layer_after = select(rewritten, layer).nodes
    assert len(layer_after) < len(inside)  # the pass did change that layer
    # The other layer kept its duplicates: the unscoped pass would have merged them.
    whole = graphtag.load(source)
    registry().get("ir.common-subexpression-elimination").create({})(whole)
    assert len(whole.graph) < len(rewritten.graph)
    feeds = base("bert:noopt")[1]
    reference = ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feeds)
    for a, b in zip(got, reference, strict=True):
        np.testing.assert_array_equal(a, b)
    onnx.checker.check_model(str(out), full_check=True)
    checked = run_cli("validate", out)  # CSE rewired values: their records were refreshed
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_recipe_plugin_pass_in_one_layer(tmp_path):
    source = bert_path()
    out = tmp_path / "stamped.onnx"
    layer = "*/BertLayer.1"
    proc = run_cli("run", source, "-p", f"demo-stamp{{value=7}}@{layer}", "-o", out)
    assert proc.returncode == 0, proc.stderr
    model = graphtag.load(out)
    inside = {n.name for n in select(model, layer).nodes}
    stamped = {n.name for n in model.graph if n.metadata_props.get("demo.stamp") == "7"}
    assert stamped == inside and len(inside) > 10
    original = {n.name: node_view(n) for n in graphtag.load(source).graph}
    assert all(node_view(n) == original[n.name] for n in model.graph if n.name not in inside)


def test_python_api_scoped_pipeline_matches_the_command():
    from graphtag.pipeline import Scoped

    model, feeds, expected = base("vit:dynamo")
    model = model.clone()
    stamp = registry().get("demo-stamp").create({"value": "x"})
    result = Pipeline([("stamp", Scoped(stamp, "*/ViTLayer.0|*/ViTLayer.1"))])(model)
    assert result.modified
    tags = {metadata.node_tag(n) for n in model.graph if "demo.stamp" in n.metadata_props}
    assert tags and all("/ViTLayer." in t for t in tags)
    assert _problem(model, feeds, expected) is None
