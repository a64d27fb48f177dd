"""Module boundaries: what flows into and out of every module, at every level.

A module *contains* the nodes tagged with its tag or a descendant's. For each module:

* external inputs: values its nodes consume that are produced outside it or are graph
  inputs; initializers and the outputs of parameter-free constant nodes are not
  inputs, they travel inside the module (``constants``);
* external outputs: values its nodes produce that are consumed outside it or are graph
  outputs;
* internal values: everything else its nodes produce;
* boundary nodes: its nodes that consume an external input or produce an external output.

Nodes inside control-flow bodies belong to their enclosing node; values a body reads
from the outer scope count as inputs of that enclosing node. Cost: O((nodes + edges) x
hierarchy depth), computed for all modules in one walk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

import onnx_ir as ir

from graphtag.analysis.manager import BOUNDARIES, cached
from graphtag.core import metadata
from graphtag.core.graphs import node_reads, subgraph_owners
from graphtag.core.hierarchy import tag_parent
from graphtag.core.scoping import NodeScope


@dataclasses.dataclass
class ModuleBoundary:
    tag: str
    nodes: list[ir.Node] = dataclasses.field(default_factory=list)  # graph order
    inputs: list[ir.Value] = dataclasses.field(default_factory=list)  # first-use order
    outputs: list[ir.Value] = dataclasses.field(default_factory=list)  # production order
    constants: list[ir.Value] = dataclasses.field(default_factory=list)  # initializers etc.
    internal: list[ir.Value] = dataclasses.field(default_factory=list)
    boundary_nodes: list[ir.Node] = dataclasses.field(default_factory=list)

    def summary(self) -> dict:
        return {
            "tag": self.tag,
            "nodes": len(self.nodes),
            "inputs": [v.name for v in self.inputs],
            "outputs": [v.name for v in self.outputs],
            "constants": len(self.constants),
            "internal": len(self.internal),
            "boundary_nodes": [n.name for n in self.boundary_nodes],
        }


def ancestors_and_self(tag: str) -> list[str]:
    """``/A/B/C`` -> ``['/A', '/A/B', '/A/B/C']``."""
    chain = []
    current: str | None = tag
    while current is not None:
        chain.append(current)
        current = tag_parent(current)
    chain.reverse()
    return chain


def is_constant_value(value: ir.Value) -> bool:
    """Initializers and outputs of input-free nodes (Constant): copied into extractions."""
    if value.is_initializer():
        return True
    producer = value.producer()
    return (
        producer is not None
        and not producer.inputs
        and not any(
            a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
            for a in producer.attributes.values()
        )
    )


def module_boundaries(model: ir.Model) -> dict[str, ModuleBoundary]:
    """Boundaries of every module (:func:`compute_boundaries`), cached within an analysis
    scope (:mod:`graphtag.analysis.manager`): read-only."""
    return cached(model, BOUNDARIES, compute_boundaries)


def compute_boundaries(
    model: ir.Model, tags: Iterable[str] | None = None
) -> dict[str, ModuleBoundary]:
    """Boundaries of every module seen on the main graph's nodes (and their ancestors).

    ``tags`` restricts the result to those modules (all levels are still walked once).
    Untagged nodes belong to no module.
    """
    wanted = set(tags) if tags is not None else None
    result: dict[str, ModuleBoundary] = {}
    chains: dict[str, list[str]] = {}

    def chain_of(node: ir.Node | None) -> list[str]:
        tag = metadata.node_tag(node) if node is not None else None
        if tag is None:
            return []
        if tag not in chains:
            chains[tag] = [t for t in ancestors_and_self(tag) if wanted is None or t in wanted]
        return chains[tag]

    def boundary(tag: str) -> ModuleBoundary:
        if tag not in result:
            result[tag] = ModuleBoundary(tag)
        return result[tag]

    graph = model.graph
    nodes = list(graph)
    owner_chain = {id(node): chain_of(node) for node in nodes}
    graph_outputs = {id(v) for v in graph.outputs}
    sub_owner = subgraph_owners(graph)

    def use_chain(user: ir.Node) -> list[str]:
        # A use inside a control-flow body belongs to the node enclosing that body.
        if id(user) in owner_chain:
            return owner_chain[id(user)]
        enclosing = sub_owner.get(user)
        return owner_chain.get(id(enclosing), []) if enclosing is not None else []

    seen_input: dict[str, set[int]] = {}
    seen_const: dict[str, set[int]] = {}
    flagged: dict[str, set[int]] = {}

    def flag(tag: str, node: ir.Node) -> None:
        ids = flagged.setdefault(tag, set())
        if id(node) not in ids:
            ids.add(id(node))
            boundary(tag).boundary_nodes.append(node)

    for node in nodes:
        chain = owner_chain[id(node)]
        for tag in chain:
            boundary(tag).nodes.append(node)
        if not chain:
            continue
        for value in node_reads(node):
            producer = value.producer()
            producer_chain = set(owner_chain.get(id(producer), ())) if producer else set()
            constant = is_constant_value(value)
            for tag in chain:
                if tag in producer_chain:
                    continue
                target = seen_const if constant else seen_input
                ids = target.setdefault(tag, set())
                if id(value) in ids:
                    if not constant:
                        flag(tag, node)
                    continue
                ids.add(id(value))
                if constant:
                    boundary(tag).constants.append(value)
                else:
                    boundary(tag).inputs.append(value)
                    flag(tag, node)
        for value in node.outputs:
            consumer_chains = [set(use_chain(use.node)) for use in value.uses()]
            for tag in chain:
                if id(value) in graph_outputs or any(tag not in c for c in consumer_chains):
                    boundary(tag).outputs.append(value)
                    flag(tag, node)
                else:
                    boundary(tag).internal.append(value)
    return result


def boundary_of(tag: str, scope: NodeScope, graph: ir.Graph) -> ModuleBoundary:
    """The boundary of any set of main-graph nodes of ``graph`` (``scope``), by the rules of
    :func:`compute_boundaries`, labelled ``tag``.

    For a module's own nodes it equals that module's boundary; it also serves node sets
    that changed since the tags were read (a scoped pass's nested scopes). O(nodes of the
    scope + their edges and uses).
    """
    result = ModuleBoundary(tag)
    graph_outputs = {id(v) for v in graph.outputs}
    members = scope.ids  # membership per edge: a set lookup, not a method call
    seen: set[int] = set()
    for node in scope.nodes:
        result.nodes.append(node)
        flagged = False
        for value in node_reads(node):
            producer = value.producer()
            if producer is not None and id(producer) in members:
                continue
            if id(value) not in seen:
                seen.add(id(value))
                if is_constant_value(value):
                    result.constants.append(value)
                    continue
                result.inputs.append(value)
            elif is_constant_value(value):
                continue
            flagged = True
        for value in node.outputs:
            outside = id(value) in graph_outputs
            if not outside:
                for use in value.uses():
                    if id(use.node) not in members:
                        outside = True
                        break
            if outside:
                result.outputs.append(value)
                flagged = True
            else:
                result.internal.append(value)
        if flagged:
            result.boundary_nodes.append(node)
    return result


def reentrant_inputs(
    boundary: ModuleBoundary,
    scope: NodeScope,
    position: Mapping[ir.Node, int],
    enclosing: Callable[[ir.Node], ir.Node | None],
) -> dict[str, set[str]]:
    """Inputs of a node set that are computed, outside it, from its own outputs.

    ``input name -> names of the outputs it depends on``; empty when the set is convex
    (no path leaves it and comes back), the usual case. Such paths exist when a module
    runs more than once (one tag on every call) or hands a value to a sibling that hands
    a result back. ``position`` is the graph order of the main graph's nodes (nodes
    missing from it are walked, never pruned); ``enclosing`` maps a node to itself when
    it is in the main graph, else to the main-graph node whose body holds it (or None). The walk follows outside nodes
    placed before the set's last node only (nothing after it can feed the set): O(those
    nodes and their edges).
    """
    last = max(position.get(node, -1) for node in boundary.nodes)
    wanted = {id(v): v for v in boundary.inputs}
    found: dict[str, set[str]] = {}
    for output in boundary.outputs:
        seen: set[int] = set()
        stack = [output]
        while stack:
            value = stack.pop()
            for use in value.uses():
                main = enclosing(use.node)
                if main is None or main in scope or id(main) in seen:
                    continue
                seen.add(id(main))
                if position.get(main, -1) > last:
                    continue
                for produced in main.outputs:
                    if id(produced) in wanted:
                        found.setdefault(produced.name or "", set()).add(output.name or "")
                    stack.append(produced)
    return found
