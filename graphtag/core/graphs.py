"""The one place that walks a model's graphs (torch-free), on onnx_ir's own iterator.

* :func:`iter_graphs`: the main graph and its nested subgraphs, then every local
  function and the subgraphs nested in it;
* :func:`iter_all_nodes`: every node of those graphs (pre-order through bodies);
* :func:`iter_initializers`, :func:`iter_values`: the values those graphs define;
* :func:`subgraphs_of`: the graphs a node holds (control-flow bodies), not nested ones;
* :func:`outer_values`: the values from outside a node that its subgraphs read;
* :func:`node_reads`: a node's inputs, then those outer values;
* :func:`subgraph_owners`: the main-graph node enclosing each node of a body.
"""

from __future__ import annotations

__all__ = [
    "iter_all_nodes",
    "iter_graphs",
    "iter_initializers",
    "iter_values",
    "node_reads",
    "outer_values",
    "subgraph_owners",
    "subgraphs_of",
]

from collections.abc import Callable, Iterable, Iterator

import onnx_ir as ir

_GRAPH = ir.AttributeType.GRAPH
_GRAPHS = ir.AttributeType.GRAPHS


def subgraphs_of(node: ir.Node) -> list[ir.Graph]:
    """The graphs held by ``node``'s attributes (control-flow bodies), not nested ones.

    Reference attributes (in function bodies) hold no graph and are skipped. Called for
    every node with attributes by the topological sort: keep it cheap.
    """
    graphs: list[ir.Graph] = []
    for attr in node.attributes.data.values():  # the plain dict: faster than the mapping
        kind = attr.type
        if kind == _GRAPH:
            if not attr.is_ref():
                graphs.append(attr.value)
        elif kind == _GRAPHS and not attr.is_ref():
            graphs.extend(attr.value)
    return graphs


def outer_values(node: ir.Node) -> list[ir.Value]:
    """Values from outside ``node`` that its subgraphs (at any depth) read.

    Node inputs and graph outputs of every nested graph count as reads. The order is
    first use in a breadth-first walk of the nested graphs (each graph's outputs, then
    its nodes' inputs). One walk: a value is local when some nested graph declares it
    (input, initializer or node output); ids are unique, so one set covers every scope.
    """
    graphs = subgraphs_of(node)
    if not graphs:
        return []
    defined: set[int] = set()
    used: list[ir.Value] = []
    for graph in graphs:  # grows while walking: nested bodies come after their parents
        defined.update(id(v) for v in graph.inputs)
        defined.update(id(v) for v in graph.initializers.values())
        used.extend(graph.outputs)
        for inner in graph:
            defined.update(id(v) for v in inner.outputs)
            used.extend(v for v in inner.inputs if v is not None)
            graphs.extend(subgraphs_of(inner))
    found: list[ir.Value] = []
    seen: set[int] = set()
    for value in used:
        if id(value) not in defined and id(value) not in seen:
            seen.add(id(value))
            found.append(value)
    return found


def node_reads(node: ir.Node) -> list[ir.Value]:
    """What ``node`` depends on: its inputs, then the outer values its subgraphs read."""
    values = [v for v in node.inputs if v is not None]
    if node.attributes.data:  # the plain dict: no method call per node
        values.extend(outer_values(node))
    return values


def subgraph_owners(graph: ir.Graph) -> dict[ir.Node, ir.Node]:
    """Each node inside a control-flow body (at any depth) -> the node of ``graph``
    holding that body."""
    owners: dict[ir.Node, ir.Node] = {}
    for node in graph:
        for sub in subgraphs_of(node):
            owners.update(dict.fromkeys(_walk(sub), node))
    return owners


def _holds_graphs(node: ir.Node) -> bool:
    # onnx_ir's iterator opens a generator for every node it descends into: skip the
    # many nodes without attributes (they hold no subgraph).
    return bool(node.attributes.data)


def _walk(container: ir.Graph | ir.Function) -> ir.traversal.RecursiveGraphIterator:
    return ir.traversal.RecursiveGraphIterator(container, recursive=_holds_graphs)


def _with_subgraphs(container: ir.Graph | ir.Function) -> list[ir.Graph | ir.Function]:
    """``container`` and the subgraphs nested in it (parents before their bodies).

    A plain loop over :func:`subgraphs_of`: cheaper than onnx_ir's ``Graph.subgraphs()``
    (the multi-consumer pass walks every graph), and it skips a function body's
    reference attributes, which hold no graph."""
    graphs = [container]
    for graph in graphs:  # grows while walking
        for node in graph:
            if node.attributes.data:
                graphs.extend(subgraphs_of(node))
    return graphs


def iter_graphs(model: ir.Model) -> Iterator[ir.Graph | ir.Function]:
    """The main graph and its nested subgraphs, then each function and its subgraphs."""
    for container in [model.graph, *model.functions.values()]:
        yield from _with_subgraphs(container)


def iter_all_nodes(model: ir.Model) -> Iterator[ir.Node]:
    """Every node: main graph, then each function, each pre-order through its bodies."""
    for container in [model.graph, *model.functions.values()]:
        yield from _walk(container)


def iter_initializers(model: ir.Model) -> Iterator[ir.Value]:
    """The initializers of the main graph and of every nested subgraph."""
    for graph in _with_subgraphs(model.graph):
        yield from graph.initializers.values()


def iter_values(model: ir.Model) -> Iterator[ir.Value]:
    """Inputs, initializers and node outputs of every graph and function, each once."""
    for graph in iter_graphs(model):
        seen: set[int] = set()
        initializers = graph.initializers.values() if isinstance(graph, ir.Graph) else ()
        outputs = (v for node in graph for v in node.outputs)
        for group in (graph.inputs, initializers, outputs):
            for value in group:
                if id(value) not in seen:
                    seen.add(id(value))
                    yield value


def connected_groups(
    nodes: Iterable[ir.Node], joins: Callable[[ir.Value], bool] = lambda value: True
) -> list[list[ir.Node]]:
    """``nodes`` split into groups joined through the values one of them produces.

    Two nodes of ``nodes`` share a group when one reads a value the other produces and
    ``joins(value)`` holds. Union-find: near-linear in the nodes' inputs. Groups and their
    members keep the order of ``nodes``.
    """
    members = {id(node): node for node in nodes}
    parent = {key: key for key in members}

    def find(key: int) -> int:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for node in members.values():
        for value in node.inputs:
            if value is None or not joins(value):
                continue
            producer = value.producer()
            if producer is not None and id(producer) in members:
                parent[find(id(producer))] = find(id(node))
    found: dict[int, list[ir.Node]] = {}
    for key, node in members.items():
        found.setdefault(find(key), []).append(node)
    return list(found.values())
