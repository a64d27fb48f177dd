"""Scoped CSE on random tagged graphs (hypothesis): the in-place pruning path gives the
model the full splice gives, and the model stays valid and computes the same outputs.

The graphs are built to have duplicates (few ops, few operands) and scopes whose nodes
are interleaved with other modules' nodes, so CSE merges nodes of one module across
another's and nested scopes (``/Net/A`` holds ``/Net/A/Inner``) run one after the other.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from graph_strategies import FEEDS, copy_model, tagged_dags
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from onnx_builders import run_ort
from scoped_builders import views

from graphtag.core.errors import GraphtagError
from graphtag.pipeline import Scoped, registry
from graphtag.surgery import splice

_TAGS = ["/Net/A", "/Net/B", "/Net/A/Inner"]


def graphs_with_duplicates() -> st.SearchStrategy[ir.Model]:
    """Few ops on the last few values, every node tagged: duplicates recur, and each
    module's nodes are interleaved with the others'."""
    return tagged_dags(
        _TAGS, unary=("Relu", "Neg"), binary=("Add", "Mul"), nodes=(2, 20), window=3, untagged=False
    )


def _cse() -> ir.passes.PassBase:
    return registry().get("ir.common-subexpression-elimination").create({})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=graphs_with_duplicates(),
    pattern=st.sampled_from(["/Net/A", "/Net/B", "*/A|*/B", "/Net/A|*/Inner"]),
)
def test_scoped_cse_in_place_equals_the_full_splice(model, pattern):
    reference, full = copy_model(model), copy_model(model)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(splice._Wiring, "pruned", lambda self, graph: None)
        try:
            spliced = Scoped(_cse(), pattern)(full)
        except GraphtagError as exc:  # a module the pattern names has no node here
            assert "matches no module" in str(exc)
            with pytest.raises(GraphtagError, match="matches no module"):
                Scoped(_cse(), pattern)(model)
            return
    in_place = Scoped(_cse(), pattern)(model)
    assert in_place.modified == spliced.modified
    event(f"pruned in place: {in_place.stats.get('nodes_removed', 0) > 0}")
    assert views(model) == views(full)
    assert sorted(model.graph.initializers) == sorted(full.graph.initializers)
    assert [v.name for v in model.graph.outputs] == [v.name for v in reference.graph.outputs]
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    for got, want in zip(run_ort(model, FEEDS), run_ort(reference, FEEDS)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
