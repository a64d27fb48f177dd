"""A layered (top-to-bottom) drawing of a small directed graph: one module's children.

Boxes come with an order key (their first node's position in the graph, which is
topological); an edge from a smaller key to a larger one is a forward edge and pushes
its target down a layer, any other edge (a cycle through the parent's own nodes, a
module called twice) is drawn but does not constrain the layers. Layers are the longest
forward path; within a layer boxes are ordered by the mean position of their
predecessors (one downward sweep), then packed left to right and centred. Cost
O(boxes log boxes + edges).
"""

from __future__ import annotations

import dataclasses

BOX_HEIGHT = 40
LAYER_GAP = 44
BOX_GAP = 24
CHAR_WIDTH = 7  # px per label character at the report's 12px monospace-ish font
MIN_WIDTH = 80
MAX_WIDTH = 260
MARGIN = 16
DETOUR_GAP = 10  # px between the detours of back and layer-skipping edges


@dataclasses.dataclass
class Box:
    key: float  # order key: smaller first
    label: str
    sub: str = ""  # second line (class name, node count)
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0
    layer: int = 0


def layout(
    boxes: list[Box], edges: list[tuple[int, int]]
) -> tuple[list[bool], list[float | None], float, float]:
    """Place ``boxes`` in place.

    Returns, per edge, whether it is forward and the x of its detour (None for an edge
    between adjacent layers, drawn straight down; a back edge or one skipping layers runs
    down the right of the boxes it passes, each at its own x), then the drawing's width
    and height.
    """
    n = len(boxes)
    forward = [boxes[s].key < boxes[t].key for s, t in edges]
    preds: list[list[int]] = [[] for _ in range(n)]
    for (s, t), fwd in zip(edges, forward):
        if fwd:
            preds[t].append(s)
    order = sorted(range(n), key=lambda i: boxes[i].key)
    for i in order:  # keys are a topological order of the forward edges
        boxes[i].layer = max((boxes[p].layer + 1 for p in preds[i]), default=0)
    layers: dict[int, list[int]] = {}
    for i in order:
        layers.setdefault(boxes[i].layer, []).append(i)
    slot: dict[int, float] = {}
    for level in sorted(layers):
        members = layers[level]
        rank = {i: r for r, i in enumerate(members)}

        def barycentre(i: int, rank: dict[int, int] = rank) -> tuple[float, int]:
            ps = [slot[p] for p in preds[i] if p in slot]
            return (sum(ps) / len(ps) if ps else float(rank[i]), rank[i])

        members.sort(key=barycentre)
        for position, i in enumerate(members):
            slot[i] = float(position)
    for box in boxes:
        longest = max(len(box.label), len(box.sub))
        box.w = float(min(MAX_WIDTH, max(MIN_WIDTH, longest * CHAR_WIDTH + 16)))
    rows = [layers[level] for level in sorted(layers)]
    widths = [sum(boxes[i].w for i in row) + BOX_GAP * (len(row) - 1) for row in rows]
    width = max(widths, default=0.0) + 2 * MARGIN
    for level, (row, row_width) in enumerate(zip(rows, widths)):
        x = (width - row_width) / 2
        for i in row:
            boxes[i].x = x
            boxes[i].y = MARGIN + level * (BOX_HEIGHT + LAYER_GAP)
            x += boxes[i].w + BOX_GAP
    height = 2 * MARGIN + len(rows) * BOX_HEIGHT + max(0, len(rows) - 1) * LAYER_GAP
    right = [max(boxes[i].x + boxes[i].w for i in row) for row in rows]
    via: list[float | None] = []
    detours = 0
    for (s, t), fwd in zip(edges, forward):
        low, high = sorted((boxes[s].layer, boxes[t].layer))
        if fwd and high - low <= 1:
            via.append(None)
            continue
        via.append(max(right[low : high + 1]) + DETOUR_GAP * (1 + detours))
        detours += 1
    width = max([width, *(x + MARGIN for x in via if x is not None)])
    return forward, via, width, float(height)
