"""Which nodes contribute to an output: the one home of the dead-node question.

A node is live when some output of its graph, subgraph or function depends on it (a node
holding subgraphs depends on what its bodies read from the enclosing graph). ONNX
allows dead nodes and ONNX Runtime drops them; validate's ``orphan-nodes`` rule reports
them, and the export records the ones torch's exporter left (graphtag keeps torch's
topology, so those stay).
"""

from __future__ import annotations

import onnx_ir as ir

from graphtag.core.graphs import iter_all_nodes, subgraphs_of

__all__ = ["dead_node_names", "dead_nodes"]


def dead_nodes(model: ir.Model) -> list[ir.Node]:
    """The nodes no output depends on, in :func:`iter_all_nodes` order. Linear."""
    live: set[ir.Node] = set()
    containers: list = [model.graph, *model.functions.values()]
    stack = [v.producer() for c in containers for v in c.outputs if v.producer() is not None]
    while stack:
        node = stack.pop()
        if node in live:
            continue
        live.add(node)
        for value in node.inputs:
            if value is not None and (producer := value.producer()) is not None:
                stack.append(producer)
        for graph in subgraphs_of(node):
            stack.extend(v.producer() for v in graph.outputs if v.producer() is not None)
    return [node for node in iter_all_nodes(model) if node not in live]


def dead_node_names(model: ir.Model) -> list[str]:
    """The names of the named dead nodes (what ``pkg.graphtag.exporter_dead_nodes`` lists)."""
    return [node.name for node in dead_nodes(model) if node.name]
