"""graphtag's optimizer route: export unoptimized, tag, run torch's optimizer, reconcile.

The route is the ``torch-optimizer`` pass (graphtag.passes.torch_optimizer) in the export
pipeline.

Over the zoo models the dynamo exporter handles: the topology equals a plain default
``torch.onnx.export(..., dynamo=True)`` (optimizer on), ONNX Runtime matches PyTorch,
every node is tagged, and nodes the optimizer fused carry the lowest common ancestor of
the modules involved plus ``fused`` contexts naming them.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from onnx_builders import tagged_mlp
from torch.utils import _pytree
from zoo import ZOO
from zoo_exports import plain_export

import graphtag
from graphtag.checks.compare import compare_topology
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes
from graphtag.core.hierarchy import Hierarchy, is_valid_tag, tag_lca
from graphtag.exporter.tagged_export import ExportResult
from graphtag.passes import torch_optimizer as optimize_route

MODELS = [name for name, entry in ZOO.items() if "dynamo" in entry.exporters]
RULE_NAME = "pkg.onnxscript.rewriter.rule_name"


def _quiet_export(module, inputs, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.onnx.export(
            module, inputs.args, kwargs=inputs.kwargs, dynamo=True, verbose=False, **options
        ).model


class Exported:
    def __init__(self, name: str) -> None:
        self.name = name
        self.module, self.inputs = ZOO[name].build()
        self.result: ExportResult = graphtag.export(
            self.module, self.inputs.args, self.inputs.kwargs, verbose=False
        )
        # The same call as _quiet_export, shared with test_export_zoo's plain exports.
        self.plain = graphtag.load(plain_export(name, "dynamo", self.module, self.inputs))

    @property
    def model(self) -> ir.Model:
        return self.result.model

    @property
    def hierarchy(self) -> Hierarchy:
        return self.result.hierarchy


_CACHE: dict[str, Exported] = {}


@pytest.fixture(scope="module", params=MODELS)
def exported(request) -> Exported:
    if request.param not in _CACHE:
        _CACHE[request.param] = Exported(request.param)
    return _CACHE[request.param]


@pytest.fixture(scope="module")
def resnet() -> Exported:
    if "resnet" not in _CACHE:
        _CACHE["resnet"] = Exported("resnet")
    return _CACHE["resnet"]


def _session(model: ir.Model) -> ort.InferenceSession:
    data = ir.serde.serialize_model(model).SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _feeds(session, inputs) -> dict[str, np.ndarray]:
    given = [t for t in [*inputs.args, *inputs.kwargs.values()] if isinstance(t, torch.Tensor)]
    by_name = {k: v for k, v in inputs.kwargs.items() if isinstance(v, torch.Tensor)}
    return {
        spec.name: by_name.get(spec.name, given[index]).numpy()
        for index, spec in enumerate(session.get_inputs())
    }


def _torch_outputs(module, inputs) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*inputs.args, **inputs.kwargs)
    return [t.numpy() for t in _pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _contexts(node: ir.Node) -> list[dict]:
    """The route's ``fused`` contexts (residual-resolution adds other roles beside them)."""
    text = node.metadata_props.get(metadata.CONTEXTS)
    return [c for c in json.loads(text) if c["role"] == "fused"] if text else []


# --- over the zoo --------------------------------------------------------------------


def test_topology_identical_to_default_export(exported):
    diff = compare_topology(exported.model, exported.plain)
    assert diff.identical, diff.report()


def test_ort_matches_pytorch(exported):
    session = _session(exported.model)
    actual = session.run(None, _feeds(session, exported.inputs))
    expected = _torch_outputs(exported.module, exported.inputs)
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_every_node_tagged_with_an_existing_module(exported):
    nodes = list(iter_all_nodes(exported.model))
    untagged = [n.name for n in nodes if metadata.node_tag(n) is None]
    assert not untagged, f"{len(untagged)} untagged nodes, e.g. {untagged[:5]}"
    assert all(
        is_valid_tag(metadata.node_tag(n)) and metadata.node_tag(n) in exported.hierarchy
        for n in nodes
    )
    stats = exported.result.stats
    assert stats.nodes == stats.tagged == len(nodes)


