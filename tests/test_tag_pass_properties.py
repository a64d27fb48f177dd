"""Properties of the tag passes on random tagged graphs (hypothesis).

Each tag pass changes metadata only: the graph structure is identical and ONNX Runtime
outputs are bit-identical before and after; and each is idempotent.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from graph_strategies import FEEDS, copy_model, tagged_dags
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx_builders import run_ort

from graphtag.checks.compare import compare_topology
from graphtag.core import metadata
from graphtag.pipeline import registry

TAG_PASSES = ["tag-propagation", "multi-consumer", "residual-resolution"]
_TAGS = [
    "/Net",
    "/Net/Block.0",
    "/Net/Block.0/Attention",
    "/Net/Block.0/Mlp",
    "/Net/Block.1",
    "/Net/Block.1/Attention",
    "/Net/Block.1/Mlp",
]


def tagged_graphs() -> st.SearchStrategy[ir.Model]:
    """A random DAG of elementwise ops; some nodes tagged, some not, some values shared."""
    return tagged_dags(_TAGS)


@pytest.mark.parametrize("pass_name", TAG_PASSES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=tagged_graphs())
def test_metadata_only_and_idempotent(pass_name, model):
    spec = registry().get(pass_name)
    before = copy_model(model)
    kept = {n.name: n.metadata_props["pkg.test.keep"] for n in model.graph}
    tags = {n.name: metadata.node_tag(n) for n in model.graph if metadata.node_tag(n)}
    spec.create()(model)
    assert compare_topology(model, before).identical
    onnx.checker.check_model(ir.serde.serialize_model(model), full_check=True)
    for got, want in zip(run_ort(model, FEEDS), run_ort(before, FEEDS), strict=True):
        np.testing.assert_array_equal(got, want)
    # Other metadata survives, and tags present before are never changed.
    assert {n.name: n.metadata_props["pkg.test.keep"] for n in model.graph} == kept
    assert all(metadata.node_tag(n) == tags[n.name] for n in model.graph if n.name in tags)
    assert not spec.create()(model).modified
