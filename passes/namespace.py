"""Write graphtag's module tags into the ``namespace`` metadata Model Explorer groups by."""

from __future__ import annotations

__all__ = ["NamespacePass", "namespace_for"]

import logging

import onnx_ir as ir

from graphtag.analysis import manager
from graphtag.core import metadata
from graphtag.core.graphs import subgraphs_of
from graphtag.core.hierarchy import is_ancestor_or_self
from graphtag.core.pass_result import PassResult
from graphtag.core.scoping import NodeScope

logger = logging.getLogger(__name__)


class NamespacePass(ir.passes.InPlacePass):
    """Make each node's ``namespace`` its module tag, so Model Explorer shows graphtag's tree.

    Model Explorer's ONNX adapter (``model-explorer-onnx``) nests nodes into layers by the
    ``/``-separated path in node metadata ``namespace``; torch's dynamo exporter fills that
    key with its own module path (``encoder.layer.0: transformers...BertLayer/...``).

    Reads: ``pkg.graphtag.module`` and ``namespace`` of every node (main graph, functions,
    control-flow bodies). Writes ``namespace``:

    * main-graph and function nodes: their tag, verbatim (``/Model/Layer.0/Attention``);
    * nodes inside a control-flow body: the part of their tag below their enclosing
      node's tag (the adapter already nests a body under its enclosing node), or the
      whole tag when it does not lie inside it;
    * untagged nodes: ``""`` (the top level), so no node keeps torch's grouping.

    The value a node held before its first rewrite is kept in
    ``pkg.graphtag.original_namespace`` (``""`` when it had none) and never overwritten by
    later runs, so running the pass again after a retagging still restores the original.
    ``restore=true`` does the inverse: puts the original back (removing ``namespace`` when
    it was ``""``) and drops ``pkg.graphtag.original_namespace``.

    Invariants: only node metadata changes; linear in the number of nodes; idempotent (a
    second run reports ``modified=False``). Stats: ``written`` (namespaces changed),
    ``saved`` (originals recorded), ``untagged``, ``restored``. Scoped
    (``namespace@PATTERN``) it rewrites the scope's nodes (and their bodies) in place.
    """

    preserves = manager.ALL  # the 'namespace' node metadata only: no analysis reads it

    def __init__(self, *, restore: bool = False) -> None:
        super().__init__()
        self.restore = restore

    def call(self, model: ir.Model) -> PassResult:
        return self._run(model, None)

    def call_scoped(self, model: ir.Model, scope: NodeScope) -> PassResult:
        """The nodes of ``scope`` only (graphtag.core.scoping): no extraction needed."""
        return self._run(model, scope)

    def _run(self, model: ir.Model, scope: NodeScope | None) -> PassResult:
        stats = {"written": 0, "saved": 0, "untagged": 0, "restored": 0}
        containers: list[ir.Graph | ir.Function] = [model.graph]
        if scope is None:
            containers.extend(model.functions.values())
        # (graph, tag of the node enclosing it or None at the top level), walked iteratively.
        stack: list[tuple[ir.Graph | ir.Function, str | None]] = [(g, None) for g in containers]
        while stack:
            graph, enclosing = stack.pop()
            for node in graph:
                if scope is not None and node not in scope:
                    continue
                if self.restore:
                    stats["restored"] += _restore(node)
                else:
                    _rewrite(node, enclosing, stats)
                tag = metadata.node_tag(node)
                for body in subgraphs_of(node):
                    stack.append((body, tag))
        modified = any(stats[k] for k in ("written", "saved", "restored"))
        if not modified:
            logger.info("namespace: every node already carries its tag (nothing to do)")
        return PassResult(model, modified, stats=stats)


def namespace_for(tag: str | None, enclosing: str | None = None) -> str:
    """The ``namespace`` the pass writes for a node with ``tag`` (see the class doc)."""
    if tag is None:
        return ""
    if enclosing is not None and is_ancestor_or_self(enclosing, tag):
        return tag[len(enclosing) :]  # "" when equal, else "/Child/..."
    return tag


def _rewrite(node: ir.Node, enclosing: str | None, stats: dict[str, int]) -> None:
    props = node.metadata_props
    tag = metadata.node_tag(node)
    if tag is None:
        stats["untagged"] += 1
    wanted = namespace_for(tag, enclosing)
    current = props.get(metadata.NAMESPACE)
    if current == wanted:
        return
    if metadata.ORIGINAL_NAMESPACE not in props:
        props[metadata.ORIGINAL_NAMESPACE] = current or ""
        stats["saved"] += 1
    props[metadata.NAMESPACE] = wanted
    stats["written"] += 1


def _restore(node: ir.Node) -> int:
    props = node.metadata_props
    original = props.pop(metadata.ORIGINAL_NAMESPACE, None)
    if original is None:
        return 0
    if original:
        props[metadata.NAMESPACE] = original
    else:
        props.pop(metadata.NAMESPACE, None)
    return 1
