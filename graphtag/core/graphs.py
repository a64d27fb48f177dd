"""Graph-walking helpers shared by the core and the passes (torch-free).

* :func:`subgraphs_of`: the graphs a node holds (control-flow bodies), not nested ones;
* :func:`outer_values`: the values from outside a node that its subgraphs read;
* :func:`iter_graphs`: the main graph, every function and every nested subgraph.
"""

from __future__ import annotations

__all__ = ["iter_graphs", "outer_values", "subgraphs_of"]

from collections.abc import Iterator

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


def iter_graphs(model: ir.Model) -> Iterator[ir.Graph | ir.Function]:
    """The main graph, every function, and every subgraph nested in them (pre-order)."""
    stack: list[ir.Graph | ir.Function] = [*reversed(model.functions.values()), model.graph]
    while stack:
        graph = stack.pop()
        yield graph
        subgraphs: list[ir.Graph] = []
        for node in graph:
            subgraphs.extend(subgraphs_of(node))
        stack.extend(reversed(subgraphs))
