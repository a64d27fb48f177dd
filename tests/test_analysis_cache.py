"""The analysis cache: computed once per pipeline run or tool, never stale after an edit."""

from __future__ import annotations

import json

import onnx_ir as ir
import pytest
from onnx_builders import tagged_mlp
from test_analysis import FC1, FC2, ROOT, mlp_with_hierarchy

import graphtag
from graphtag.analysis import boundaries as boundaries_module
from graphtag.analysis import manager
from graphtag.analysis import parameters as parameters_module
from graphtag.analysis.boundaries import module_boundaries
from graphtag.analysis.manager import analysis_scope, hierarchy
from graphtag.analysis.parameters import parameter_usage
from graphtag.core import metadata
from graphtag.core.hierarchy import Hierarchy, ModuleInfo
from graphtag.core.pass_result import PassResult
from graphtag.pipeline import PassRegistry, Pipeline
from graphtag.tools.snapshot import snapshot


@pytest.fixture
def computed(monkeypatch) -> dict[str, int]:
    """How often each analysis is really computed."""
    counts = {"hierarchy": 0, "boundaries": 0, "parameters": 0}

    def counting(name, function):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(Hierarchy, "from_model", counting("hierarchy", Hierarchy.from_model))
    monkeypatch.setattr(
        boundaries_module,
        "compute_boundaries",
        counting("boundaries", boundaries_module.compute_boundaries),
    )
    monkeypatch.setattr(
        parameters_module,
        "_parameter_usage",
        counting("parameters", parameters_module._parameter_usage),
    )
    return counts


def test_outside_a_scope_every_call_computes(computed):
    model = mlp_with_hierarchy()
    assert hierarchy(model) is not hierarchy(model)
    assert computed["hierarchy"] == 2


def test_inside_a_scope_computed_once_until_invalidated(computed):
    model = mlp_with_hierarchy()
    with analysis_scope(model) as cache:
        first = hierarchy(model)
        assert hierarchy(model) is first
        with analysis_scope(model) as inner:  # re-entrant: the same cache
            assert inner is cache and hierarchy(model) is first
        assert hierarchy(tagged_mlp()) is None  # another model: not cached here
        cache.invalidate(preserved={manager.BOUNDARIES})
        assert hierarchy(model) is not first
    assert computed["hierarchy"] == 3
    assert hierarchy(model) is not first  # the scope is closed


def test_default_pipeline_reads_the_hierarchy_once(computed):
    model = mlp_with_hierarchy()
    del next(iter(model.graph)).metadata_props[metadata.MODULE]
    pipeline = Pipeline.from_text("tag-propagation,multi-consumer,residual-resolution")
    pipeline(model)
    assert [r.modified for r in pipeline.report.records] == [True, True, False]
    # Every pass preserves the hierarchy; before the cache it was parsed four times.
    assert computed["hierarchy"] == 1
    assert computed["parameters"] == 1


def test_boundaries_reused_until_a_pass_changes_the_graph(computed):
    model = mlp_with_hierarchy()
    Pipeline.from_text("boundary-detection,boundary-detection{store=true},boundary-detection")(
        model
    )
    assert computed["boundaries"] == 1  # storing the summary preserves every analysis
    # toposort reorders (or may): boundaries list nodes in graph order, so they go.
    nodes = list(model.graph)
    model.graph.remove(nodes)
    model.graph.extend(reversed(nodes))  # invalid order: toposort must fix it
    Pipeline.from_text("boundary-detection,toposort,boundary-detection")(model)
    assert computed["boundaries"] == 3


class RetagPass(ir.passes.InPlacePass):
    """Move fc2's nodes under a new module and record it in the hierarchy."""

    def call(self, model: ir.Model) -> PassResult:
        tree = Hierarchy.from_model(model)
        tree.modules["/MLP/Head"] = ModuleInfo("/MLP/Head", "head", "tests.Head", ROOT)
        tree.attach(model)
        for node in model.graph:
            if metadata.node_tag(node) == FC2:
                metadata.set_tag(node, "/MLP/Head")
        return PassResult(model, True)


class CopyPass(ir.passes.FunctionalPass):
    """Return a copy of the model (a pass that is not in place)."""

    def call(self, model: ir.Model) -> PassResult:
        copy = ir.serde.deserialize_model(ir.serde.serialize_model(model))
        return PassResult(copy, True)


def test_a_pass_that_changes_the_model_invalidates():
    reg = PassRegistry()
    reg.register("test-retag", RetagPass)
    reg.register("copy", CopyPass)
    model = mlp_with_hierarchy()
    # boundary-detection caches the boundaries, retag changes tags and hierarchy without
    # declaring anything preserved, the stored summary must describe the new modules.
    pipeline = Pipeline.from_text(
        "boundary-detection,test-retag,boundary-detection{store=true}", reg, verify_each=True
    )
    pipeline(model)
    stored = metadata.BOUNDARIES
    assert "/MLP/Head" in model.metadata_props[stored]
    assert FC2 not in model.metadata_props[stored]
    # A pass returning a new model object: the analyses follow it, fresh.
    result = Pipeline.from_text("boundary-detection,copy,boundary-detection{store=true}", reg)(
        mlp_with_hierarchy()
    )
    assert FC2 in result.model.metadata_props[stored]


def test_hand_edits_between_calls_are_seen():
    model = mlp_with_hierarchy()
    first = snapshot(model)
    assert first["modules"][FC1]["nodes"] == 2
    # Edit by hand between two calls: move a node to another module, drop a weight use.
    metadata.set_tag(list(model.graph)[1], FC2)
    second = snapshot(model)
    assert second["modules"][FC1]["nodes"] == 1 and second["modules"][FC2]["nodes"] == 2
    assert (first["modules"][FC2]["inputs"], second["modules"][FC2]["inputs"]) == (1, 2)
    _, n1, _, n3 = model.graph
    assert module_boundaries(model)[FC2].nodes == [n1, n3]
    # The same through the pipeline: two runs with an edit in between.
    pipeline = Pipeline.from_text("boundary-detection{store=true}")
    pipeline(model)
    metadata.set_tag(list(model.graph)[1], FC1)
    pipeline(model)
    assert graphtag.analyze(model).module(FC1).nodes == 2
    assert json.loads(model.metadata_props[metadata.BOUNDARIES])[FC1]["nodes"] == 2


def test_parameter_usage_follows_edits():
    model = mlp_with_hierarchy()
    assert not parameter_usage(model)["fc1.weight"].shared
    reuse = ir.Node("", "Identity", [model.graph.initializers["fc1.weight"]], name="reuse")
    metadata.set_tag(reuse, FC2)
    model.graph.append(reuse)
    assert parameter_usage(model)["fc1.weight"].shared
