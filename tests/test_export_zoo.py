"""graphtag.export over the zoo, both exporter paths where they work.

Checked against ONNX Runtime and PyTorch, and against a plain torch.onnx.export with
the same options (topology must be identical).
"""

from __future__ import annotations

import functools
import json
from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import oracles
import pytest
import torch
from cli_helpers import run_cli
from torch.utils import _pytree
from zoo_exports import noopt_export, ort_feeds, zoo_cases, zoo_export

import graphtag
from graphtag.checks.compare import compare_topology
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes
from graphtag.core.hierarchy import Hierarchy, is_valid_tag
from graphtag.exporter.exporters import KwargsWrapper, wrap_kwargs
from graphtag.passes.tag_propagation import TagPropagationPass
from graphtag.testing import graphtag_snapshot

SCOPES = metadata.TORCH_NAME_SCOPES
CASES = [pytest.param((n, e), id=f"{n}-{e}") for n, e in zoo_cases()]


@pytest.fixture(params=CASES)
def case(request):
    return zoo_export(*request.param)


def _torch_outputs(case) -> list[np.ndarray]:
    with torch.no_grad():
        if case.exporter == "torchscript" and case.inputs.kwargs:
            wrapper = wrap_kwargs(case.module, case.inputs.kwargs)
            out = wrapper(*(case.inputs.kwargs[name] for name in wrapper.names))
        else:
            out = case.module(*case.inputs.args, **case.inputs.kwargs)
    return [t.numpy() for t in _pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _ort_outputs(case) -> list[np.ndarray]:
    session = ort.InferenceSession(str(case.path), providers=["CPUExecutionProvider"])
    given = [*case.inputs.args, *case.inputs.kwargs.values()]
    given = [t for t in given if isinstance(t, torch.Tensor)]
    by_name = {k: v for k, v in case.inputs.kwargs.items() if isinstance(v, torch.Tensor)}
    feeds = {}
    for index, spec in enumerate(session.get_inputs()):
        tensor = by_name.get(spec.name, given[index] if index < len(given) else None)
        assert tensor is not None, f"no value for ONNX input {spec.name}"
        feeds[spec.name] = tensor.numpy()
    return session.run(None, feeds)


def test_ort_matches_pytorch(case):
    expected, actual = _torch_outputs(case), _ort_outputs(case)
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_checker_full_check(case):
    onnx.checker.check_model(str(case.path), full_check=True)


def test_topology_identical_to_plain_export(case):
    diff = compare_topology(graphtag.load(case.path), graphtag.load(case.plain_path))
    assert diff.identical, diff.report()
    proc = run_cli("compare", "--topology", case.path, case.plain_path)
    assert proc.returncode == 0 and "topology identical" in proc.stdout, proc.stdout + proc.stderr


def test_every_node_tagged_with_an_existing_module(case):
    model = graphtag.load(case.path)
    hierarchy = Hierarchy.from_model(model)
    assert hierarchy is not None and model.metadata_props[metadata.VERSION] == graphtag.__version__
    tags = [metadata.node_tag(n) for n in iter_all_nodes(model)]
    untagged = [n.name for n in iter_all_nodes(model) if metadata.node_tag(n) is None]
    assert not untagged, f"{len(untagged)} untagged nodes, e.g. {untagged[:5]}"
    assert all(is_valid_tag(t) and t in hierarchy for t in tags)
    assert case.result.stats.tagged == case.result.stats.nodes == len(tags)


@functools.cache
def oracle(name: str, exporter: str) -> dict[int, tuple[str | None, str]]:
    """Node index (main graph of the tagged file) -> (expected tag, kind), computed by
    tests/oracles.py from named_modules() and the exporter's own scopes only. Dynamo:
    each node of torch's unoptimized export gets its innermost scope's module; a node
    the optimizer kept has that node's tag, a node it made (or one that absorbed
    computing nodes) the lowest common ancestor of the nodes it stands for.
    TorchScript: the scoped node names (a copy of an initializer outside any scope: the
    module of its readers)."""
    case = zoo_export(name, exporter)
    tags = oracles.module_tags(case.module)
    model = onnx.load(str(case.path))
    if exporter == "torchscript":
        prefix = KwargsWrapper.attribute if case.inputs.kwargs else ""
        found = oracles.torchscript_tags(model, case.module, tags, prefix)
        return {j: (tag, "same") for j, tag in enumerate(found)}
    raw = noopt_export(name)
    reference = raw.proto()
    ref_tags = [oracles.scope_tag(oracles.props(n)[SCOPES], tags) for n in reference.graph.node]
    assert None not in ref_tags
    values = oracles.all_values(reference, raw.feeds())
    return oracles.expected_tags(reference, ref_tags, model, ref_values=values)


def test_every_tag_is_the_one_the_oracle_computes(case):
    """Independent of graphtag's attribution, for EVERY node, fused ones included."""
    assert case.result.hierarchy.name_to_tag == oracles.module_tags(case.module)
    expected = oracle(case.name, case.exporter)
    model = onnx.load(str(case.path))
    actual = [oracles.props(n).get(metadata.MODULE) for n in model.graph.node]
    assert len(expected) == len(actual)  # every node has an expectation
    wrong = [
        (model.graph.node[j].name, kind, tag, actual[j])
        for j, (tag, kind) in sorted(expected.items())
        if actual[j] != tag
    ]
    assert not wrong, f"{len(wrong)} wrong tags, e.g. {wrong[:5]}"
    # Nodes made from several modules list them (the README's fused contexts).
    for j, (tag, kind) in expected.items():
        node = model.graph.node[j]
        if kind != "same" and oracles.props(node).get(metadata.TAG_SOURCE) == "fused":
            fused = json.loads(oracles.props(node).get(metadata.CONTEXTS, "[]"))
            listed = {c["module"] for c in fused if c["role"] == "fused"}
            assert not listed or oracles.lca(listed) == tag, node.name


DYNAMO_NAMES = [name for name, exporter in zoo_cases() if exporter == "dynamo"]


def _isolated(nodes: list[ir.Node], every: int) -> list[ir.Node]:
    """Every ``every``-th node none of whose neighbours is picked too."""
    picked: set[ir.Node] = set()
    for index, node in enumerate(nodes):
        neighbours = [v.producer() for v in node.inputs if v is not None]
        neighbours += [use.node for v in node.outputs for use in v.uses()]
        if index % every == 0 and not picked.intersection(neighbours):
            picked.add(node)
    return [n for n in nodes if n in picked]


@pytest.mark.parametrize("name", DYNAMO_NAMES)
def test_inferred_tags_follow_the_readme_rule(name):
    """Nodes the exporter leaves without scopes get the module the test computes from
    their neighbours' scopes: the deepest module containing them (README's rule)."""
    raw = noopt_export(name)
    model = raw.model()
    tags = oracles.module_tags(raw.module)
    scope = {n: oracles.scope_tag(n.metadata_props[SCOPES], tags) for n in model.graph}
    stripped = _isolated(list(model.graph), every=3)
    for node in stripped:  # as an exporter that recorded nothing for them
        for key in (metadata.MODULE, metadata.TAG_SOURCE, SCOPES):
            node.metadata_props.pop(key, None)
    assert TagPropagationPass()(model).modified
    wrong = []
    for node in stripped:
        producers = [scope[v.producer()] for v in node.inputs if v is not None and v.producer()]
        consumers = [scope[use.node] for v in node.outputs for use in v.uses()]
        want = oracles.inferred_tag(producers, consumers, tags[""])
        if metadata.node_tag(node) != want:
            wrong.append((node.name, want, metadata.node_tag(node)))
        assert metadata.tag_source(node).startswith("inferred:")
    assert len(stripped) > 10 and not wrong, wrong[:5]


def test_no_node_computes_what_only_another_module_returned(case):
    """Contamination judged from PyTorch: forward hooks record what every module
    returned; a node whose output equals such a tensor computed it, so its tag must be
    that module, inside it, or (fused) above it, never another instance."""
    model = onnx.load(str(case.path))
    values = oracles.all_values(model, _feeds(case, model))
    produced = oracles.module_outputs(case.module, case.inputs.args, case.inputs.kwargs)
    tags = oracles.module_tags(case.module)
    assert not oracles.contamination(model, values, produced, tags)
    matched = oracles.matched_modules(values, produced)
    assert len(matched) >= 0.5 * len(case.result.hierarchy.modules)  # the check has teeth


def test_contamination_oracle_sees_swapped_tags():
    case = zoo_export("bert", "dynamo")
    model = onnx.load(str(case.path))
    layers = ("/BertModel/BertEncoder/BertLayer.0", "/BertModel/BertEncoder/BertLayer.1")
    for node in model.graph.node:  # the two layers' tags swapped, nothing else
        for entry in node.metadata_props:
            if entry.key == metadata.MODULE and entry.value.startswith(layers):
                first = entry.value.startswith(layers[0])
                entry.value = entry.value.replace(*(layers if first else layers[::-1]), 1)
    values = oracles.all_values(model, _feeds(case, model))
    produced = oracles.module_outputs(case.module, case.inputs.args, case.inputs.kwargs)
    found = oracles.contamination(model, values, produced, oracles.module_tags(case.module))
    assert len(found) >= 10
    assert all(tag.startswith(layers) for _, tag, _ in found)


def _feeds(case, model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return ort_feeds([i.name for i in model.graph.input], case.inputs)


def test_golden_snapshot(case, graphtag_golden):
    snapshot = graphtag_snapshot(case.path)
    # The golden holds what the oracle expects, so --snapshot-update cannot bless a
    # wrong tag: ops per module from the snapshot equal those of the expected tags.
    model = onnx.load(str(case.path))
    expected: dict[str, Counter] = {}
    for j, (tag, _) in oracle(case.name, case.exporter).items():
        expected.setdefault(tag, Counter())[model.graph.node[j].op_type] += 1
    ops = {tag: Counter(m["ops"]) for tag, m in snapshot["modules"].items() if m["ops"]}
    assert ops == expected
    assert snapshot == graphtag_golden
