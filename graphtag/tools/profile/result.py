"""A module-level profile: the tree, ONNX Runtime's figures and optionally PyTorch's.

:class:`ModuleProfile` holds the raw per-run measurements; :meth:`ModuleProfile.view`
summarizes them for a tree folded at some depth (a folded module's self time is its
whole subtree's), and :meth:`ModuleProfile.to_json` writes the ``graphtag.profile/1``
document that ``graphtag report --profile`` reads.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from graphtag.tools.profile.collect import OrtMeasurement
from graphtag.tools.profile.series import ModuleTimes, RunSeries, Summary, summarize
from graphtag.tools.profile.tree import ModuleTree
from graphtag.tools.report.profile import SCHEMA

TOOL = "graphtag profile"
_TOP_OPS = 3


@dataclasses.dataclass
class Row:
    """One module of a view, in pre-order."""

    tag: str
    label: str
    depth: int
    ort: ModuleTimes
    nodes: int
    ops: list[tuple[str, int]]  # op type -> ns in the median run, largest first
    torch: ModuleTimes | None  # when PyTorch was timed
    empty: bool = False  # no node in its whole subtree in the graph ONNX Runtime ran
    fused_into: str | None = None  # empty: the module of a node it was fused into


@dataclasses.dataclass
class View:
    """A profile summarized on a (possibly folded) tree: one row per shown module."""

    tree: ModuleTree
    ort: Summary
    torch: Summary | None
    rows: list[Row]


@dataclasses.dataclass
class ModuleProfile:
    """ONNX Runtime's kernels per module, with PyTorch's eager times when measured."""

    ort: OrtMeasurement
    torch: RunSeries | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        # The profiled model's tags in graph order, then what only the runs know.
        tags = list(self.ort.reference_tags)
        extra = self.ort.series.tags() | {t for t, n in self.ort.nodes.items() if n}
        if self.torch is not None:
            extra |= {t for run in self.torch.calls for t, n in run.items() if n}
        self.tree = ModuleTree([*tags, *sorted(extra)], self.ort.order_hint)
        self._views: dict[int | None, View] = {}  # the table and the JSON share one

    @property
    def all_notes(self) -> list[str]:
        return [*self.ort.notes, *self.notes]

    def view(self, depth: int | None = None) -> View:
        """Figures per module, modules deeper than ``depth`` folded into their ancestor.

        Computed once per depth: the view returned is shared, read it only."""
        if depth not in self._views:
            self._views[depth] = self._view(depth)
        return self._views[depth]

    def _view(self, depth: int | None) -> View:
        shown = self.tree.folded_into(depth)
        tree = self.tree if depth is None else ModuleTree(set(shown.values()), self.tree.order)
        ort = summarize(_fold(self.ort.series, shown, tree.root), tree)
        torch = (
            summarize(_fold(self.torch, shown, tree.root), tree) if self.torch is not None else None
        )
        nodes: Counter[str] = Counter()
        for tag, count in self.ort.nodes.items():
            nodes[shown.get(tag, tree.root)] += count
        ops: dict[str, Counter[str]] = {}
        for tag, per_op in self.ort.ops.items():
            ops.setdefault(shown.get(tag, tree.root), Counter()).update(per_op)
        below = dict(nodes)  # nodes of each shown module's whole subtree
        for tag in reversed(tree.order):
            if tag != tree.root:
                below[tree.parent[tag]] = below.get(tree.parent[tag], 0) + below.get(tag, 0)
        rows = [
            Row(
                tag=tag,
                label=tree.label(tag),
                depth=tree.depth[tag],
                ort=ort.modules[tag],
                nodes=nodes.get(tag, 0),
                ops=ops.get(tag, Counter()).most_common(),
                torch=torch.modules[tag] if torch is not None else None,
                empty=not below.get(tag, 0),
                fused_into=self.ort.fused_into.get(tag) if not below.get(tag, 0) else None,
            )
            for tag in tree.order
        ]
        return View(tree, ort, torch, rows)

    def to_json(self, depth: int | None = None) -> dict:
        """The ``graphtag.profile/1`` document (milliseconds; figures of the median run)."""
        view = self.view(depth)
        ort, m = view.ort, self.ort
        busy = ort.run_busy_ns
        data: dict = {
            "schema": SCHEMA,
            "tool": TOOL,
            "model": m.model,
            "total_ms": _ms(ort.run_wall_ns),
            "runs": len(ort.wall_ns),
            "warmup": m.settings.warmup,
            "kernel_ms": _ms(busy),
            "median_run": ort.run,
            "wall_ms": _spread(ort.wall_ns),
            "kernel_ms_spread": _spread(ort.busy_ns),
            "depth": depth,
            "onnxruntime": {
                "version": m.ort_version,
                "providers": m.providers,
                "threads": m.settings.threads,
                "optimization": m.settings.optimization,
            },
            "coverage": {
                "kernel_events": m.kernel_events,
                "mapped_events": m.mapped_events,
                "time_by_match_ms": {k: _ms(v) for k, v in sorted(m.match_ns.items())},
            },
            "tagged": m.tagged,
            "notes": self.all_notes,
            "modules": {row.tag: _module_json(row, busy) for row in view.rows},
        }
        if view.torch is not None:
            data["torch"] = {
                "total_ms": _ms(view.torch.run_wall_ns),
                "module_ms": _ms(view.torch.run_busy_ns),
                "runs": len(view.torch.wall_ns),
                "median_run": view.torch.run,
                "wall_ms": _spread(view.torch.wall_ns),
            }
        return data


def _fold(series: RunSeries, shown: dict[str, str], root: str) -> RunSeries:
    def fold(run: dict[str, int]) -> dict[str, int]:
        out: dict[str, int] = {}
        for tag, value in run.items():
            key = shown.get(tag, root)
            out[key] = out.get(key, 0) + value
        return out

    return RunSeries(
        [fold(r) for r in series.self_ns], [fold(r) for r in series.calls], series.wall_ns
    )


def _module_json(row: Row, busy_ns: int) -> dict:
    t = row.ort
    entry = {
        "self_ms": _ms(t.self_ns),
        "total_ms": _ms(t.total_ns),
        "calls": t.calls,
        "nodes": row.nodes,
        "percent": round(100 * t.total_ns / busy_ns, 2) if busy_ns else 0.0,
        "self_ms_min": _ms(t.self_min_ns),
        "self_ms_median": _ms(t.self_median_ns),
        "self_ms_max": _ms(t.self_max_ns),
        "ops_ms": {op: _ms(ns) for op, ns in row.ops},
    }
    if row.fused_into is not None:
        entry["fused_into"] = row.fused_into
    if row.torch is not None:
        p = row.torch
        entry["torch"] = {
            "self_ms": _ms(p.self_ns),
            "total_ms": _ms(p.total_ns),
            "calls": p.calls,
            "self_ms_min": _ms(p.self_min_ns),
            "self_ms_median": _ms(p.self_median_ns),
            "self_ms_max": _ms(p.self_max_ns),
        }
    return entry


def _ms(ns: float) -> float:
    """Nanoseconds -> milliseconds, kept to the nanosecond."""
    return round(ns / 1e6, 6)


def _spread(values: list[int]) -> dict[str, float]:
    ordered = sorted(values)
    middle = ordered[(len(ordered) - 1) // 2]
    return {"min": _ms(ordered[0]), "median": _ms(middle), "max": _ms(ordered[-1])}


def top_ops(row: Row, count: int = _TOP_OPS) -> str:
    """``Gemm 62% · Softmax 20%`` for the row's own kernels."""
    total = sum(ns for _, ns in row.ops)
    if not total:
        if row.fused_into is not None:
            into = row.fused_into
            if into and row.tag.startswith(into + "/"):
                into = into.rsplit("/", 1)[-1]  # an ancestor: its name is enough
            return f"(fused into {into or '(model)'})"
        return "(no node left)" if row.empty else ""
    return " · ".join(f"{op} {100 * ns / total:.0f}%" for op, ns in row.ops[:count])
