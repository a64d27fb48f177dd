"""Annotate nodes whose data crosses module instances, without ever moving their tag."""

from __future__ import annotations

__all__ = ["ResidualResolutionPass", "contamination", "executes_in", "shared_instances"]

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Annotated

import onnx_ir as ir

from graphtag.analysis import manager
from graphtag.analysis.attribution import TorchScriptScopeResolver, tag_from_name_scopes
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes
from graphtag.core.hierarchy import Hierarchy, is_ancestor_or_self
from graphtag.core.pass_result import PassResult
from graphtag.core.scoping import NodeScope

logger = logging.getLogger(__name__)

PRODUCER = "producer"
CONSUMER = "consumer"
SHARED = "shared"
_ROLES = frozenset((PRODUCER, CONSUMER, SHARED))


class ResidualResolutionPass(ir.passes.InPlacePass):
    """Record the other modules a node exchanges data with (residuals, CSE-shared values).

    Reads: node ``pkg.graphtag.module`` (call it T; untagged nodes are skipped and
    untagged neighbours ignored); the hierarchy's class names, to recognise instances of
    one class (without a hierarchy the class is the tag segment before its first '.').

    Writes node ``pkg.graphtag.contexts`` on every tagged node that has at least one
    context, in the main graph, subgraphs and functions: a JSON list, sorted by module
    then role, of ``{"module": tag, "role": role}``. Entries with other roles (the
    exporter's ``fused``) are kept as they are; this pass's own entries are recomputed on
    every run, and the key is removed when nothing is left. Two tags are *related* when
    one is an ancestor-or-self of the other.

    * ``producer``: the tag of a node producing one of this node's inputs, when it is not
      related to T (a residual Add in layer 1 reading layer 0's output, a layer-1 node
      reading a mask computed in layer 0). Graph inputs and initializers have no
      producer; their consumers are in multi-consumer's ``pkg.graphtag.consumers``.
    * ``consumer``: the tag of a node consuming one of its outputs, when not related to T.
    * ``shared`` (``shared=true``): the outputs are consumed by two or more distinct
      instances of one class: two consumer tags whose paths first differ in sibling
      segments of the same class (``.../Layer.0/Attn`` and ``.../Layer.1/Attn``). Every
      consumer tag lying inside such a group of instances is listed, T included when T
      consumes it itself (a mask computed once by the optimizer's CSE in layer 0 and read
      by layers 0 and 1 names both). Consumers in different classes (an attention and
      the residual Add beside it) are ordinary dataflow and not ``shared``.

    The primary tag is never changed: a node stays in the module where it executes.
    :func:`contamination` checks that on any model. Result statistics: ``nodes`` (nodes
    given contexts) and the number of contexts by role. Invariants: only node metadata
    changes; linear in nodes + edges (times the tag depth); idempotent (a second run
    reports ``modified=False``). Scoped (``residual-resolution@PATTERN``) it writes the
    scope's nodes (and their bodies) in place, still seeing their neighbours outside.
    """

    preserves = manager.ALL  # node contexts only: no analysis reads them

    def __init__(
        self,
        *,
        consumers: Annotated[bool, "record modules consuming a node's outputs"] = True,
        shared: Annotated[bool, "record instances of one class sharing an output"] = True,
    ) -> None:
        super().__init__()
        self.consumers = consumers
        self.shared = shared

    def call(self, model: ir.Model) -> PassResult:
        return self._run(model, iter_all_nodes(model))

    def call_scoped(self, model: ir.Model, scope: NodeScope) -> PassResult:
        """The nodes of ``scope`` only (graphtag.core.scoping): no extraction needed."""
        return self._run(model, scope.all_nodes)

    def _run(self, model: ir.Model, nodes: Iterable[ir.Node]) -> PassResult:
        stats: Counter[str] = Counter()
        class_of = _class_lookup(manager.hierarchy(model))
        modified = False
        untagged = 0
        for node in nodes:
            tag = metadata.node_tag(node)
            untagged += tag is None
            contexts = self._contexts(node, tag, class_of) if tag else []
            if contexts:
                stats["nodes"] += 1
                stats.update(c["role"] for c in contexts)
            if contexts or metadata.CONTEXTS in node.metadata_props:
                # This pass's roles are recomputed; others (the exporter's "fused") are kept.
                kept = [c for c in metadata.contexts(node) if c["role"] not in _ROLES]
                modified |= metadata.set_contexts(node, contexts + kept)
        if untagged:
            logger.info("%d untagged nodes skipped (run tag-propagation first)", untagged)
        return PassResult(model, modified, stats=dict(stats))

    def _contexts(self, node: ir.Node, tag: str, class_of) -> list[dict[str, str]]:
        found: set[tuple[str, str]] = set()
        for value in node.inputs:
            producer = value.producer() if value is not None else None
            other = metadata.node_tag(producer) if producer is not None else None
            if other and not _related(other, tag):
                found.add((other, PRODUCER))
        consumer_tags = {
            other
            for value in node.outputs
            for use in value.uses()
            if (other := metadata.node_tag(use.node))
        }
        if self.consumers:
            found.update((c, CONSUMER) for c in consumer_tags if not _related(c, tag))
        if self.shared and len(consumer_tags) > 1:
            found.update((c, SHARED) for c in shared_instances(consumer_tags, class_of))
        return [{"module": module, "role": role} for module, role in sorted(found)]


