"""Linear-time, stable, module-grouping topological sort of graphs, subgraphs and functions."""

from __future__ import annotations

__all__ = ["TopologicalSortPass"]

from array import array
from collections.abc import Callable
from itertools import repeat
from typing import Annotated

import numpy as np
import onnx_ir as ir

from graphtag.analysis import manager
from graphtag.analysis.kahn import CycleError, reverse_kahn
from graphtag.core.errors import GraphtagError
from graphtag.core.graphs import node_reads, subgraphs_of
from graphtag.core.metadata import MODULE
from graphtag.core.pass_result import PassResult
from graphtag.passes._node_list import NodeList

# Graph and Function both iterate their nodes and expose the same mutation methods.
_Container = ir.Graph | ir.Function
_MAX_CYCLE_NAMES = 10


class _Scope:
    """What sorting one graph found out besides its order."""

    __slots__ = ("free", "modified")

    def __init__(self) -> None:
        self.modified = False  # some subgraph was reordered
        # Values used inside but defined outside; a dict (ordered set) keeps the
        # result deterministic.
        self.free: dict[ir.Value, None] = {}


class TopologicalSortPass(ir.passes.InPlacePass):
    """Stable, linear-time topological sort that keeps each module's nodes together.

    Sorts the main graph, every subgraph (at any depth) and every local function.

    Reads: node inputs, graph-valued attributes (If/Loop/Scan bodies, at any depth),
    graph outputs and, with ``group_by_tag``, each node's ``pkg.graphtag.module`` tag.
    Writes: the node order of the main graph, of every subgraph and of every local
    function; nothing else (nodes, values, names and metadata are untouched).

    Invariants:

    * a graph whose order is already valid keeps it exactly (``modified=False``);
    * otherwise the new order is a valid topological order chosen by a reverse Kahn
      walk: nodes are placed as late as their consumers allow, ties go first to the
      module being emitted (with ``group_by_tag``), then to the original order;
    * a node holding subgraphs comes after the producers of every outer-scope value
      its subgraphs use;
    * O(nodes + edges) time for each graph (no heap); a cycle raises
      :class:`~graphtag.core.errors.GraphtagError` naming the nodes on one cycle.
    """

    preserves = frozenset({manager.HIERARCHY, manager.PARAMETERS})  # only the order changes

    def __init__(
        self,
        *,
        group_by_tag: Annotated[bool, "keep each module's nodes together when reordering"] = True,
        verify: Annotated[bool, "re-check the order afterwards (one more walk)"] = False,
    ) -> None:
        super().__init__()
        self.group_by_tag = group_by_tag
        self.verify = verify

    def call(self, model: ir.Model) -> PassResult:
        modified, _ = self._sort(model.graph)
        for function in model.functions.values():
            function_modified, _ = self._sort(function)
            modified = modified or function_modified
        return PassResult(model, modified)

    def ensures(self, model: ir.Model) -> None:
        if not self.verify:
            return
        containers: list[_Container] = [model.graph, *model.functions.values()]
        while containers:
            container = containers.pop()
            nodes = list(container)
            if _first_violation(nodes) is not None:
                raise ir.passes.PostconditionError(
                    f"graph {container.name!r} is not topologically sorted"
                )
            for node in nodes:
                containers.extend(subgraphs_of(node))

    def _sort(
        self, container: _Container, want_free: bool = False
    ) -> tuple[bool, dict[ir.Value, None]]:
        """Sort ``container`` and its subgraphs in place.

        Returns whether any order changed and, when ``want_free`` (for subgraphs), the
        values defined outside ``container`` that it uses (its outer-scope values).
        """
        node_list = NodeList(container)
        nodes = node_list.nodes
        # Values are keyed directly (not through value.producer()): one object touched
        # per edge instead of two, which matters once the graph outgrows the CPU caches.
        producer_index = {value: i for i, node in enumerate(nodes) for value in node.outputs}
        get = producer_index.get
        scope = _Scope()
        # Node index -> indices of same-graph producers of values its subgraphs use.
        implicit: dict[int, list[int]] = {}
        # Fast path: check the order in one walk and stop at the first violation.
        outside = repeat(-1)  # inputs, initializers, outer values: never a violation
        checked = len(nodes)
        for i, node in enumerate(nodes):
            if node.attributes.data:
                deps = self._implicit(node, get, scope)
                if deps:
                    implicit[i] = deps
                    if max(deps) >= i:
                        checked = i
                        break
            if max(map(get, node.inputs, outside), default=-1) >= i:
                checked = i
                break
        valid = checked == len(nodes)
        if not valid:
            order = self._order(container, nodes, get, implicit, checked, scope)
            node_list.reorder(order)
        if want_free:
            _add_outer_values(scope.free, container, nodes, producer_index)
        return scope.modified or not valid, scope.free

    def _implicit(
        self, node: ir.Node, get: Callable[..., int | None], scope: _Scope
    ) -> list[int] | None:
        """Sort ``node``'s subgraphs; return the indices of their same-graph producers."""
        subgraphs = subgraphs_of(node)
        if not subgraphs:
            return None
        deps: list[int] = []
        for subgraph in subgraphs:
            sub_modified, sub_free = self._sort(subgraph, want_free=True)
            scope.modified = scope.modified or sub_modified
            for value in sub_free:
                j = get(value)
                if j is None:
                    scope.free[value] = None  # defined further out
                else:
                    deps.append(j)
        return deps

    def _order(
        self,
        container: _Container,
        nodes: list[ir.Node],
        get: Callable[..., int | None],
        implicit: dict[int, list[int]],
        checked: int,
        scope: _Scope,
    ) -> list[int]:
        """A valid order (list of original indices) close to the original one.

        Subgraphs of nodes up to ``checked`` are already sorted (``implicit`` holds
        their dependencies); the rest are sorted here.
        """
        n = len(nodes)
        # Producer indices in CSR form, preds[start[i]:start[i + 1]], in flat C-int
        # arrays: the walk below then touches a few compact arrays instead of one int
        # object per edge, which keeps large graphs within the CPU caches. Values from
        # outside map to the sentinel node n, which is never emitted.
        preds = array("i")
        start = array("i", [0])
        extend = preds.extend
        mark = start.append
        outside = repeat(n)
        # Dense module ids by first appearance, assigned while the node is in cache.
        group = array("i")
        ids: dict[str | None, int] = {}
        assign = ids.setdefault
        add_group = group.append
        by_tag = self.group_by_tag
        for i, node in enumerate(nodes):
            extend(map(get, node.inputs, outside))
            if i > checked and node.attributes.data:
                deps = self._implicit(node, get, scope)
                if deps:
                    implicit[i] = deps
            if implicit and i in implicit:
                extend(implicit[i])
            mark(len(preds))
            if by_tag:
                add_group(assign(node.metadata_props.get(MODULE), len(ids)))
        n_groups = max(len(ids), 1)
        groups = np.frombuffer(group, dtype=np.intc) if n_groups > 1 else np.zeros(n, np.intc)
        try:
            return reverse_kahn(
                np.frombuffer(preds, dtype=np.intc),
                np.frombuffer(start, dtype=np.intc),
                groups,
                n_groups,
            )
        except CycleError as error:
            raise GraphtagError(_cycle_message(container, nodes, error.cycle)) from None


