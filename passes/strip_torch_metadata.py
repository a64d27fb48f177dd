"""Drop the bulky node metadata torch's dynamo exporter writes (stack traces, FX nodes)."""

from __future__ import annotations

__all__ = ["BULKY_TORCH_KEYS", "StripTorchMetadataPass"]

from collections.abc import Iterable

import onnx_ir as ir

from graphtag.analysis import manager
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes
from graphtag.core.pass_result import PassResult
from graphtag.core.scoping import NodeScope

# About 1 KB per node together, and not needed to tag: name_scopes stays.
BULKY_TORCH_KEYS = (metadata.TORCH_STACK_TRACE, metadata.TORCH_FX_NODE)


class StripTorchMetadataPass(ir.passes.InPlacePass):
    """Remove torch's stack_trace and fx_node node metadata (about 1 KB per node).

    Reads and writes node ``metadata_props`` only: ``pkg.torch.onnx.stack_trace`` and
    ``pkg.torch.onnx.fx_node`` are removed from every node (main graph, subgraphs,
    functions); every other key (``pkg.torch.onnx.name_scopes``, graphtag's tags) stays.

    Invariants: graph structure untouched; idempotent (a second run reports
    ``modified=False``); linear in nodes. Scoped (``strip-torch-metadata@PATTERN``) it
    strips the scope's nodes (and their bodies) in place.
    """

    preserves = manager.ALL  # bulky torch node metadata only: no analysis reads it

    def call(self, model: ir.Model) -> PassResult:
        return _strip(model, iter_all_nodes(model))

    def call_scoped(self, model: ir.Model, scope: NodeScope) -> PassResult:
        """The nodes of ``scope`` only (graphtag.core.scoping): no extraction needed."""
        return _strip(model, scope.all_nodes)


def _strip(model: ir.Model, nodes_to_strip: Iterable[ir.Node]) -> PassResult:
    nodes = removed = 0
    for node in nodes_to_strip:
        dropped = [node.metadata_props.pop(key, None) for key in BULKY_TORCH_KEYS]
        count = sum(value is not None for value in dropped)
        nodes += count > 0
        removed += count
    return PassResult(model, removed > 0, stats={"nodes": nodes, "entries": removed})
