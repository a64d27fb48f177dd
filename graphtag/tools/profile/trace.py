"""Read ONNX Runtime's profiler output (a Chrome trace JSON file) into kernel times per run.

ONNX Runtime writes, per inference, one ``Session`` event ``model_run`` and one ``Node``
event ``<node name>_kernel_time`` per kernel it executed (``args.op_name`` is the
operator, ``args.provider`` the execution provider; ``ts``/``dur`` in integer
microseconds). Older versions add ``_fence_before``/``_fence_after`` events, which are
not kernel time and are skipped.

A control-flow kernel (Loop, If, Scan) runs its body's kernels inside its own interval,
and ONNX Runtime records those too: counting every event would count the body twice.
Each kernel's *exclusive* time is therefore its duration minus that of the kernels
nested in it (same thread, started inside its interval); a run's kernel time is the sum
of exclusive times, each microsecond counted once.
"""

from __future__ import annotations

import dataclasses
import json
import os
from bisect import bisect_right
from pathlib import Path

from graphtag.core.errors import GraphtagError

KERNEL_SUFFIX = "_kernel_time"
# ONNX Runtime stops recording after this many events per session (profiler.cc,
# global_max_num_events_); a trace that reaches it lost the events after.
MAX_EVENTS = 1_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class Kernel:
    """One kernel execution: the node it ran, its operator, exclusive time in µs."""

    node: str
    op: str
    provider: str
    exclusive_us: int
    duration_us: int


@dataclasses.dataclass
class Trace:
    """The kernels of every inference (``runs[i]``, in time order) and their wall times."""

    runs: list[list[Kernel]]
    wall_us: list[int]  # model_run duration of each run
    outside: int  # kernel events outside every model_run (none in a well-formed trace)
    events: int  # events in the file

    @property
    def truncated(self) -> bool:
        return self.events >= MAX_EVENTS


def read_trace(path: str | os.PathLike) -> Trace:
    """Parse ONNX Runtime's profile file; a file that is not one is a GraphtagError."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            events = json.load(f)
    except (OSError, ValueError) as exc:
        raise GraphtagError(f"{path}: not a readable ONNX Runtime profile ({exc})") from None
    if not isinstance(events, list):
        raise GraphtagError(f"{path}: not an ONNX Runtime profile (expected a JSON list)")
    return parse_events(events)


def parse_events(events: list) -> Trace:
    """Kernel events grouped by the ``model_run`` they fall in, with exclusive times."""
    windows = sorted(
        (e["ts"], e["dur"])
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    starts = [ts for ts, _ in windows]
    # Per run: (tid, ts, -dur, name, op, provider, dur); the order makes an enclosing
    # kernel come before the kernels it contains.
    raw: list[list[tuple]] = [[] for _ in windows]
    outside = 0
    for e in events:
        if e.get("cat") != "Node":
            continue
        name = e.get("name", "")
        if not name.endswith(KERNEL_SUFFIX):
            continue
        ts, dur = e["ts"], e["dur"]
        index = bisect_right(starts, ts) - 1
        if index < 0 or ts > windows[index][0] + windows[index][1]:
            outside += 1
            continue
        args = e.get("args") or {}
        raw[index].append(
            (
                e.get("tid", 0),
                ts,
                -dur,
                name[: -len(KERNEL_SUFFIX)],
                args.get("op_name", ""),
                args.get("provider", ""),
            )
        )
    runs = [_exclusive(items) for items in raw]
    return Trace(runs, [dur for _, dur in windows], outside, len(events))


def _exclusive(items: list[tuple]) -> list[Kernel]:
    """Kernels of one run in time order, nested kernels' time taken off their parent."""
    items.sort()
    durations = [-item[2] for item in items]
    nested = [0] * len(items)
    stack: list[int] = []  # indices of open kernels on the current thread
    thread = None
    for i, (tid, ts, _neg, *_rest) in enumerate(items):
        if tid != thread:
            stack.clear()
            thread = tid
        while stack and ts >= items[stack[-1]][1] + durations[stack[-1]]:
            stack.pop()
        if stack:
            nested[stack[-1]] += durations[i]
        stack.append(i)
    return [
        Kernel(name, op, provider, max(durations[i] - nested[i], 0), durations[i])
        for i, (_tid, _ts, _neg, name, op, provider) in enumerate(items)
    ]
