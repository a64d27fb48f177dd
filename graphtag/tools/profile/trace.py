"""Read ONNX Runtime's profiler output (a Chrome trace JSON file) into kernel times per run.

ONNX Runtime writes, per inference, one ``Session`` event ``model_run`` and one ``Node``
event ``<node name>_kernel_time`` per kernel it executed (``ts``/``dur`` in integer
microseconds; the operator is read from the saved graph, not from the event). Older
versions add ``_fence_before``/``_fence_after`` events, which are not kernel time and
are skipped.

A control-flow kernel (Loop, If, Scan) runs its body's kernels inside its own interval,
and ONNX Runtime records those too: counting every event would count the body twice.
Each kernel's *exclusive* time is therefore its duration minus that of the kernels
nested in it (same thread, started inside its interval); a run's kernel time is the sum
of exclusive times, each microsecond counted once.

A trace holds tens of thousands of kernel events per second of runs, so events are kept
as columns (numpy arrays, node names by index) and only nested kernels, which only
control flow produces, are walked one by one.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from graphtag.core.errors import GraphtagError

KERNEL_SUFFIX = "_kernel_time"
# ONNX Runtime stops recording after this many events per session (profiler.cc,
# global_max_num_events_); a trace that reaches it lost the events after.
MAX_EVENTS = 1_000_000


class Kernel(NamedTuple):
    """One kernel execution: the node it ran and its exclusive time in µs."""

    node: str
    exclusive_us: int


class Run:
    """The kernels of one inference, in (thread, start) order: ``node[i]`` indexes
    ``names``, ``exclusive_us[i]`` is that kernel's exclusive time. Iterating gives
    :class:`Kernel` tuples."""

    __slots__ = ("exclusive_us", "names", "node")

    def __init__(self, names: list[str], node: np.ndarray, exclusive_us: np.ndarray) -> None:
        self.names = names
        self.node = node
        self.exclusive_us = exclusive_us

    @classmethod
    def of(cls, kernels: list[Kernel]) -> Run:
        """A run from kernel tuples (tests, hand-made traces)."""
        names = list(dict.fromkeys(k.node for k in kernels))
        index = {name: i for i, name in enumerate(names)}
        return cls(
            names,
            np.array([index[k.node] for k in kernels], dtype=np.intp),
            np.array([k.exclusive_us for k in kernels], dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.node)

    def __iter__(self) -> Iterator[Kernel]:
        names = self.names
        for node, time in zip(self.node.tolist(), self.exclusive_us.tolist()):
            yield Kernel(names[node], time)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Run) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"Run({list(self)!r})"


@dataclasses.dataclass
class Trace:
    """The kernels of every inference (``runs[i]``, in time order) and their wall times."""

    runs: list[Run]
    wall_us: list[int]  # model_run duration of each run
    outside: int  # kernel events outside every model_run (none in a well-formed trace)
    events: int  # events in the file


def read_trace(path: str | os.PathLike) -> Trace:
    """Parse ONNX Runtime's profile file; a file that is not one is a GraphtagError."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GraphtagError(f"{path}: not a readable ONNX Runtime profile ({exc})") from None
    scanned = _scan(data)
    if scanned is not None:
        return scanned
    # Not ONNX Runtime's one-event-per-line layout: decode the whole document.
    try:
        events = json.loads(data)
    except ValueError as exc:
        raise GraphtagError(f"{path}: not an ONNX Runtime profile ({exc})") from None
    if not isinstance(events, list):
        raise GraphtagError(f"{path}: not an ONNX Runtime profile (expected a JSON list)")
    return parse_events(events)


def parse_events(events: list) -> Trace:
    """A trace from decoded events (dicts in Chrome trace form)."""
    windows: list[tuple[int, int]] = []
    tid, ts, dur, names = [], [], [], []
    for e in events:
        if not isinstance(e, dict):
            continue
        cat, name = e.get("cat"), e.get("name", "")
        if cat == "Session" and name == "model_run":
            windows.append((e["ts"], e["dur"]))
        elif cat == "Node" and name.endswith(KERNEL_SUFFIX):
            tid.append(e.get("tid", 0))
            ts.append(e["ts"])
            dur.append(e["dur"])
            names.append(name[: -len(KERNEL_SUFFIX)])
    table = list(dict.fromkeys(names))
    index = {name: i for i, name in enumerate(table)}
    node = np.array([index[name] for name in names], dtype=np.intp)
    return _build(windows, _ints(tid), _ints(ts), _ints(dur), node, table, len(events))


# ONNX Runtime writes one event per line: '{"cat" : "Node","pid" :1,"tid" :1,"dur" :50,
# "ts" :7,"ph" : "X","name" :"n_kernel_time","args" : {...}}' (profiler.cc). Matching the
# head of each line is several times faster than decoding the document, whose bulk is
# arguments (shapes, memory, thread statistics) the profile does not need. The name is
# written as is, not JSON-escaped (a node name with a quote or backslash makes the file
# invalid JSON), so it is read up to the '","args"' that follows it. The exact spacing
# ONNX Runtime writes is tried first (twice as fast); other spacing, then the decoder.
_NAME = rb'"([^"]*(?:"(?!, ?"args")[^"]*)*)", ?"args" ?: ?\{'
_EXACT = re.compile(
    rb'\{"cat" : "(\w+)","pid" :-?\d+,"tid" :(-?\d+),"dur" :(\d+),"ts" :(\d+),"ph" : "X",'
    rb'"name" :' + _NAME
)
_SPACED = re.compile(
    rb'\{"cat" ?: ?"(\w+)", ?"pid" ?: ?-?\d+, ?"tid" ?: ?(-?\d+), ?"dur" ?: ?(\d+), ?'
    rb'"ts" ?: ?(\d+), ?"ph" ?: ?"X", ?"name" ?: ?' + _NAME
)
_SUFFIX = KERNEL_SUFFIX.encode()


