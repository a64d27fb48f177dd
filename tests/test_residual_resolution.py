"""residual-resolution: cross-module contexts on nodes, and the contamination report."""

from __future__ import annotations

import functools
import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx_builders import run_ort
from zoo import ZOO
from zoo_exports import model_feeds, zoo_variant

import graphtag
from graphtag.checks.compare import compare_topology
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes
from graphtag.core.hierarchy import Hierarchy, ModuleInfo, is_ancestor_or_self
from graphtag.passes.residual_resolution import (
    ResidualResolutionPass,
    contamination,
    executes_in,
    shared_instances,
)

FLOAT = ir.TensorType(ir.DataType.FLOAT)
DYNAMO_MODELS = [name for name, entry in ZOO.items() if "dynamo" in entry.exporters]


# ---------------------------------------------------------------- shared helpers


def _copy(model: ir.Model) -> ir.Model:
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


@functools.cache
def _export(name: str, optimize: bool) -> tuple[bytes, dict[str, np.ndarray]]:
    """One dynamo export per (model, optimize) per session, kept serialized."""
    model, inputs = zoo_variant(f"{name}:{'dynamo' if optimize else 'noopt'}")
    _strip_pass_metadata(model)
    return ir.serde.serialize_model(model).SerializeToString(), model_feeds(model, inputs)


def _strip_pass_metadata(model: ir.Model) -> None:
    """Undo what graphtag export's multi-consumer and residual-resolution passes wrote, so
    these tests run the passes on a model that has not been through them."""
    for node in iter_all_nodes(model):
        entries = json.loads(node.metadata_props.pop(metadata.CONTEXTS, "[]"))
        kept = [e for e in entries if e["role"] not in ("producer", "consumer", "shared")]
        if kept:
            node.metadata_props[metadata.CONTEXTS] = json.dumps(kept, separators=(",", ":"))
        for value in node.outputs:
            value.metadata_props.pop(metadata.CONSUMERS, None)
    for graph in (model.graph, *model.graph.subgraphs()):
        for value in (*graph.inputs, *graph.initializers.values()):
            value.metadata_props.pop(metadata.CONSUMERS, None)
            value.metadata_props.pop(metadata.ORIGIN, None)


@functools.cache
def _torchscript(name: str) -> bytes:
    module, inputs = ZOO[name].build()
    result = graphtag.export(module, inputs.args, inputs.kwargs, dynamo=False, verbose=False)
    return ir.serde.serialize_model(result.model).SerializeToString()


def torchscript_model(name: str) -> ir.Model:
    """A fresh copy of the tagged TorchScript export of a zoo model (one export per session)."""
    return ir.serde.deserialize_model(onnx.load_from_string(_torchscript(name)))


def zoo_model(name: str, optimize: bool) -> tuple[ir.Model, dict[str, np.ndarray]]:
    """A fresh copy of the tagged dynamo export of a zoo model, and ORT feeds for it."""
    data, feeds = _export(name, optimize)
    return ir.serde.deserialize_model(onnx.load_from_string(data)), feeds


def assert_metadata_only_change(before: ir.Model, after: ir.Model, feeds) -> None:
    diff = compare_topology(before, after)
    assert diff.identical, diff.report()
    for want, got in zip(run_ort(before, feeds), run_ort(after, feeds), strict=True):
        np.testing.assert_array_equal(got, want)


def layer_tag(hierarchy: Hierarchy, index: int) -> str:
    return hierarchy.tag_of(f"encoder.layer.{index}")


def contexts(node: ir.Node) -> list[dict[str, str]]:
    return json.loads(node.metadata_props.get(metadata.CONTEXTS, "[]"))


def _op(op: str, inputs, name: str, tag: str, scopes: list[str] | None = None) -> ir.Node:
    node = ir.Node("", op, inputs, name=name, num_outputs=1)
    node.outputs[0].name = f"{name}_out"
    node.metadata_props[metadata.MODULE] = tag
    if scopes is not None:
        node.metadata_props[metadata.TORCH_NAME_SCOPES] = repr(scopes)
    return node


# ---------------------------------------------------------------- hand-built graphs

L0, L1 = "/M/Layer.0", "/M/Layer.1"
SCOPES = {
    "/M": [""],
    L0: ["", "layers.0"],
    L1: ["", "layers.1"],
    f"{L0}/Attn": ["", "layers.0", "layers.0.attn"],
    f"{L1}/Attn": ["", "layers.1", "layers.1.attn"],
    "/M/Head": ["", "head"],
}


