"""Compute the boundaries of every module (what flows in and out), optionally store them."""

from __future__ import annotations

__all__ = ["BOUNDARIES", "BoundaryDetectionPass", "boundaries_summary"]

from typing import Annotated

import onnx_ir as ir

from graphtag.analysis import manager
from graphtag.analysis.boundaries import ModuleBoundary, module_boundaries
from graphtag.core import metadata
from graphtag.core.pass_result import PassResult

BOUNDARIES = metadata.BOUNDARIES  # re-exported: the key this pass writes


class BoundaryDetectionPass(ir.passes.InPlacePass):
    """Find, for every module at every level, its external inputs and outputs.

    Reads: ``pkg.graphtag.module`` on main-graph nodes (nodes in control-flow bodies
    belong to their enclosing node). Writes: nothing by default (``modified=False``);
    with ``store=true`` the model metadata ``pkg.graphtag.analysis.boundaries`` gets a JSON
    summary per module (input and output value names, node count), reported as modified
    only when the stored text changes, so the pass is idempotent.

    The boundaries themselves (:class:`graphtag.analysis.boundaries.ModuleBoundary`, the
    model's own values and nodes) are the cached analysis
    :func:`graphtag.analysis.boundaries.module_boundaries`: within a pipeline the next
    passes reuse what this one computed. Statistics: ``modules``. Cost: O((nodes +
    edges) x hierarchy depth).
    """

    preserves = manager.ALL  # model metadata only
    whole_model = "its result describes every module of the model"  # not scopable

    def __init__(
        self, *, store: Annotated[bool, "store a JSON summary in the model metadata"] = False
    ) -> None:
        super().__init__()
        self.store = store

    def call(self, model: ir.Model) -> PassResult:
        boundaries = module_boundaries(model)
        modified = self.store and metadata.set_boundaries(model, boundaries_summary(boundaries))
        return PassResult(model, modified, stats={"modules": len(boundaries)})


def boundaries_summary(boundaries: dict[str, ModuleBoundary]) -> dict[str, dict]:
    """The JSON-ready form stored under ``pkg.graphtag.analysis.boundaries``."""
    return {
        tag: {
            "inputs": [v.name for v in b.inputs],
            "outputs": [v.name for v in b.outputs],
            "nodes": len(b.nodes),
        }
        for tag, b in boundaries.items()
    }