def _add_outer_values(
    found: dict[ir.Value, None],
    container: _Container,
    nodes: list[ir.Node],
    producer_index: dict[ir.Value, int],
) -> None:
    """Add the node-produced values from outside ``container`` that it uses to ``found``.

    Graph inputs and initializers have no producer, so they never constrain an order.
    """
    used = [value for node in nodes for value in node.inputs]
    used.extend(container.outputs)  # a subgraph may return an outer value directly
    for value in used:
        if value is not None and value not in producer_index and value.producer() is not None:
            found[value] = None


def _first_violation(nodes: list[ir.Node]) -> ir.Node | None:
    """The first node using a value (directly or in a subgraph) produced at or after it."""
    get = {value: i for i, node in enumerate(nodes) for value in node.outputs}.get
    outside = repeat(-1)
    for i, node in enumerate(nodes):
        used = node_reads(node) if node.attributes.data else node.inputs
        if max(map(get, used, outside), default=-1) >= i:
            return node
    return None


def _node_label(node: ir.Node) -> str:
    return node.name or f"<{node.op_type}>"


def _cycle_message(container: _Container, nodes: list[ir.Node], cycle: list[int]) -> str:
    """Describe the cycle through ``nodes[k] for k in cycle`` (in edge order)."""
    names = [_node_label(nodes[k]) for k in cycle[:_MAX_CYCLE_NAMES]]
    more = f" -> ... ({len(cycle)} nodes)" if len(cycle) > _MAX_CYCLE_NAMES else ""
    where = f"graph {container.name!r}" if container.name else "the graph"
    return f"{where} has a cycle: {' -> '.join(names)}{more} -> {names[0]}"
