"""Per-module differences between two profiles (before/after a pass, two providers, ...).

Works on any two ``graphtag.profile/1`` documents: modules are matched by tag, the tree
is their union. With a depth, a module at that depth stands for its whole subtree (its
self time becomes its total). A module only one profile has is shown with the other
side empty.
"""

from __future__ import annotations

import dataclasses

from graphtag.tools.profile.tree import ModuleTree
from graphtag.tools.report.profile import Profile


@dataclasses.dataclass
class DiffRow:
    tag: str
    label: str
    depth: int
    self_a: float | None  # milliseconds; None: the module is not in that profile
    self_b: float | None
    total_a: float | None
    total_b: float | None

    @property
    def self_delta(self) -> float | None:
        return _delta(self.self_a, self.self_b)

    @property
    def total_delta(self) -> float | None:
        return _delta(self.total_a, self.total_b)


@dataclasses.dataclass
class Comparison:
    total_a: float  # the profiles' total_ms (one inference)
    total_b: float
    rows: list[DiffRow]


def compare_profiles(a: Profile, b: Profile, *, depth: int | None = None) -> Comparison:
    tree = ModuleTree([*a.modules, *b.modules])
    shown = tree.folded_into(depth)
    visible = [tag for tag in tree.order if shown[tag] == tag]
    rows = []
    for tag in visible:
        leaf = depth is not None and tree.depth[tag] == depth
        self_a, total_a = _figures(a, tag, leaf)
        self_b, total_b = _figures(b, tag, leaf)
        rows.append(
            DiffRow(tag, tree.label(tag), tree.depth[tag], self_a, self_b, total_a, total_b)
        )
    return Comparison(a.total_ms, b.total_ms, rows)


def _figures(profile: Profile, tag: str, leaf: bool) -> tuple[float | None, float | None]:
    entry = profile.modules.get(tag)
    if entry is None:
        return None, None
    return (entry.total_ms if leaf else entry.self_ms), entry.total_ms


def _delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a
