"""Per-run module times and their summary: the median run, with each module's spread.

Both sides of a profile (ONNX Runtime kernels, PyTorch forward hooks) measure, per run,
every module's *self* time: the time of its own work, not of its submodules. Figures
shown are those of the **median run** (by the run's summed self time; the lower middle
one for an even count): one real run, so the modules' self times add up exactly to the
run's time and every module's total is its self time plus its children's totals. Each
module's spread over all measured runs (minimum, median, maximum of its self time) is
kept beside it. Times are integer nanoseconds, so the sums are exact.
"""

from __future__ import annotations

import dataclasses
import statistics

from graphtag.tools.profile.tree import ModuleTree


@dataclasses.dataclass
class RunSeries:
    """One side's measurements: per measured run, module tag -> self ns and calls."""

    self_ns: list[dict[str, int]]
    calls: list[dict[str, int]]
    wall_ns: list[int]  # the run's wall time as the side measures it

    def __post_init__(self) -> None:
        if not self.self_ns or not (len(self.self_ns) == len(self.calls) == len(self.wall_ns)):
            raise ValueError("a run series needs one entry per run in every list")

    @property
    def runs(self) -> int:
        return len(self.self_ns)

    def tags(self) -> set[str]:
        return {tag for run in self.self_ns for tag in run}

    def busy_ns(self) -> list[int]:
        """Per run, the summed self time of all modules."""
        return [sum(run.values()) for run in self.self_ns]


@dataclasses.dataclass(frozen=True)
class ModuleTimes:
    """One module in the median run, with its self time's spread over all runs."""

    self_ns: int
    total_ns: int  # self plus all descendants
    calls: int
    self_min_ns: int
    self_median_ns: float
    self_max_ns: int


@dataclasses.dataclass
class Summary:
    run: int  # index of the median run among the measured runs
    wall_ns: list[int]
    busy_ns: list[int]
    modules: dict[str, ModuleTimes]  # every tag of the tree, pre-order

    @property
    def run_wall_ns(self) -> int:
        return self.wall_ns[self.run]

    @property
    def run_busy_ns(self) -> int:
        return self.busy_ns[self.run]


def median_run(values: list[int]) -> int:
    """Index of the median value (the lower middle one for an even count)."""
    order = sorted(range(len(values)), key=lambda i: (values[i], i))
    return order[(len(order) - 1) // 2]


def summarize(series: RunSeries, tree: ModuleTree) -> Summary:
    """The median run's figures for every module of ``tree`` (tags it lacks go to the root)."""
    runs = [_onto(run, tree) for run in series.self_ns]
    calls = [_onto(run, tree) for run in series.calls]
    busy = [sum(run.values()) for run in runs]
    chosen = median_run(busy)
    total = dict(runs[chosen])
    for tag in reversed(tree.order):  # children before parents
        if tag != tree.root:
            parent = tree.parent[tag]
            total[parent] = total.get(parent, 0) + total.get(tag, 0)
    modules = {}
    for tag in tree.order:
        values = [run.get(tag, 0) for run in runs]
        modules[tag] = ModuleTimes(
            self_ns=runs[chosen].get(tag, 0),
            total_ns=total.get(tag, 0),
            calls=calls[chosen].get(tag, 0),
            self_min_ns=min(values),
            self_median_ns=float(statistics.median(values)),
            self_max_ns=max(values),
        )
    return Summary(chosen, list(series.wall_ns), busy, modules)


def _onto(run: dict[str, int], tree: ModuleTree) -> dict[str, int]:
    if all(tag in tree for tag in run):
        return run
    placed: dict[str, int] = {}
    for tag, value in run.items():
        key = tag if tag in tree else tree.root
        placed[key] = placed.get(key, 0) + value
    return placed
