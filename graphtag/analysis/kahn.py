"""Kahn's algorithm, the one cycle finder: toposort's walk, validation's cycle rule and
outlining's collapse check all run :func:`reverse_kahn`.

The core is a stable, module-grouping reverse Kahn walk on integers.

Input is the dependency graph in CSR form over node indices ``0..n-1`` (the original
order): ``preds[start[i]:start[i + 1]]`` are the producers of node ``i``, with ``n``
standing for "defined outside" (never emitted). ``group[i]`` is node ``i``'s module.

Before walking, nodes are renumbered group by group (a stable counting sort), so the
nodes of one module and their edges sit next to each other in every array the walk
touches. The walk mostly stays inside one module, so on large graphs its memory
accesses stay local instead of jumping across arrays of the whole graph's size.
Renumbering keeps the original order inside each group, so the result is the same as
walking in the original numbering.
"""

from __future__ import annotations

__all__ = [
    "CycleError",
    "collapsed_cycle",
    "reverse_kahn",
    "topological_order",
    "unorderable_nodes",
]

from array import array

import numpy as np
import onnx_ir as ir

from graphtag.core.graphs import node_reads


class CycleError(Exception):
    """The graph has a cycle; ``cycle`` lists its node indices in edge order, ``stuck``
    every node the walk could not emit (sorted)."""

    def __init__(self, cycle: list[int], stuck: list[int]) -> None:
        super().__init__(cycle)
        self.cycle = cycle
        self.stuck = stuck


def _stable_order(keys: np.ndarray) -> np.ndarray:
    """Indices that sort non-negative int32 ``keys`` stably, in O(n).

    numpy's stable sort is a radix sort for 16-bit keys, so sort by the low then the
    high 16 bits (least significant digit first).
    """
    order = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    if keys.size and int(keys.max()) > 0xFFFF:
        high = (keys[order] >> 16).astype(np.uint16)
        order = order[np.argsort(high, kind="stable")]
    return order


def reverse_kahn(
    preds: np.ndarray, start: np.ndarray, group: np.ndarray, n_groups: int
) -> list[int]:
    """A valid order (original indices) close to the original one; O(nodes + edges).

    Nodes are placed as late as their consumers allow; ties go to the module being
    emitted, then to the original order. Raises :class:`CycleError` on a cycle.
    """
    n = len(start) - 1
    if n_groups > 1:
        member = _stable_order(group)  # new index -> original index
        rank = np.empty(n + 1, dtype=np.int64)
        rank[member] = np.arange(n)
        rank[n] = n
        sizes = np.bincount(group, minlength=n_groups)
        first = np.zeros(n_groups + 1, dtype=np.int64)
        np.cumsum(sizes, out=first[1:])
        # Gather each node's CSR row in the new order and renumber the producers.
        lengths = np.diff(start)[member]
        new_start = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=new_start[1:])
        rows = np.repeat(start[:-1][member] - new_start[:-1], lengths)
        rows += np.arange(len(preds))
        new_preds = rank[preds[rows]]
        new_group = np.repeat(np.arange(n_groups), sizes)
    else:
        member = None
        rank = None
        first = np.array([0, n])
        new_start = start
        new_preds = preds
        new_group = group  # all zeros

    # Consumer edges not yet emitted, per node; a duplicate edge counts twice on both
    # sides, so it cancels out. The sentinel n never becomes ready.
    counts = np.bincount(new_preds, minlength=n + 1)
    counts[n] = n + len(preds) + 1
    # Groups in the order of their last ready node in the original order.
    ready = np.flatnonzero((counts[rank[:n]] if rank is not None else counts[:n]) == 0)
    ready_groups = group[ready[::-1]].tolist()
    group_queue = list(dict.fromkeys(ready_groups))  # groups as they gained a ready node
    n_ready = np.bincount(np.asarray(ready_groups, dtype=np.int64), minlength=n_groups).tolist()

    pending = counts.tolist()
    preds_list = _ints(new_preds)
    start_list = _ints(new_start)
    group_of = _ints(new_group)
    cursor = first[1:].tolist()  # nodes cursor[g]..first[g + 1] - 1 have been scanned
    bound = [n] * n_groups  # lowest scanned node of each group
    # Ready nodes behind the cursor, one LIFO stack per group kept inside the group's
    # own slice of one flat list (a group never holds more than its own nodes): no
    # per-group allocation, and pushes stay next to the group's other data.
    late = [0] * n
    base = first[:-1].tolist()
    top = list(base)

    # Reverse Kahn: repeatedly emit a node all of whose consumers are emitted, so each
    # node lands as late as its consumers allow (a node appended at the end of a valid
    # graph moves to just before its first consumer, nothing else moves).
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
        t = top[current]
        if t > base[current]:
            t -= 1  # LIFO: follow a chain upwards, keeping producers close
            i = late[t]
            top[current] = t
        else:
            # Ready nodes of the group exist and none is behind the cursor, so one lies
            # ahead: scan backwards (amortised O(1): each node is passed once).
            i = cursor[current] - 1
            while pending[i]:
                i -= 1
            cursor[current] = i
            bound[current] = i
        n_ready[current] -= 1
        emit(i)
        for j in preds_list[start_list[i] : start_list[i + 1]]:
            left = pending[j] - 1
            pending[j] = left
            if left == 0:
                g = group_of[j]
                if j > bound[g]:
                    t = top[g]
                    late[t] = j
                    top[g] = t + 1
                if n_ready[g] == 0 and g != current:
                    group_queue.append(g)
                n_ready[g] += 1

    if len(emitted) != n:
        stuck = [i for i in range(n) if pending[i]]
        cycle = _find_cycle(preds_list, start_list, stuck)
        if member is not None:
            cycle, stuck = member[cycle].tolist(), sorted(member[stuck].tolist())
        raise CycleError(cycle, stuck)
    emitted.reverse()
    return emitted if member is None else member[emitted].tolist()