def shared_instances(tags: Iterable[str], class_of: Callable[[str], str]) -> set[str]:
    """The tags lying in two or more distinct instances of one class (see the pass doc).

    Builds the trie of the tags' segments; at every trie node, children whose modules
    share a class form a group when there are two or more of them, and every tag below a
    grouped child is returned. Linear in the total number of segments.
    """
    trie: dict = {}
    for tag in set(tags):
        level = trie
        for segment in tag[1:].split("/"):
            level = level.setdefault(segment, {})
        level[None] = tag  # the tag ending here (None never clashes with a segment)
    result: set[str] = set()
    stack = [("", trie, False)]
    while stack:
        prefix, level, inside = stack.pop()
        if inside and None in level:
            result.add(level[None])
        children = [(f"{prefix}/{s}", sub) for s, sub in level.items() if s is not None]
        classes = Counter(class_of(path) for path, _ in children)
        for path, sub in children:
            stack.append((path, sub, inside or classes[class_of(path)] > 1))
    return result


def _related(a: str, b: str) -> bool:
    return is_ancestor_or_self(a, b) or is_ancestor_or_self(b, a)


def _class_lookup(hierarchy: Hierarchy | None) -> Callable[[str], str]:
    modules = hierarchy.modules if hierarchy is not None else {}

    def class_of(tag: str) -> str:
        info = modules.get(tag)
        if info is not None and info.class_name:
            return info.class_name
        return tag[tag.rfind("/") + 1 :].split(".", 1)[0]

    return class_of


# ---------------------------------------------------------------- contamination


def executes_in(model: ir.Model) -> Callable[[ir.Node], str | None]:
    """node -> tag of the module it executes in, from the exporter's own records.

    Dynamo exports: ``pkg.torch.onnx.name_scopes`` resolved against the hierarchy (as
    graphtag's exporter does). Models where no node has name scopes are treated as
    TorchScript exports: the scope path in a ``/``-prefixed node name, with the wrapper
    prefix graphtag adds for keyword inputs detected (every scoped name starts with the
    same segment, which names no module). None when unknown (no hierarchy, no scopes).
    """
    hierarchy = manager.hierarchy(model)
    if hierarchy is None:
        return lambda node: None
    nodes = list(iter_all_nodes(model))
    if any(metadata.TORCH_NAME_SCOPES in n.metadata_props for n in nodes):

        def from_scopes(node: ir.Node) -> str | None:
            scopes = node.metadata_props.get(metadata.TORCH_NAME_SCOPES)
            return tag_from_name_scopes(scopes, hierarchy) if scopes else None

        return from_scopes
    resolver = TorchScriptScopeResolver(hierarchy, _torchscript_prefix(nodes, hierarchy))

    def from_name(node: ir.Node) -> str | None:
        name = node.name or ""
        return resolver.tag(name) if name.startswith("/") else None

    return from_name


def _torchscript_prefix(nodes: list[ir.Node], hierarchy: Hierarchy) -> str:
    firsts = {n.name.split("/")[1] for n in nodes if n.name and n.name.count("/") >= 2}
    if len(firsts) != 1:
        return ""
    first = next(iter(firsts))
    names = [name for name in hierarchy.name_to_tag if name]
    known = {s for name in names for s in name.split(".")}
    return "" if first in known else first


def contamination(model: ir.Model, *, exact: bool = False) -> list[tuple[str, str, str]]:
    """Nodes whose tag names a module they do not execute in: (node name, tag, executes_in).

    A tag that is an ancestor of the executing module is coarse but true and is not
    reported unless ``exact``. Nodes with no tag or an unknown executing module (no
    exporter record, e.g. nodes the optimizer created) are skipped.
    """
    where = executes_in(model)
    found = []
    for node in iter_all_nodes(model):
        tag = metadata.node_tag(node)
        actual = where(node) if tag else None
        if actual is None:
            continue
        if (tag != actual) if exact else not is_ancestor_or_self(tag, actual):
            found.append((node.name or "", tag, actual))
    return found