def test_fused_nodes_carry_the_lca_of_their_contexts(exported):
    for node in iter_all_nodes(exported.model):
        contexts = _contexts(node)
        if not contexts:
            continue
        modules = [c["module"] for c in contexts]
        assert len(set(modules)) == len(modules) >= 2, node.name
        assert all(m in exported.hierarchy for m in modules), (node.name, modules)
        assert metadata.node_tag(node) == tag_lca(modules), (node.name, modules)
        assert node.metadata_props[metadata.TAG_SOURCE] == optimize_route.FUSED


def test_every_rewritten_node_was_reconciled(exported):
    """Nodes carrying the rewriter's rule name were created by it: graphtag re-tagged them."""
    for node in iter_all_nodes(exported.model):
        if RULE_NAME in node.metadata_props:
            source = node.metadata_props.get(metadata.TAG_SOURCE)
            assert source in (optimize_route.FUSED, optimize_route.REWRITTEN), node.name


# --- ResNet: Conv + BatchNorm ----------------------------------------------------------


def _fused_convs(model: ir.Model) -> list[ir.Node]:
    return [n for n in model.graph if n.op_type == "Conv" and RULE_NAME in n.metadata_props]


def test_resnet_conv_batchnorm_fusion_tagged_with_the_conv_layer(resnet):
    fused = _fused_convs(resnet.model)
    assert fused, "the optimizer fused no Conv+BatchNorm"
    by_name = {info.name: info for info in resnet.hierarchy}
    for node in fused:
        tag = metadata.node_tag(node)
        layer = resnet.hierarchy.modules[tag]
        # The layer holds the convolution (filtered out: its nodes are the layer's) and
        # the normalization (kept): the LCA of both is the layer.
        assert layer.children.get("convolution", "").endswith("Conv2d"), tag
        assert layer.children.get("normalization", "").endswith("BatchNorm2d"), tag
        norm = by_name[f"{layer.name}.normalization"].tag
        assert {c["module"] for c in _contexts(node)} == {tag, norm}, node.name
        assert node.metadata_props[metadata.TAG_SOURCE] == optimize_route.FUSED


def test_escape_hatch_keeps_torchs_optimizer(resnet):
    """optimizer_route=False: torch optimizes; fused nodes keep one source's metadata."""
    result = graphtag.export(
        resnet.module, resnet.inputs.args, resnet.inputs.kwargs, verbose=False,
        optimizer_route=False,
    )  # fmt: skip
    assert compare_topology(result.model, resnet.plain).identical
    fused = _fused_convs(result.model)
    assert fused and not any(_contexts(n) for n in fused)
    routed = {n.name: metadata.node_tag(n) for n in _fused_convs(resnet.model)}
    assert any(metadata.node_tag(n) != routed[n.name] for n in fused)


# --- torch options applied around the optimizer ----------------------------------------


