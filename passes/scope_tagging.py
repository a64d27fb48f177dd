"""Tag nodes with their module from the scopes torch's exporters record."""

from __future__ import annotations

__all__ = ["ScopeTaggingPass"]

import logging
from typing import Annotated, Literal

import onnx_ir as ir

from graphtag.analysis.attribution import TorchScriptScopeResolver, tag_from_name_scopes
from graphtag.analysis.boundaries import ancestors_and_self
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes, iter_values
from graphtag.core.hierarchy import Hierarchy
from graphtag.core.pass_result import PassResult

logger = logging.getLogger(__name__)

Source = Literal["auto", "name-scopes", "node-names"]


class ScopeTaggingPass(ir.passes.InPlacePass):
    """Tag every node with its module from the exporter's scopes (dynamo or TorchScript).

    Reads: the hierarchy in the model metadata (module names -> tags; required), and per
    node either ``pkg.torch.onnx.name_scopes`` (dynamo: the modules on the call stack) or
    the scoped node name (TorchScript: ``/encoder/layer.0/attention/MatMul``, with
    ``pkg.graphtag.parameter_prefix`` naming a wrapper to strip), as described in
    :mod:`graphtag.analysis.attribution`. ``source=auto`` reads name scopes when any node
    has them, node names otherwise.

    Writes: ``pkg.graphtag.module`` on nodes without a tag whose scope names a module
    (``retag=true``: on every such node, replacing tags and dropping their
    ``tag_source``), in the main graph, subgraphs and functions; and ``executed`` of every
    module in the stored hierarchy: true when a node carries its tag or a descendant's.
    Where tags change, ``pkg.graphtag.consumers`` records are rewritten from the graph
    (on values that carry one; none is added).

    Invariants: graph structure untouched; existing tags kept unless ``retag``; linear
    in nodes; idempotent (a second run reports ``modified=False``).
    """

    def __init__(
        self,
        *,
        source: Annotated[
            Source, "where scopes come from: name_scopes metadata, node names, or auto"
        ] = "auto",
        retag: Annotated[bool, "replace tags nodes already have"] = False,
    ) -> None:
        super().__init__()
        self.source = source
        self.retag = retag

    def requires(self, model: ir.Model) -> None:
        if metadata.HIERARCHY not in model.metadata_props:
            raise ir.passes.PreconditionError(
                "scope-tagging needs the module hierarchy in the model metadata "
                f"({metadata.HIERARCHY}, written by graphtag export)"
            )

    def call(self, model: ir.Model) -> PassResult:
        hierarchy = Hierarchy.from_model(model)
        assert hierarchy is not None  # requires() checked it
        nodes = list(iter_all_nodes(model))
        source = self.source
        if source == "auto":
            scoped = any(metadata.TORCH_NAME_SCOPES in n.metadata_props for n in nodes)
            source = "name-scopes" if scoped else "node-names"
        tag_of = self._tagger(source, hierarchy, model)
        tagged = unknown = 0
        for node in nodes:
            current = metadata.node_tag(node)
            if current is not None and not self.retag:
                continue
            tag = tag_of(node)
            if tag is None:
                unknown += 1
                continue
            if tag != current or metadata.tag_source(node) is not None:
                metadata.set_tag(node, tag)
                tagged += 1
        if unknown:
            logger.info("scope-tagging: %d nodes have no scope naming a known module", unknown)
        if tagged:  # new tags change who consumes what: keep those records true
            metadata.refresh_consumers(iter_values(model))
        executed = _mark_executed(model, hierarchy, nodes)
        stats = {
            "nodes": len(nodes),
            "tagged": tagged,
            "no_scope": unknown,
            "executed_modules": sum(1 for info in hierarchy if info.executed),
        }
        return PassResult(model, bool(tagged) or executed, stats=stats)

    @staticmethod
    def _tagger(source: str, hierarchy: Hierarchy, model: ir.Model):
        if source == "name-scopes":

            def from_scopes(node: ir.Node) -> str | None:
                scopes = node.metadata_props.get(metadata.TORCH_NAME_SCOPES)
                return tag_from_name_scopes(scopes, hierarchy) if scopes else None

            return from_scopes
        prefix = model.metadata_props.get(metadata.PARAMETER_PREFIX, "").rstrip(".")
        resolver = TorchScriptScopeResolver(hierarchy, prefix)
        return lambda node: resolver.tag(node.name or "")


def _mark_executed(model: ir.Model, hierarchy: Hierarchy, nodes: list[ir.Node]) -> bool:
    """Set ``executed`` on every module (a module whose descendants ran ran too); True
    when the stored hierarchy changed."""
    seen = {metadata.node_tag(n) for n in nodes} - {None}
    ran = {ancestor for tag in seen for ancestor in ancestors_and_self(tag)}
    for info in hierarchy:
        info.executed = info.tag in ran
    before = model.metadata_props.get(metadata.HIERARCHY)
    hierarchy.attach(model)
    return model.metadata_props[metadata.HIERARCHY] != before
