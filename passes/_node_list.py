"""Read a graph's node list and reorder it, each in one walk (used by toposort).

onnx_ir keeps the nodes of a graph in a private doubly linked list of boxes
(``onnx_ir._linked_list``). Reordering through the public API (``Graph.extend``,
``insert_after``) unlinks, reallocates and re-registers one box per moved node, with
random memory accesses to the old neighbours of each; on a 300k-node graph that cost
more than the sort itself. When the private layout is the one this module knows,
:meth:`NodeList.reorder` rewires the existing boxes' ``prev``/``next`` links in the new
order instead: membership, boxes and the id-to-box index stay as they are, so the
list is exactly what the public API would have produced. Any other layout falls back
to the public API (tests run both paths).
"""

from __future__ import annotations

__all__ = ["NodeList"]

import onnx_ir as ir

try:  # private onnx_ir classes; only their attribute layout is relied on
    from onnx_ir._linked_list import DoublyLinkedSet, _LinkBox

    _LAYOUT_KNOWN = {"next", "prev", "value"} <= set(
        getattr(_LinkBox, "__slots__", ())
    ) and "_root" in getattr(DoublyLinkedSet, "__slots__", ())
except ImportError:  # pragma: no cover - onnx_ir moved its list: use the public API
    DoublyLinkedSet = None  # type: ignore[assignment,misc]
    _LAYOUT_KNOWN = False

# Switched off by tests to exercise the public-API path on the same inputs.
use_private_layout = True


class NodeList:
    """The nodes of a graph or function, in order, and a way to reorder them."""

    __slots__ = ("_boxes", "_container", "_root", "nodes")

    def __init__(self, container: ir.Graph | ir.Function) -> None:
        self._container = container
        self._root = None
        self._boxes: list | None = None
        graph = container.graph if isinstance(container, ir.Function) else container
        linked = getattr(graph, "_nodes", None)
        if use_private_layout and _LAYOUT_KNOWN and type(linked) is DoublyLinkedSet:
            root = linked._root
            boxes = []
            append = boxes.append
            box = root.next
            while box is not root:  # removed boxes are unlinked, so never met here
                append(box)
                box = box.next
            self._root = root
            self._boxes = boxes
            self.nodes: list[ir.Node] = [box.value for box in boxes]
        else:
            self.nodes = list(container)

    def reorder(self, order: list[int]) -> None:
        """Put the nodes in ``order`` (a permutation of their indices); O(nodes moved)."""
        n = len(order)
        lo = 0
        while lo < n and order[lo] == lo:
            lo += 1
        hi = n - 1
        while hi > lo and order[hi] == hi:
            hi -= 1
        if lo >= hi:
            return
        boxes = self._boxes
        if boxes is not None:
            # Rewire the changed span between its unmoved neighbours (or the root).
            previous = boxes[lo - 1] if lo else self._root
            for k in order[lo : hi + 1]:
                box = boxes[k]
                previous.next = box
                box.prev = previous
                previous = box
            box = boxes[hi + 1] if hi + 1 < n else self._root
            previous.next = box
            box.prev = previous
            return
        nodes = self.nodes
        container = self._container
        moved = [nodes[k] for k in order[lo : hi + 1]]
        # Each branch is O(len(moved)) on onnx_ir's linked list. Inserting after an
        # unmoved anchor needs no removal: re-inserting a node unlinks it first.
        # Inserting before the unmoved suffix does (its insertion point may be a moved
        # node's box).
        if lo > 0:
            container.insert_after(nodes[lo - 1], moved)
        elif hi + 1 == n:
            container.extend(moved)
        else:
            container.remove(moved)
            container.insert_before(nodes[hi + 1], moved)
