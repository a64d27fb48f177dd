"""What a rewritten node replaced: its region of the reference graph (torch-free).

Used by ``retag`` for the *residual* nodes of a rewritten model, those that are not a
reference node under the same or a new name (see ``_correspondence``): fusions
(SkipLayerNormalization for Add + LayerNormalization), decompositions (Reshape, Gemm,
Reshape for MatMul + Add), layout changes.

Residual nodes joined by values the reference does not have form a *group*: one rewrite
may emit several connected nodes (two rewrites next to each other also join: the group
then covers both, coarser but never wrong). A group's region in the reference:

* *stops*: the reference values the group reads (its inputs that matched);
* *starts*: the reference values the group produces (its outputs that matched), plus,
  for an output that matched nothing, the value a matched consumer read in the reference
  at the same input position;
* the walk goes backwards from the starts through reference producers, not crossing
  stops, graph inputs or initializers, and not entering reference nodes that a rewritten
  node still is (matched ones), except the producers of the starts themselves;
* the *sources* are the walked nodes on a path from a stop (reached forward from the
  stops inside the region); a region no stop reaches (a group fed by new constants only)
  counts whole.

The group takes the lowest common ancestor of its sources' tags. Each unmatched
reference node is walked by the groups that absorbed it, so the work is linear in
practice (a removed node shared by many groups, such as a folded mask computation every
layer read, is walked once per group).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable

import onnx_ir as ir

from graphtag.core import metadata
from graphtag.core.graphs import connected_groups
from graphtag.core.hierarchy import tag_lca


@dataclasses.dataclass
class Region:
    """A group of rewritten nodes and the reference nodes it stands for."""

    nodes: list[ir.Node]  # rewritten nodes of the group
    sources: list[ir.Node]  # reference nodes they replaced (empty: nothing found)
    # The sources lie on paths from the group's matched inputs: evidence that the group
    # stands for them (a region no stop reaches counts whole, with no such evidence).
    connected: bool = False

    def tags(self) -> list[str]:
        """Distinct tags of the sources, sorted (untagged sources are ignored)."""
        return sorted({t for node in self.sources if (t := metadata.node_tag(node))})

    def tag(self) -> str | None:
        return tag_lca(self.tags())


def groups(residual: Iterable[ir.Node], values: dict[int, ir.Value]) -> list[list[ir.Node]]:
    """Residual nodes joined through values without a reference counterpart."""
    return connected_groups(residual, lambda value: id(value) not in values)


def region_of(
    group: list[ir.Node],
    values: dict[int, ir.Value],
    matched_nodes: dict[int, ir.Node],
    claimed: set[int],
) -> Region:
    """The reference nodes ``group`` replaced (see the module docstring)."""
    in_group = {id(node) for node in group}
    stops: dict[int, ir.Value] = {}
    starts: list[ir.Value] = []
    for node in group:
        for value in node.inputs:
            if value is None:
                continue
            producer = value.producer()
            if producer is not None and id(producer) in in_group:
                continue
            ref = values.get(id(value))
            if ref is not None:
                stops[id(ref)] = ref
        for value in node.outputs:
            ref = values.get(id(value))
            if ref is not None:
                starts.append(ref)
                continue
            for use in value.uses():
                kept = matched_nodes.get(id(use.node))
                if kept is not None and use.idx < len(kept.inputs):
                    before = kept.inputs[use.idx]
                    if before is not None:
                        starts.append(before)
    region = _walk_back(starts, stops, claimed)
    reached = _reached_from(stops, region)
    chosen = reached if reached else region
    sources = [node for node in region.values() if id(node) in chosen]
    return Region(group, sources, connected=bool(reached))


def _walk_back(
    starts: list[ir.Value], stops: dict[int, ir.Value], claimed: set[int]
) -> dict[int, ir.Node]:
    region: dict[int, ir.Node] = {}
    queue = deque((value, True) for value in starts)
    while queue:
        value, is_start = queue.popleft()
        if value is None or id(value) in stops:
            continue
        producer = value.producer()
        if producer is None or id(producer) in region:
            continue
        if not is_start and id(producer) in claimed:
            continue  # still present in the rewritten model: a boundary, not absorbed
        region[id(producer)] = producer
        queue.extend((v, False) for v in producer.inputs)
    return region


def _reached_from(stops: dict[int, ir.Value], region: dict[int, ir.Node]) -> set[int]:
    """Region nodes on a path from a stop; only region edges are read (a stop may be a
    value read all over the graph, such as an attention mask)."""
    readers: dict[int, list[ir.Node]] = {}
    queue: deque[ir.Node] = deque()
    for node in region.values():
        for value in node.inputs:
            if value is None:
                continue
            if id(value) in stops:
                queue.append(node)
            else:
                readers.setdefault(id(value), []).append(node)
    reached: set[int] = set()
    while queue:
        node = queue.popleft()
        if id(node) in reached:
            continue
        reached.add(id(node))
        for value in node.outputs:
            queue.extend(readers.get(id(value), ()))
    return reached
