"""Linear-time, stable, module-grouping topological sort of graphs, subgraphs and functions."""

from __future__ import annotations

__all__ = ["TopologicalSortPass"]

from collections import Counter
from collections.abc import Callable, Iterator
from itertools import repeat

import onnx_ir as ir

try:  # private onnx_ir class, used only for a faster reorder (see _linked_nodes)
    from onnx_ir._linked_list import DoublyLinkedSet
except ImportError:  # pragma: no cover - layout changed: fall back to Graph.extend
    DoublyLinkedSet = None  # type: ignore[assignment,misc]

from graphtag.errors import GraphtagError
from graphtag.graphs import subgraphs_of
from graphtag.metadata import MODULE

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
      :class:`~graphtag.errors.GraphtagError` naming the nodes on one cycle.
    """

    def __init__(self, *, group_by_tag: bool = True, verify: bool = False) -> None:
        # group_by_tag: prefer continuing with the module being emitted when reordering.
        # verify: re-check the result in ensures() (one more O(nodes + edges) walk).
        super().__init__()
        self.group_by_tag = group_by_tag
        self.verify = verify

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified, _ = self._sort(model.graph)
        for function in model.functions.values():
            function_modified, _ = self._sort(function)
            modified = modified or function_modified
        return ir.passes.PassResult(model=model, modified=modified)

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
        nodes = list(container)
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
            _apply_order(container, nodes, order)
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
        # Producer indices in CSR form, preds[start[i]:start[i + 1]]: flat int lists keep
        # allocations (and garbage-collector work) independent of the node count.
        # Values from outside map to the sentinel node n, which is never emitted.
        preds: list[int] = []
        start = [0]
        extend = preds.extend
        mark = start.append
        outside = repeat(n)
        for i, node in enumerate(nodes):
            extend(map(get, node.inputs, outside))
            if i > checked and node.attributes.data:
                deps = self._implicit(node, get, scope)
                if deps:
                    implicit[i] = deps
            if implicit and i in implicit:
                extend(implicit[i])
            mark(len(preds))
        # Consumer edges not yet emitted, per node; a duplicate edge counts twice on
        # both sides, so it cancels out.
        pending = [0] * (n + 1)
        for j, count in Counter(preds).items():
            pending[j] = count
        pending[n] = n + len(preds) + 1  # the sentinel never becomes ready

        group, members = self._groups(nodes)
        n_groups = len(members)
        cursor = [len(m) for m in members]  # members[g][cursor[g]:] have been scanned
        bound = [n] * n_groups  # lowest scanned node of each group (members ascend)
        late: list[list[int]] = [[] for _ in range(n_groups)]  # ready, behind the cursor
        n_ready = [0] * n_groups
        group_queue: list[int] = []  # groups in the order they gained a ready node
        for i in range(n - 1, -1, -1):
            if pending[i] == 0:
                g = group[i]
                if n_ready[g] == 0:
                    group_queue.append(g)
                n_ready[g] += 1

        # Reverse Kahn: repeatedly emit a node all of whose consumers are emitted, so
        # each node lands as late as its consumers allow (a node appended at the end of
        # a valid graph moves to just before its first consumer, nothing else moves).
        emitted: list[int] = []
        emit = emitted.append
        queue_head = 0
        current = -1
        while True:
            if current < 0 or n_ready[current] == 0:
                # Switch module: the next group that gained a ready node.
                current = -1
                while queue_head < len(group_queue):
                    g = group_queue[queue_head]
                    queue_head += 1
                    if n_ready[g]:
                        current = g
                        break
                if current < 0:
                    break
            stack = late[current]
            if stack:
                i = stack.pop()  # LIFO: follow a chain upwards, keeping producers close
            else:
                # Ready nodes of the group exist and none is behind the cursor, so one
                # lies ahead: scan backwards (amortised O(1): each node is passed once).
                mem = members[current]
                c = cursor[current] - 1
                while pending[mem[c]]:
                    c -= 1
                i = mem[c]
                cursor[current] = c
                bound[current] = i
            n_ready[current] -= 1
            emit(i)
            for j in preds[start[i] : start[i + 1]]:
                left = pending[j] - 1
                pending[j] = left
                if left == 0:
                    g = group[j]
                    if j > bound[g]:
                        late[g].append(j)
                    if n_ready[g] == 0 and g != current:
                        group_queue.append(g)
                    n_ready[g] += 1

        if len(emitted) != n:
            raise GraphtagError(_cycle_message(container, nodes, preds, start, pending))
        emitted.reverse()
        return emitted

    def _groups(self, nodes: list[ir.Node]) -> tuple[list[int], list[list[int]]]:
        """Group (module) id of each node, and the members of each group in order."""
        n = len(nodes)
        tags = [node.metadata_props.get(MODULE) for node in nodes] if self.group_by_tag else []
        ids: dict[str | None, int] = dict.fromkeys(tags)  # type: ignore[arg-type]
        if len(ids) <= 1:
            return [0] * n, [list(range(n))]
        for k, tag in enumerate(ids):
            ids[tag] = k
        group = list(map(ids.__getitem__, tags))
        members: list[list[int]] = [[] for _ in ids]
        for i, g in enumerate(group):
            members[g].append(i)
        return group, members


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
        used = list(_uses(node)) if node.attributes.data else node.inputs
        if max(map(get, used, outside), default=-1) >= i:
            return node
    return None


def _uses(node: ir.Node) -> Iterator[ir.Value | None]:
    """The node's inputs and the outer-scope values its subgraphs use (slow, for checks)."""
    yield from node.inputs
    for subgraph in subgraphs_of(node):
        nodes = list(subgraph)
        inside = {value: 0 for node in nodes for value in node.outputs}
        found: dict[ir.Value, None] = {}
        used = [value for node in nodes for value in _uses(node)]
        used.extend(subgraph.outputs)
        for value in used:
            if value is not None and value not in inside and value.producer() is not None:
                found[value] = None
        yield from found


