"""Compute the boundaries of every module (what flows in and out), optionally store them."""

from __future__ import annotations

__all__ = ["BOUNDARIES", "BoundaryDetectionPass", "boundaries_of", "boundaries_summary"]

import json

import onnx_ir as ir

from graphtag.analysis.boundaries import ModuleBoundary, compute_boundaries
from graphtag.core import metadata

BOUNDARIES = metadata.BOUNDARIES  # re-exported: the key this pass writes


class BoundaryDetectionPass(ir.passes.InPlacePass):
    """Find, for every module at every level, its external inputs and outputs.

    Reads: ``pkg.graphtag.module`` on main-graph nodes (nodes in control-flow bodies
    belong to their enclosing node). Writes: nothing by default (``modified=False``);
    with ``store=true`` the model metadata ``pkg.graphtag.analysis.boundaries`` gets a JSON summary
    per module (input and output value names, node count), reported as modified only
    when the stored text changes, so the pass is idempotent.

    After a run, :attr:`boundaries` maps each tag to its
    :class:`graphtag.analysis.boundaries.ModuleBoundary` (the model's own values and nodes).
    Cost: O((nodes + edges) x hierarchy depth).
    """

    def __init__(self, *, store: bool = False) -> None:
        super().__init__()
        self.store = store
        self.boundaries: dict[str, ModuleBoundary] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.boundaries = compute_boundaries(model)
        if not self.store:
            return ir.passes.PassResult(model, modified=False)
        text = json.dumps(boundaries_summary(self.boundaries), separators=(",", ":"))
        modified = model.metadata_props.get(BOUNDARIES) != text
        if modified:
            model.metadata_props[BOUNDARIES] = text
        return ir.passes.PassResult(model, modified=modified)


def boundaries_of(model: ir.Model) -> dict[str, ModuleBoundary]:
    """Boundaries of every module of ``model`` (the model is not modified)."""
    pass_ = BoundaryDetectionPass()
    pass_(model)
    return pass_.boundaries


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