def _ints(values: np.ndarray) -> array:
    """A compact C-int array: indexing it creates small ints on the fly, which is
    cheaper on large graphs than reaching a list's scattered int objects."""
    return array("i", values.astype(np.intc).tobytes())


def _find_cycle(preds: array, start: array, remaining: list[int]) -> list[int]:
    """One cycle among the nodes the walk could not emit, in edge order."""
    # Every unemitted node still has an unemitted consumer, so walking consumers from
    # any of them must revisit a node: that closes a cycle.
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
    return path[seen[i] :]


# -- the walk on ONNX nodes ----------------------------------------------------------------


def _cycle_of(n: int, edges: list[tuple[int, int]]) -> CycleError | None:
    """Kahn's walk over ``n`` nodes and ``(node, predecessor)`` edges: the CycleError for
    what it could not order, or None."""
    pairs = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    start = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(pairs[:, 0], minlength=n), out=start[1:])
    preds = pairs[np.argsort(pairs[:, 0], kind="stable"), 1]
    try:
        reverse_kahn(preds, start, np.zeros(n, np.intc), 1)
    except CycleError as error:
        return error
    return None


def unorderable_nodes(nodes: list[ir.Node]) -> list[ir.Node]:
    """The nodes no topological order can place: on a cycle or downstream of one (a node
    holding subgraphs depends on what they read from outside). Graph order."""
    index = {node: i for i, node in enumerate(nodes)}
    # Successor edges given as predecessors turn the reverse walk into a forward one,
    # so what it cannot emit lies on or downstream of a cycle.
    edges = [
        (j, i)
        for i, node in enumerate(nodes)
        for value in node_reads(node)
        if (j := index.get(value.producer())) is not None
    ]
    error = _cycle_of(len(nodes), edges)
    return [] if error is None else [nodes[i] for i in error.stuck]


def topological_order(nodes: list[ir.Node]) -> list[ir.Node]:
    """``nodes`` (a part of one graph) in an order where each comes after the nodes among
    them it depends on (a node holding subgraphs depends on what they read from
    outside), as close to the given order as possible; the given list itself when it
    is already ordered. Raises :class:`CycleError` (node indices) on a cycle."""
    index = {node: i for i, node in enumerate(nodes)}
    edges = [
        (i, j)
        for i, node in enumerate(nodes)
        for value in node_reads(node)
        if (j := index.get(value.producer())) is not None
    ]
    if all(j < i for i, j in edges):
        return nodes
    pairs = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    n = len(nodes)
    start = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(pairs[:, 0], minlength=n), out=start[1:])
    preds = pairs[np.argsort(pairs[:, 0], kind="stable"), 1]
    order = reverse_kahn(preds, start, np.zeros(n, np.intc), 1)
    return [nodes[i] for i in order]


def collapsed_cycle(nodes: list[ir.Node], group: dict[ir.Node, int]) -> list[int] | None:
    """Groups on a cycle of the graph where each group of nodes is collapsed into one.

    ``group`` maps the nodes of each group to its id (0, 1, ...); other nodes stay alone.
    None when the collapsed graph is acyclic. O(nodes + edges).
    """
    n_groups = max(group.values(), default=-1) + 1
    sid = {node: group.get(node, n_groups + i) for i, node in enumerate(nodes)}
    edges = {
        (v, u)
        for node in nodes
        for value in node_reads(node)
        if (u := sid.get(value.producer())) is not None and u != (v := sid[node])
    }
    error = _cycle_of(n_groups + len(nodes), list(edges))
    return None if error is None else [s for s in error.cycle if s < n_groups]