def two_layers() -> ir.Model:
    """x -> a mask computed once in layer 0's attention and read by both layers, the
    residual stream crossing from layer 0 to layer 1, a head. Dynamo-style name scopes."""
    x = ir.Value(name="x", shape=ir.Shape([2, 4]), type=FLOAT)
    steps = [
        ("mask", "Neg", ["x"], f"{L0}/Attn"),
        ("a0", "Add", ["x", "mask"], f"{L0}/Attn"),
        ("r0", "Add", ["a0", "x"], L0),
        ("a1", "Add", ["r0", "mask"], f"{L1}/Attn"),
        ("r1", "Add", ["a1", "r0"], L1),
        ("head", "Relu", ["r1"], "/M/Head"),
    ]
    values, nodes = {"x": x}, []
    for name, op, inputs, tag in steps:
        node = _op(op, [values[i] for i in inputs], name, tag, [*SCOPES[tag], name])
        values[name] = node.outputs[0]
        nodes.append(node)
    values["head"].shape, values["head"].type = ir.Shape([2, 4]), FLOAT
    graph = ir.Graph([x], [values["head"]], nodes=nodes, opset_imports={"": 21}, name="g")
    model = ir.Model(graph, ir_version=10)
    modules, names = {}, {}
    for tag, scopes in SCOPES.items():
        segment = tag.rsplit("/", 1)[1]
        cls = segment.split(".")[0]
        parent = tag.rsplit("/", 1)[0] or None
        modules[tag] = ModuleInfo(tag=tag, name=scopes[-1], class_name=cls, parent=parent)
        names[scopes[-1]] = tag
    Hierarchy(dict(sorted(modules.items())), names).attach(model)
    return model


def _by_name(model: ir.Model) -> dict[str, ir.Node]:
    return {n.name: n for n in model.graph}


def test_roles_on_hand_built_layers():
    model = two_layers()
    before = _copy(model)
    tags = {n.name: metadata.node_tag(n) for n in model.graph}
    result = ResidualResolutionPass()(model)
    assert result.modified
    nodes = _by_name(model)
    assert contexts(nodes["mask"]) == [
        {"module": f"{L0}/Attn", "role": "shared"},
        {"module": f"{L1}/Attn", "role": "consumer"},
        {"module": f"{L1}/Attn", "role": "shared"},
    ]
    assert contexts(nodes["a0"]) == []  # only its own module and an ancestor involved
    assert contexts(nodes["r0"]) == [
        {"module": L1, "role": "consumer"},
        {"module": f"{L1}/Attn", "role": "consumer"},
    ]  # attention and residual of layer 1 are different classes: not "shared"
    assert contexts(nodes["a1"]) == [
        {"module": L0, "role": "producer"},
        {"module": f"{L0}/Attn", "role": "producer"},
    ]
    assert contexts(nodes["r1"]) == [
        {"module": "/M/Head", "role": "consumer"},
        {"module": L0, "role": "producer"},
    ]
    assert {n.name: metadata.node_tag(n) for n in model.graph} == tags
    assert result.stats == {"nodes": 5, "producer": 4, "consumer": 4, "shared": 2}
    feeds = {"x": np.arange(8, dtype=np.float32).reshape(2, 4)}
    assert_metadata_only_change(before, model, feeds)
    assert not ResidualResolutionPass()(model).modified


def test_options_and_stale_contexts_are_removed():
    model = two_layers()
    ResidualResolutionPass(consumers=False, shared=False)(model)
    nodes = _by_name(model)
    assert metadata.CONTEXTS not in nodes["mask"].metadata_props
    assert {c["role"] for n in model.graph for c in contexts(n)} == {"producer"}
    # Retag the layer-1 nodes into layer 0: the contexts they had disappear.
    for name in ("a1", "r1"):
        nodes[name].metadata_props[metadata.MODULE] = L0
    assert ResidualResolutionPass(consumers=False, shared=False)(model).modified
    assert contexts(nodes["a1"]) == [] and metadata.CONTEXTS not in nodes["r1"].metadata_props


def test_shared_instances_groups_same_class_siblings():
    def by_segment(tag: str) -> str:
        return tag.rsplit("/", 1)[1].split(".")[0]

    tags = {"/M", "/M/L.0/A", "/M/L.1/A/Sub", "/M/Other"}
    assert shared_instances(tags, by_segment) == {"/M/L.0/A", "/M/L.1/A/Sub"}
    assert shared_instances({"/M/A", "/M/B", "/M/A/C"}, by_segment) == set()
    assert shared_instances({"/M/Block.left", "/M/Block.right"}, by_segment) == {
        "/M/Block.left",
        "/M/Block.right",
    }


