"""The module tree a profile is shown on, built from tags alone (they are paths).

One root: the single top-level tag, or, when there are several top-level tags or no
tags at all, the synthetic root ``""`` shown as ``(model)`` (the report uses the same
key, so a profile of an untagged model lines up with its report). Ancestors missing
from the given tags are added. Children are ordered as in the stored hierarchy when
there is one (the model's own module order), else by first appearance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from graphtag.core.hierarchy import tag_parent

SYNTHETIC_ROOT = ""


class ModuleTree:
    """Tags in pre-order with parent, children and depth (root depth 0)."""

    def __init__(self, tags: Iterable[str], order_hint: Sequence[str] = ()) -> None:
        rank = {tag: i for i, tag in enumerate(order_hint)}
        seen = list(dict.fromkeys(t for t in tags if t != SYNTHETIC_ROOT))
        tops = {"/" + t[1:].split("/", 1)[0] for t in seen}
        self.root = next(iter(tops)) if len(tops) == 1 else SYNTHETIC_ROOT
        self.parent: dict[str, str] = {}
        self.children: dict[str, list[str]] = {self.root: []}
        for tag in seen:
            self._attach(tag)
        first = {tag: i for i, tag in enumerate(self.parent)}
        order_key = lambda t: (rank.get(t, len(rank)), first[t])  # noqa: E731
        for kids in self.children.values():
            kids.sort(key=order_key)
        self.order: list[str] = []
        self.depth: dict[str, int] = {self.root: 0}
        stack = [self.root]
        while stack:  # pre-order
            tag = stack.pop()
            self.order.append(tag)
            for child in self.children.get(tag, ()):
                self.depth[child] = self.depth[tag] + 1
            stack.extend(reversed(self.children.get(tag, ())))

    def _attach(self, tag: str) -> None:
        chain = []
        current: str | None = tag
        while current is not None and current != self.root and current not in self.parent:
            chain.append(current)
            current = tag_parent(current)
        above = self.root if current is None else current
        for child in reversed(chain):
            self.parent[child] = above
            self.children.setdefault(above, []).append(child)
            self.children.setdefault(child, [])
            above = child

    def __contains__(self, tag: object) -> bool:
        return tag in self.depth

    def __len__(self) -> int:
        return len(self.order)

    def label(self, tag: str) -> str:
        return "(model)" if tag == SYNTHETIC_ROOT else tag.rsplit("/", 1)[-1]

    def folded_into(self, depth: int | None) -> dict[str, str]:
        """Each tag -> the tag shown for it when modules deeper than ``depth`` fold."""
        if depth is None:
            return {tag: tag for tag in self.order}
        shown: dict[str, str] = {}
        for tag in self.order:  # parents come first
            if self.depth[tag] <= depth:
                shown[tag] = tag
            else:
                shown[tag] = shown[self.parent[tag]]
        return shown
