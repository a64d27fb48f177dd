"""Inline the functions made by function-outlining, restoring the original flat graph."""

from __future__ import annotations

__all__ = ["FunctionInliningPass"]

import logging

import onnx_ir as ir

from graphtag.analysis import manager
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes, iter_values
from graphtag.core.pass_result import PassResult
from graphtag.passes import _outline_support as sup
from graphtag.passes.toposort import TopologicalSortPass

logger = logging.getLogger(__name__)


class FunctionInliningPass(ir.passes.InPlacePass):
    """Inline graphtag's outlined functions and restore the original node order and names.

    Reads: main-graph call nodes to functions carrying ``pkg.graphtag.class`` (the ones
    :class:`FunctionOutliningPass` made; other local functions are left alone), their
    ``pkg.graphtag.outlined`` records and every node's ``pkg.graphtag.order`` key.
    Writes: each call is replaced by a copy of the function body turned into that
    instance (node names, value names, node and value metadata from the record; the
    call's outputs keep their names, types and metadata), nested calls are inlined in
    turn; the main graph is then stably sorted by order key (a node without one follows
    its predecessor) and the keys are removed; functions no longer called and the
    ``pkg.graphtag`` opset import (when no node uses the domain any more) are removed.

    Invariants: for a model outlined by :class:`FunctionOutliningPass` and not edited
    since, the result has the original topology (same nodes in the same order, same
    op types, attributes, value names, initializers; metadata restored too). If the
    graph was edited in between and sorting by key breaks an edge, the graph is
    re-sorted topologically. ``modified=False`` when there is nothing to inline.
    Statistics: ``inlined`` calls and ``removed_functions``. O(nodes + edges) plus one
    O(n log n) sort.
    """

    preserves = frozenset({manager.HIERARCHY})

    def call(self, model: ir.Model) -> PassResult:
        functions = {
            key: f for key, f in model.functions.items() if metadata.function_class(f) is not None
        }
        if len(functions) < len(model.functions):
            logger.info(
                "%d local functions not made by function-outlining are left alone",
                len(model.functions) - len(functions),
            )
        graph = model.graph
        inlined = 0
        if functions:
            work = list(sup.iter_graphtag_calls(graph, functions))
            while work:
                call = work.pop()
                new_nodes = _expand(graph, call, functions[call.op_identifier()])
                work.extend(sup.iter_graphtag_calls(new_nodes, functions))
                inlined += 1
        if inlined:
            _restore_order(model)
            # The module's own nodes read its values again (see function-outlining).
            metadata.refresh_consumers(iter_values(model))
        removed = _remove_unused(model, functions)
        stats = {"inlined": inlined, "removed_functions": removed}
        return PassResult(model, bool(inlined or removed), stats=stats)


def _expand(graph: ir.Graph, call: ir.Node, function: ir.Function) -> list[ir.Node]:
    """Replace ``call`` by an instance of ``function``'s body; return the new nodes."""
    body = ir.GraphView(function.inputs, function.outputs, nodes=list(function)).clone()
    nodes = list(body)
    sup.apply_record(nodes, metadata.outlined_record(call))
    inputs, outputs = list(body.inputs), list(body.outputs)
    body.inputs.clear()
    body.outputs.clear()
    body.remove(nodes)
    for formal, actual in zip(inputs, call.inputs):
        if actual is not None:
            ir.convenience.replace_all_uses_with(formal, actual)
    for produced, old in zip(outputs, call.outputs):
        # The main graph's view of the outputs wins (names, types, metadata).
        produced.name, produced.type, produced.doc_string = old.name, old.type, old.doc_string
        produced.shape = old.shape
        produced.metadata_props.clear()
        produced.metadata_props.update(old.metadata_props)
        ir.convenience.replace_all_uses_with(old, produced, replace_graph_outputs=True)
    graph.insert_before(call, nodes)
    graph.remove(call, safe=True)
    return nodes


def _restore_order(model: ir.Model) -> None:
    graph = model.graph
    nodes = list(graph)
    ordered = sup.sorted_by_order(nodes)
    for node in nodes:
        metadata.set_order(node, None)
    if ordered != nodes:
        graph.remove(nodes)
        graph.extend(ordered)
    TopologicalSortPass()(model)  # a no-op unless the graph was edited in between


def _remove_unused(model: ir.Model, functions: dict) -> int:
    """Drop graphtag functions nothing calls; drop the domain import once unused."""
    called: set = set()
    pending = [model.graph]
    pending.extend(f for key, f in model.functions.items() if key not in functions)
    while pending:
        container = pending.pop()
        for node in ir.traversal.RecursiveGraphIterator(container):
            key = node.op_identifier()
            if key in functions and key not in called:
                called.add(key)
                pending.append(functions[key])
    unused = [key for key in functions if key not in called]
    for key in unused:
        del model.functions[key]
    if (
        unused
        and sup.DOMAIN in model.opset_imports
        and not any(node.domain == sup.DOMAIN for node in iter_all_nodes(model))
    ):
        del model.opset_imports[sup.DOMAIN]
    return len(unused)
