"""Tests for the integer core of toposort (graphtag.analysis.kahn), torch-free."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphtag.analysis.kahn import CycleError, _stable_order, reverse_kahn

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def csr(preds_of: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    start = np.zeros(len(preds_of) + 1, dtype=np.intc)
    np.cumsum([len(p) for p in preds_of], out=start[1:])
    flat = [j for p in preds_of for j in p]
    return np.array(flat, dtype=np.intc), start


@st.composite
def graphs(draw, max_nodes: int = 30):
    """(producers of each node in some order, group of each node, group count)."""
    n = draw(st.integers(1, max_nodes))
    rank = draw(st.permutations(range(n)))  # a hidden topological order
    preds_of = []
    for i in range(n):
        earlier = [j for j in range(n) if rank[j] < rank[i]]
        picks = draw(st.lists(st.sampled_from(earlier), max_size=3)) if earlier else []
        outside = draw(st.integers(0, 1))
        preds_of.append(picks + [n] * outside)  # n: defined outside the graph
    n_groups = draw(st.integers(1, 4))
    group = draw(st.lists(st.integers(0, n_groups - 1), min_size=n, max_size=n))
    return preds_of, group, n_groups


def is_valid(order: list[int], preds_of: list[list[int]]) -> bool:
    position = {node: k for k, node in enumerate(order)}
    n = len(preds_of)
    return all(position[j] < position[i] for i in range(n) for j in preds_of[i] if j < n)


@FAST
@given(graphs())
def test_result_is_a_valid_permutation(graph):
    preds_of, group, n_groups = graph
    preds, start = csr(preds_of)
    order = reverse_kahn(preds, start, np.array(group, dtype=np.intc), n_groups)
    assert sorted(order) == list(range(len(preds_of)))
    assert is_valid(order, preds_of)


@FAST
@given(graphs(), st.data())
def test_group_labels_do_not_matter(graph, data):
    # Renumbering sorts nodes by group id; relabelling the groups changes that layout
    # but must not change the order.
    preds_of, group, n_groups = graph
    preds, start = csr(preds_of)
    relabel = data.draw(st.permutations(range(n_groups)))
    first = reverse_kahn(preds, start, np.array(group, dtype=np.intc), n_groups)
    relabelled = np.array([relabel[g] for g in group], dtype=np.intc)
    assert reverse_kahn(preds, start, relabelled, n_groups) == first


@FAST
@given(graphs())
def test_sorted_input_without_groups_stays(graph):
    preds_of, _, _ = graph
    n = len(preds_of)
    order = reverse_kahn(*csr(preds_of), np.zeros(n, dtype=np.intc), 1)
    # Relabel nodes in that valid order: the walk must then return the identity.
    new = {old: k for k, old in enumerate(order)}
    new[n] = n
    relabelled = [[new[j] for j in preds_of[old]] for old in order]
    assert reverse_kahn(*csr(relabelled), np.zeros(n, dtype=np.intc), 1) == list(range(n))


def test_a_module_stays_together_when_dependencies_allow():
    # 0 -> 2 and 1 -> 3, nodes interleaved across groups A = {0, 2}, B = {1, 3}.
    preds, start = csr([[], [], [0], [1]])
    order = reverse_kahn(preds, start, np.array([0, 1, 0, 1], dtype=np.intc), 2)
    assert order in ([0, 2, 1, 3], [1, 3, 0, 2])


def test_cycle_is_returned_in_edge_order():
    # 0 -> 1 -> 2 -> 0, and 3 consumes 2.
    preds, start = csr([[2], [0], [1], [2]])
    with pytest.raises(CycleError) as info:
        reverse_kahn(preds, start, np.array([0, 1, 0, 1], dtype=np.intc), 2)
    cycle = info.value.cycle
    assert sorted(cycle) == [0, 1, 2]
    k = cycle.index(0)
    assert cycle[k:] + cycle[:k] == [0, 1, 2]


@pytest.mark.parametrize("high", [10, 70_000, 2**31 - 1])
def test_stable_order_matches_numpy_stable_sort(high):
    keys = np.random.default_rng(0).integers(0, high, size=5_000).astype(np.intc)
    assert np.array_equal(_stable_order(keys), np.argsort(keys, kind="stable"))