def test_contamination_dynamo_style():
    model = two_layers()
    assert contamination(model) == []
    nodes = _by_name(model)
    nodes["a1"].metadata_props[metadata.MODULE] = f"{L0}/Attn"  # another instance
    nodes["r1"].metadata_props[metadata.MODULE] = "/M"  # coarse but true
    assert contamination(model) == [("a1", f"{L0}/Attn", f"{L1}/Attn")]
    assert contamination(model, exact=True) == [
        ("a1", f"{L0}/Attn", f"{L1}/Attn"),
        ("r1", "/M", L1),
    ]
    ResidualResolutionPass()(model)  # never moves a tag, so never fixes or causes any
    assert len(contamination(model, exact=True)) == 2


@pytest.mark.parametrize("prefix", ["", "/model"])
def test_contamination_torchscript_style(prefix):
    model = two_layers()
    unqualified = {"/M": "", L0: "/layers.0", L1: "/layers.1"}
    unqualified |= {f"{L0}/Attn": "/layers.0/attn", f"{L1}/Attn": "/layers.1/attn"}
    unqualified["/M/Head"] = "/head"
    for node in model.graph:
        del node.metadata_props[metadata.TORCH_NAME_SCOPES]
        node.name = f"{prefix}{unqualified[metadata.node_tag(node)]}/{node.op_type}_{node.name}"
    where = executes_in(model)
    assert {metadata.node_tag(n): where(n) for n in model.graph} == {
        t: t for t in SCOPES if t != "/M"
    }
    assert contamination(model) == []
    node = next(n for n in model.graph if metadata.node_tag(n) == L1)
    node.metadata_props[metadata.MODULE] = L0
    assert contamination(model) == [(node.name, L0, L1)]


def test_registered_with_docs():
    from graphtag.pipeline.registry import registry

    for name in ("multi-consumer", "residual-resolution"):
        spec = registry().get(name)
        assert spec.create().__class__.__name__.endswith("Pass")


# ---------------------------------------------------------------- zoo exports


@pytest.mark.parametrize("optimize", [True, False], ids=["opt", "noopt"])
@pytest.mark.parametrize("name", DYNAMO_MODELS)
def test_zoo_no_contamination_and_metadata_only(name, optimize):
    model, feeds = zoo_model(name, optimize)
    before = _copy(model)
    where = executes_in(model)
    nodes = list(iter_all_nodes(model))
    assert sum(where(n) is not None for n in nodes) >= 0.95 * len(nodes)
    props = {id(n): dict(n.metadata_props) for n in nodes}
    assert ResidualResolutionPass()(model).modified
    assert not ResidualResolutionPass()(model).modified
    for node in iter_all_nodes(model):
        after, was = dict(node.metadata_props), props[id(node)]
        # Only the contexts change, and entries of other roles (the exporter's "fused") stay.
        foreign = [c for c in json.loads(was.pop(metadata.CONTEXTS, "[]")) if c["role"] == "fused"]
        assert all(c in contexts(node) for c in foreign)
        after.pop(metadata.CONTEXTS, None)
        assert after == was
    # Fused nodes are tagged with their sources' common ancestor, so exact may differ.
    assert contamination(model) == []
    assert_metadata_only_change(before, model, feeds)


@pytest.mark.parametrize("name", ["siblings", "t5"])
def test_zoo_torchscript_no_contamination(name):
    model = torchscript_model(name)
    where = executes_in(model)
    assert sum(where(n) is not None for n in model.graph) >= 0.9 * len(model.graph)
    ResidualResolutionPass()(model)
    assert contamination(model) == []


def test_contamination_found_on_a_real_export():
    model, _ = zoo_model("bert", True)
    hierarchy = Hierarchy.from_model(model)
    layer0, layer1 = layer_tag(hierarchy, 0), layer_tag(hierarchy, 1)
    where = executes_in(model)
    node = next(n for n in model.graph if is_ancestor_or_self(layer1, metadata.node_tag(n)))
    actual = where(node)
    node.metadata_props[metadata.MODULE] = layer0
    assert contamination(model) == [(node.name, layer0, actual)]