def test_renames_dynamic_axes_and_opset_match_torch():
    module, inputs = ZOO["siblings"].build()
    options = {
        "input_names": ["features"],
        "output_names": ["scores"],
        "dynamic_shapes": {"x": {0: "batch"}},
        "opset_version": 21,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = graphtag.export(module, inputs.args, verbose=False, **options)
    plain = _quiet_export(module, inputs, **options)
    diff = compare_topology(result.model, plain)
    assert diff.identical, diff.report()
    assert [v.name for v in result.model.graph.inputs] == ["features"]
    assert [v.name for v in result.model.graph.outputs] == ["scores"]
    assert str(result.model.graph.inputs[0].shape[0]) == "batch"
    assert result.model.opset_imports[""] == 21
    session = _session(result.model)
    batch = torch.randn(3, *inputs.args[0].shape[1:])
    (got,) = session.run(None, {"features": batch.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, module(batch).numpy(), rtol=1e-4, atol=1e-4)


# --- the merge policy on a hand-made rewrite -------------------------------------------


def _rewrite(model: ir.Model, old: list[ir.Node], op: str) -> ir.Node:
    """Replace ``old`` (a chain) by one new node, the way onnxscript's rewriter does."""
    inputs = [v for v in old[0].inputs] + [v for n in old[1:] for v in n.inputs[1:]]
    new = ir.Node("", op, inputs, num_outputs=1)
    new.metadata_props.update(old[-1].metadata_props)  # what the metadata merger copies
    ir.convenience.replace_nodes_and_values(
        model.graph, old[-1], old, [new], [old[-1].outputs[0]], [new.outputs[0]]
    )
    return new


def test_fused_node_gets_the_lca_and_contexts():
    model = tagged_mlp()
    snapshot = optimize_route.Snapshot.take(model)
    matmul, add, relu, _ = list(model.graph)
    new = _rewrite(model, [add, relu], "FusedAddRelu")
    stats = optimize_route.reconcile_tags(model, snapshot)
    assert (stats.created, stats.fused) == (1, 1)
    assert metadata.node_tag(new) == "/MLP"
    assert {c["module"] for c in _contexts(new)} == {"/MLP", "/MLP/Layer.fc1"}
    assert metadata.node_tag(matmul) == "/MLP/Layer.fc1"  # survivors keep their tag
    assert metadata.CONTEXTS not in matmul.metadata_props


def test_single_source_rewrite_keeps_its_tag():
    model = tagged_mlp()
    snapshot = optimize_route.Snapshot.take(model)
    relu = list(model.graph)[2]
    new = _rewrite(model, [relu], "Clip")
    new.metadata_props[metadata.MODULE] = "/elsewhere"  # whatever the optimizer left
    stats = optimize_route.reconcile_tags(model, snapshot)
    assert (stats.created, stats.rewritten) == (1, 1)
    assert metadata.node_tag(new) == "/MLP"
    assert new.metadata_props[metadata.TAG_SOURCE] == optimize_route.REWRITTEN
    assert metadata.CONTEXTS not in new.metadata_props


# --- what the optimizer removes stops using values ------------------------------------------


def _with_if_reading(model: ir.Model, outer: ir.Value) -> ir.Node:
    """An If node whose branches read ``outer`` from the enclosing graph."""
    cond = ir.Value(name="cond", shape=ir.Shape([]), type=ir.TensorType(ir.DataType.BOOL))
    model.graph.inputs.append(cond)
    branches = []
    for name in ("then_branch", "else_branch"):
        inner = ir.Node("", "Identity", [outer], name=f"{name}_read", num_outputs=1)
        body = ir.Graph([], inner.outputs, nodes=[inner], name=name)
        branches.append(ir.AttrGraph(name, body))
    node = ir.Node("", "If", [cond], attributes=branches, name="if", num_outputs=1)
    model.graph.append(node)
    return node


def test_nodes_inside_removed_control_flow_stop_using_outer_values():
    model = tagged_mlp()
    relu = list(model.graph)[2]
    outer = relu.outputs[0]
    if_node = _with_if_reading(model, outer)
    snapshot = optimize_route.Snapshot.take(model)
    model.graph.remove(if_node, safe=True)  # as the optimizer drops a folded If
    readers = {use.node.name for use in outer.uses()}
    # onnx_ir detaches the removed node's own inputs, not its bodies' nodes.
    assert readers == {"n3_MatMul", "then_branch_read", "else_branch_read"}
    assert optimize_route.detach_removed(model, snapshot) == 2  # the two reads in the bodies
    assert {use.node.name for use in outer.uses()} == {"n3_MatMul"}
    assert optimize_route.detach_removed(model, snapshot) == 0  # nothing left to drop