def _scan(data: bytes) -> Trace | None:
    """The trace from ONNX Runtime's layout; None for any other.

    Every event line must match (one match per line that opens an event), else the
    layout is not the expected one and nothing is guessed.
    """
    head = data[:64].lstrip()
    # Only the tail is stripped: rstrip() on the whole file would copy it (tens of MB).
    if not head.startswith(b"[") or not data[-64:].rstrip().endswith(b"]"):
        return None
    # One event per line between the "[" and "]" lines (a name with a line break, or
    # another writer's layout, fails this and goes to the full decoder).
    lines = data.count(b"\n") - 2
    for pattern in (_EXACT, _SPACED):
        events = pattern.findall(data)  # in C; the lines' bulk (arguments) is skipped
        if len(events) == lines:
            break
    else:
        return None
    cats, tids, durs, tss, names = (list(map(itemgetter(i), events)) for i in range(5))
    # Few distinct names (each node runs once per inference): classify each name once.
    kinds: dict[bytes, int] = {}  # name -> index of its node, -1 not a kernel, -2 model_run
    table: list[str] = []
    cut = len(_SUFFIX)
    for name in dict.fromkeys(names):
        if name.endswith(_SUFFIX):
            kinds[name] = len(table)
            table.append(name[:-cut].decode("utf-8", "replace"))
        else:
            kinds[name] = -2 if name == b"model_run" else -1
    count = len(events)
    kind = np.fromiter(map(kinds.__getitem__, names), dtype=np.intp, count=count)
    kernel = (kind >= 0) & np.fromiter(map(b"Node".__eq__, cats), bool, count)
    window = (kind == -2) & np.fromiter(map(b"Session".__eq__, cats), bool, count)
    ts, dur, tid = (np.fromiter(map(int, column), np.int64, count) for column in (tss, durs, tids))
    windows = list(zip(ts[window].tolist(), dur[window].tolist()))
    return _build(windows, tid[kernel], ts[kernel], dur[kernel], kind[kernel], table, count)


def _ints(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _build(
    windows: list[tuple[int, int]],
    tid: np.ndarray,
    ts: np.ndarray,
    dur: np.ndarray,
    node: np.ndarray,
    names: list[str],
    count: int,
) -> Trace:
    """Kernel events (columns; ``node`` indexes ``names``) grouped by the ``model_run``
    they fall in, with exclusive times."""
    windows.sort()
    starts = _ints([start for start, _ in windows])
    ends = starts + _ints([length for _, length in windows])
    run = np.searchsorted(starts, ts, side="right") - 1
    inside = run >= 0
    inside[inside] = ts[inside] <= ends[run[inside]]
    outside = int(len(ts) - np.count_nonzero(inside))
    # Per run, by (thread, start, longest first): an enclosing kernel comes before the
    # kernels it contains.
    run, tid, ts, dur, node = (column[inside] for column in (run, tid, ts, dur, node))
    order = np.lexsort((-dur, ts, tid, run))
    run, tid, ts, dur, node = (column[order] for column in (run, tid, ts, dur, node))
    exclusive = dur.copy()
    # A kernel that starts before its predecessor on the thread ends is nested; without
    # any, every kernel's exclusive time is its duration.
    same = (run[1:] == run[:-1]) & (tid[1:] == tid[:-1])
    nested = np.flatnonzero(same & (ts[1:] < ts[:-1] + dur[:-1]))
    bounds = np.searchsorted(run, np.arange(len(windows) + 1))
    for index in np.unique(run[nested]).tolist():
        a, b = int(bounds[index]), int(bounds[index + 1])
        exclusive[a:b] = _exclusive(tid[a:b].tolist(), ts[a:b].tolist(), dur[a:b].tolist())
    edges = bounds.tolist()
    runs = [Run(names, node[a:b], exclusive[a:b]) for a, b in itertools.pairwise(edges)]
    return Trace(runs, [length for _, length in windows], outside, count)


def _exclusive(tid: list[int], ts: list[int], dur: list[int]) -> list[int]:
    """Exclusive times of one run's kernels, sorted by (thread, start, -duration): a
    stack of open kernels finds each one's direct parent, which loses its duration."""
    exclusive = list(dur)
    stack: list[int] = []  # open kernels on the current thread
    thread = None
    for i in range(len(ts)):
        if tid[i] != thread:
            stack.clear()
            thread = tid[i]
        while stack and ts[i] >= ts[stack[-1]] + dur[stack[-1]]:
            stack.pop()
        if stack:
            exclusive[stack[-1]] -= dur[i]
        stack.append(i)
    return [time if time > 0 else 0 for time in exclusive]