@pytest.mark.parametrize("optimize", [True, False], ids=["opt", "noopt"])
def test_bert_mask_shared_across_layers(optimize):
    model, _ = zoo_model("bert", optimize)
    ResidualResolutionPass()(model)
    hierarchy = Hierarchy.from_model(model)
    layers = [layer_tag(hierarchy, 0), layer_tag(hierarchy, 1)]
    shared = []
    for node in model.graph:
        named = [c["module"] for c in contexts(node) if c["role"] == "shared"]
        if all(any(is_ancestor_or_self(layer, m) for m in named) for layer in layers):
            shared.append(node)
    assert shared
    if optimize:
        # CSE: the mask is computed inside layer 0 and read by layer 1; it stays in layer 0.
        in_layer0 = [n for n in shared if is_ancestor_or_self(layers[0], metadata.node_tag(n))]
        assert in_layer0
        for node in in_layer0:
            roles = {(c["module"], c["role"]) for c in contexts(node)}
            assert any(r == "consumer" and is_ancestor_or_self(layers[1], m) for m, r in roles)
            name_scopes = node.metadata_props[metadata.TORCH_NAME_SCOPES]
            assert "encoder.layer.0" in name_scopes


@pytest.mark.parametrize("optimize", [True, False], ids=["opt", "noopt"])
def test_bert_residual_add_keeps_layer1_tag(optimize):
    model, _ = zoo_model("bert", optimize)
    hierarchy = Hierarchy.from_model(model)
    layer0, layer1 = layer_tag(hierarchy, 0), layer_tag(hierarchy, 1)
    ResidualResolutionPass()(model)
    residuals = [
        node
        for node in model.graph
        if node.op_type == "Add"
        and is_ancestor_or_self(layer1, metadata.node_tag(node))
        and any(
            c["role"] == "producer" and is_ancestor_or_self(layer0, c["module"])
            for c in contexts(node)
        )
    ]
    assert residuals
    where = executes_in(model)
    for node in residuals:
        assert metadata.node_tag(node) == where(node)
        assert "encoder.layer.1" in node.metadata_props[metadata.TORCH_NAME_SCOPES]


def test_foreign_roles_are_kept():
    model = two_layers()
    node = _by_name(model)["r0"]
    fused = [{"module": "/M/Zeta", "role": "fused"}, {"module": "/M/Alpha", "role": "fused"}]
    node.metadata_props[metadata.CONTEXTS] = json.dumps(fused)
    ResidualResolutionPass()(model)
    assert contexts(node) == [
        {"module": "/M/Alpha", "role": "fused"},
        {"module": L1, "role": "consumer"},
        {"module": f"{L1}/Attn", "role": "consumer"},
        {"module": "/M/Zeta", "role": "fused"},
    ]
    assert not ResidualResolutionPass()(model).modified
    ResidualResolutionPass(consumers=False)(model)
    assert [c["role"] for c in contexts(node)] == ["fused", "fused"]


def test_value_shared_by_every_node_is_resolved_per_layer():
    """3000 nodes in 50 layers, every node reading the previous one and a CSE-shared mask:
    one consumer entry and one shared context per layer, not per node. (Its cost at 30k
    and 300k nodes is bench/bench_shared_value.py's.)"""
    n = 3000
    x = ir.Value(name="x", shape=ir.Shape([4]), type=FLOAT)
    mask = _op("Neg", [x], "mask", "/M/Layer.0/Attn", ["", "layers.0", "layers.0.attn", "neg"])
    nodes, previous = [mask], x
    for i in range(n):
        layer = i * 50 // n
        scopes = ["", f"layers.{layer}", f"layers.{layer}.attn", f"add_{i}"]
        node = _op("Add", [previous, mask.outputs[0]], f"n{i}", f"/M/Layer.{layer}/Attn", scopes)
        nodes.append(node)
        previous = node.outputs[0]
    graph = ir.Graph([x], [previous], nodes=nodes, opset_imports={"": 21}, name="big")
    model = ir.Model(graph, ir_version=10)
    from graphtag.passes.multi_consumer import MultiConsumerPass

    MultiConsumerPass()(model)
    ResidualResolutionPass()(model)
    consumers = json.loads(mask.outputs[0].metadata_props[metadata.CONSUMERS])
    assert len(consumers) == 50
    shared = [c["module"] for c in contexts(mask) if c["role"] == "shared"]
    assert sorted(shared) == sorted(f"/M/Layer.{i}/Attn" for i in range(50))
    assert contamination(model, exact=True) == []  # every node executes where it is tagged
