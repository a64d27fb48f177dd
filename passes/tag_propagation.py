"""Infer module tags for nodes that have none, from their neighbours in the graph."""

from __future__ import annotations

__all__ = ["TagPropagationPass", "choose_tag"]

import functools
import logging
from collections import Counter, deque
from collections.abc import Callable
from typing import Annotated, Literal

import onnx_ir as ir

from graphtag.analysis import manager
from graphtag.analysis.parameters import NameResolver
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes, subgraphs_of
from graphtag.core.hierarchy import is_ancestor_or_self, tag_lca, tag_parent
from graphtag.core.pass_result import PassResult
from graphtag.core.scoping import NodeScope

logger = logging.getLogger(__name__)

Strategy = Literal["lca", "producers", "consumers"]


class TagPropagationPass(ir.passes.InPlacePass):
    """Tag untagged nodes with the deepest module containing their producers and consumers.

    Reads: ``pkg.graphtag.module`` of tagged nodes; the hierarchy in the model metadata
    (only to know the root). Writes: ``pkg.graphtag.module`` and
    ``pkg.graphtag.tag_source`` (``inferred:<rule>``) on nodes that had no tag, in the
    main graph, subgraphs and functions. Tags already present are never changed.

    Rules, in order, over the tags of a node's tagged neighbours (producers of its inputs,
    consumers of its outputs; nodes tagged by this pass count, so chains of untagged
    nodes are filled from both ends):

    * ``strategy=lca``: their lowest common ancestor; when that is the root while the
      neighbours lie deeper, the producers' LCA, then the consumers' LCA, then the most
      frequent neighbour tag (``allow_root=true`` accepts the root instead);
    * ``strategy=producers`` / ``consumers``: the LCA of that side only, falling back to
      the other side;
    * a node with no tagged neighbour that reads parameters (initializers the hierarchy
      names, through the optimizer's ``folded_from`` too) takes the module owning them
      (their lowest common ancestor; rule ``parameter``), when that module lies inside
      the node's enclosing node's module: torch's exporter records no module for nodes
      inside ``torch.cond`` branches, but their weights say which module ran. Their
      untagged neighbours then propagate from them as above;
    * a node inside a subgraph with no tagged neighbour takes its enclosing node's tag;
      a node with no tagged neighbour at all takes the root tag.

    Invariants: graph structure is untouched; linear in nodes + edges (each node is
    revisited only when a neighbour gains a tag); idempotent (a second run reports
    ``modified=False``). Result statistics: inferred nodes by rule; nodes left untagged
    (no tag anywhere to start from) are counted as ``untagged`` and logged.

    Scoped (``tag-propagation@PATTERN``), in place: the tags are inferred as on the whole
    model, and kept only on the untagged nodes inside the scope's bodies and those whose
    inferred tag lies in one of the scope's modules; every other node stays untagged.
    """

    preserves = frozenset({manager.HIERARCHY})  # tags change: boundaries and parameter use go

    def __init__(
        self,
        *,
        strategy: Annotated[Strategy, "which neighbours decide: both sides, or one first"] = "lca",
        allow_root: Annotated[bool, "accept the root when the neighbours' LCA is the root"] = False,
    ) -> None:
        super().__init__()
        self.strategy = strategy
        self.allow_root = allow_root

    def call_scoped(self, model: ir.Model, scope: NodeScope) -> PassResult:
        """Infer on the whole model, keep the tags that fall in ``scope`` (see above)."""
        untagged = [
            (node, node.metadata_props.get(metadata.TAG_SOURCE))
            for node in iter_all_nodes(model)
            if metadata.node_tag(node) is None
        ]
        result = self.call(model)
        stats: Counter[str] = Counter()
        for node, old_source in untagged:
            tag = metadata.node_tag(node)
            if tag is None:
                stats["untagged"] += 1
            elif node in scope or any(is_ancestor_or_self(m, tag) for m in scope.modules):
                rule = (metadata.tag_source(node) or "").removeprefix("inferred:")
                stats[rule] += 1
            else:  # inferred outside the scope: put the node back as it was
                node.metadata_props.pop(metadata.MODULE, None)
                node.metadata_props.pop(metadata.TAG_SOURCE, None)
                if old_source is not None:
                    node.metadata_props[metadata.TAG_SOURCE] = old_source
                stats["outside_scope"] += 1
        modified = sum(stats.values()) > stats["untagged"] + stats["outside_scope"]
        return PassResult(model, modified, stats=dict(stats), diagnostics=result.diagnostics)

    def call(self, model: ir.Model) -> PassResult:
        stats: Counter[str] = Counter()
        root = _root_tag(model)
        owner = _ParameterOwners(model)
        for container in [model.graph, *model.functions.values()]:
            self._propagate(container, root, None, stats, owner)
        diagnostics = []
        if stats["untagged"]:
            note = f"{stats['untagged']} nodes left untagged: the model has no tag to start from"
            logger.info(note)
            diagnostics.append(note)
        modified = sum(stats.values()) > stats["untagged"]
        return PassResult(model, modified, stats=dict(stats), diagnostics=diagnostics)

    def _propagate(
        self,
        container,
        root: str | None,
        enclosing_tag: str | None,
        stats: Counter[str],
        owner: Callable[[ir.Node], str | None],
    ) -> None:
        nodes = list(container)
        untagged = [n for n in nodes if metadata.node_tag(n) is None]
        pending = set(untagged)
        self._from_neighbours(deque(untagged), pending, root, stats)
        # Nodes no tagged neighbour reached: the parameters they read, then propagation
        # from those again.
        seeded = []
        for node in untagged:
            tag = owner(node) if node in pending else None
            if tag is not None and (
                enclosing_tag is None or is_ancestor_or_self(enclosing_tag, tag)
            ):
                metadata.set_tag(node, tag, "inferred:parameter")
                stats["parameter"] += 1
                pending.discard(node)
                seeded.append(node)
        if seeded:
            again = deque(n for node in seeded for n in _neighbours(node) if n in pending)
            self._from_neighbours(again, pending, root, stats)
        # Nodes with no tagged neighbour at all (isolated, or all-untagged islands).
        for node in untagged:
            if node in pending:
                fallback = enclosing_tag or root
                rule = "enclosing" if enclosing_tag else "root"
                if fallback is None:
                    rule = "untagged"
                else:
                    metadata.set_tag(node, fallback, f"inferred:{rule}")
                stats[rule] += 1
        for node in nodes:
            for graph in subgraphs_of(node):
                self._propagate(graph, root, metadata.node_tag(node), stats, owner)

    def _from_neighbours(
        self, queue: deque[ir.Node], pending: set[ir.Node], root: str | None, stats
    ) -> None:
        """Tag the queued pending nodes from their tagged neighbours, spreading as it goes."""
        while queue:
            node = queue.popleft()
            if node not in pending:
                continue
            producers, consumers = _neighbour_tags(node)
            if not producers and not consumers:
                continue  # retried when a neighbour gets a tag
            tag, rule = choose_tag(
                producers, consumers, root, strategy=self.strategy, allow_root=self.allow_root
            )
            metadata.set_tag(node, tag, f"inferred:{rule}")
            stats[rule] += 1
            pending.discard(node)
            queue.extend(n for n in _neighbours(node) if n in pending)