def _apply_order(container: _Container, nodes: list[ir.Node], order: list[int]) -> None:
    """Reorder ``container`` to ``order``, moving only the span that changed."""
    n = len(order)
    lo = 0
    while lo < n and order[lo] == lo:
        lo += 1
    hi = n - 1
    while hi > lo and order[hi] == hi:
        hi -= 1
    moved = [nodes[k] for k in order[lo : hi + 1]]
    if lo == 0 and hi + 1 == n:
        linked = _linked_nodes(container)
        if linked is not None:
            # Every node already belongs to the graph and has its name registered, so
            # re-appending to the linked list directly skips half of Graph.extend's work.
            linked.extend(moved)
            return
    # Each branch is O(len(moved)) on onnx_ir's linked list. Inserting after an unmoved
    # anchor needs no removal: re-inserting a node unlinks it first. Inserting before
    # the unmoved suffix does (its insertion point may be a moved node's box).
    if lo > 0:
        container.insert_after(nodes[lo - 1], moved)
    elif hi + 1 == n:
        container.extend(moved)
    else:
        container.remove(moved)
        container.insert_before(nodes[hi + 1], moved)


def _linked_nodes(container: _Container) -> DoublyLinkedSet | None:  # type: ignore[valid-type]
    """The node list under ``container`` when onnx_ir's layout is the expected one."""
    graph = container.graph if isinstance(container, ir.Function) else container
    linked = getattr(graph, "_nodes", None)
    return linked if DoublyLinkedSet is not None and type(linked) is DoublyLinkedSet else None


def _node_label(node: ir.Node) -> str:
    return node.name or f"<{node.op_type}>"


def _cycle_message(
    container: _Container,
    nodes: list[ir.Node],
    preds: list[int],
    start: list[int],
    pending: list[int],
) -> str:
    """Describe one cycle among the nodes the sort could not emit."""
    # Every unemitted node still has an unemitted consumer, so walking consumers
    # from any of them must revisit a node: that closes a cycle.
    n = len(nodes)
    remaining = [i for i in range(n) if pending[i]]
    alive = set(remaining)
    consumer: dict[int, int] = {}  # one unemitted consumer per unemitted producer
    for i in remaining:
        for j in preds[start[i] : start[i + 1]]:
            if j in alive:
                consumer.setdefault(j, i)
    seen: dict[int, int] = {}
    path: list[int] = []
    i = remaining[0]
    while i not in seen:
        seen[i] = len(path)
        path.append(i)
        i = consumer[i]
    cycle = path[seen[i] :]
    names = [_node_label(nodes[k]) for k in cycle[:_MAX_CYCLE_NAMES]]
    more = f" -> ... ({len(cycle)} nodes)" if len(cycle) > _MAX_CYCLE_NAMES else ""
    where = f"graph {container.name!r}" if container.name else "the graph"
    return f"{where} has a cycle: {' -> '.join(names)}{more} -> {names[0]}"
