"""Tag nodes with their module from the scopes torch's exporters record."""

from __future__ import annotations

__all__ = ["ScopeTaggingPass"]

import logging
from collections.abc import Callable, Iterable
from typing import Annotated, Literal

import onnx_ir as ir

from graphtag.analysis.attribution import TorchScriptScopeResolver, tag_from_name_scopes
from graphtag.analysis.boundaries import ancestors_and_self
from graphtag.analysis.parameters import initializer_copies
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes, iter_values
from graphtag.core.hierarchy import Hierarchy
from graphtag.core.pass_result import PassResult
from graphtag.passes.tag_propagation import choose_tag

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

    A copy of an initializer that the exporter made outside any module call (an
    ``Identity`` chain from an initializer, see
    :func:`graphtag.analysis.parameters.initializer_copies`, with no scope: TorchScript
    merges parameters of identical value into ``Identity(n1.weight) -> n2.weight``)
    belongs to the module reading it: it takes the tags of the nodes consuming it,
    combined by tag-propagation's rule when they are several (their deepest common
    module; when that is the root while a consumer lies deeper, the most frequent
    consumer tag). A copy nothing tagged reads keeps what its scope says (TorchScript:
    the root).

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
        unscoped = _unscoped(source)
        copies = {value.producer() for value in initializer_copies(model)}
        todo = [n for n in nodes if self.retag or metadata.node_tag(n) is None]
        later = {n for n in todo if n in copies and unscoped(n)}  # tagged after their readers
        tagged, unknown = _apply([n for n in todo if n not in later], tag_of)
        readers = _reader_tags([n for n in todo if n in later], hierarchy.root, tag_of)
        tagged_copies, unknown_copies = _apply(readers, readers.get)
        tagged, unknown = tagged + tagged_copies, unknown + unknown_copies
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


def _apply(nodes: Iterable[ir.Node], tag_of: Callable[[ir.Node], str | None]) -> tuple[int, int]:
    """Tag ``nodes`` (dropping any tag source); the numbers tagged and without a tag."""
    tagged = unknown = 0
    for node in nodes:
        tag = tag_of(node)
        if tag is None:
            unknown += 1
        elif tag != metadata.node_tag(node) or metadata.tag_source(node) is not None:
            metadata.set_tag(node, tag)
            tagged += 1
    return tagged, unknown


def _unscoped(source: str) -> Callable[[ir.Node], bool]:
    """Whether the exporter recorded no module call for a node."""
    if source == "name-scopes":
        return lambda node: metadata.TORCH_NAME_SCOPES not in node.metadata_props
    return lambda node: not (node.name or "").startswith("/")  # TorchScript: "Identity_3"


def _reader_tags(
    copies: list[ir.Node], root: str | None, fallback: Callable[[ir.Node], str | None]
) -> dict[ir.Node, str | None]:
    """Tag of each copy node from the tags of the nodes reading its output (a copy read
    by another of ``copies`` counts with that one's tag); ``fallback`` when none is
    tagged. Iterative (a chain of copies can be long); each copy is settled once."""
    pending = set(copies)
    found: dict[ir.Node, str | None] = {}
    for start in copies:
        stack = [start]
        while stack:
            node = stack[-1]
            if node in found:
                stack.pop()
                continue
            readers = [use.node for value in node.outputs for use in value.uses()]
            unsettled = [r for r in readers if r in pending and r not in found]
            if unsettled:  # copies end at an initializer: a chain has no cycle
                stack.extend(unsettled)
                continue
            tags = [
                t
                for r in readers
                if (t := found[r] if r in pending else metadata.node_tag(r)) is not None
            ]
            found[node] = choose_tag([], tags, root)[0] if tags else fallback(node)
            stack.pop()
    return found


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