class _ParameterOwners:
    """node -> the lowest common ancestor of the modules owning the parameters it reads
    (each parameter's deepest owner in the stored hierarchy), None when it reads none.
    The hierarchy is indexed on the first question: most runs never ask one."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model

    @functools.cached_property
    def _index(self) -> tuple[NameResolver, dict[str, str]] | None:
        tree = manager.hierarchy(self.model)
        if tree is None:
            return None
        resolver = NameResolver(tree)
        deepest = {
            name: max(tags, key=lambda t: t.count("/")) for name, tags in resolver.owners.items()
        }
        return resolver, deepest

    def __call__(self, node: ir.Node) -> str | None:
        if self._index is None:
            return None
        resolver, deepest = self._index
        tags = [
            deepest[name]
            for value in node.inputs
            if value is not None and value.is_initializer()
            for name in resolver.origin(value)
        ]
        return tag_lca(tags) if tags else None


def choose_tag(
    producers: list[str],
    consumers: list[str],
    root: str | None,
    *,
    strategy: Strategy = "lca",
    allow_root: bool = False,
) -> tuple[str, str]:
    """The tag for a node from its neighbours' tags (one entry per edge, at least one in
    all), and the rule that decided: the rules of :class:`TagPropagationPass`."""
    if strategy != "lca":
        first, second = (
            (producers, consumers) if strategy == "producers" else (consumers, producers)
        )
        side = first or second
        return tag_lca(side), strategy if first else f"{strategy}-fallback"
    tag = tag_lca(producers + consumers)
    if tag is not None and (allow_root or not _is_root(tag, root, producers + consumers)):
        return tag, "lca"
    for side, rule in ((producers, "producers-lca"), (consumers, "consumers-lca")):
        side_tag = tag_lca(side)
        if side_tag is not None and not _is_root(side_tag, root, side):
            return side_tag, rule
    counts = Counter(producers + consumers)
    best = max(counts.items(), key=lambda item: (item[1], -len(item[0]), item[0]))[0]
    return best, "majority"


def _is_root(tag: str, root: str | None, neighbours: list[str]) -> bool:
    """The LCA is the root while some neighbour lies deeper (a real loss of precision)."""
    is_top = tag == root if root is not None else tag_parent(tag) is None
    return is_top and any(t != tag for t in neighbours)


def _root_tag(model: ir.Model) -> str | None:
    hierarchy = manager.hierarchy(model)
    if hierarchy is not None:
        return hierarchy.root
    for node in iter_all_nodes(model):
        tag = metadata.node_tag(node)
        if tag:
            return "/" + tag[1:].split("/")[0]
    return None


def _neighbour_tags(node: ir.Node) -> tuple[list[str], list[str]]:
    producers = []
    for value in node.inputs:
        producer = value.producer() if value is not None else None
        tag = metadata.node_tag(producer) if producer is not None else None
        if tag:
            producers.append(tag)
    consumers = []
    for value in node.outputs:
        for use in value.uses():
            tag = metadata.node_tag(use.node)
            if tag:
                consumers.append(tag)
    return producers, consumers


def _neighbours(node: ir.Node):
    for value in node.inputs:
        if value is not None and value.producer() is not None:
            yield value.producer()
    for value in node.outputs:
        for use in value.uses():
            yield use.node
