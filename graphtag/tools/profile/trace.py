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
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from bisect import bisect_right
from pathlib import Path
from typing import NamedTuple

from graphtag.core.errors import GraphtagError

KERNEL_SUFFIX = "_kernel_time"
# ONNX Runtime stops recording after this many events per session (profiler.cc,
# global_max_num_events_); a trace that reaches it lost the events after.
MAX_EVENTS = 1_000_000


class Kernel(NamedTuple):
    """One kernel execution: the node it ran and its exclusive time in µs."""

    node: str
    exclusive_us: int


@dataclasses.dataclass
class Trace:
    """The kernels of every inference (``runs[i]``, in time order) and their wall times."""

    runs: list[list[Kernel]]
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
        return _build(*scanned)
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
    kernels: list[tuple] = []
    for e in events:
        if not isinstance(e, dict):
            continue
        cat, name = e.get("cat"), e.get("name", "")
        if cat == "Session" and name == "model_run":
            windows.append((e["ts"], e["dur"]))
        elif cat == "Node" and name.endswith(KERNEL_SUFFIX):
            kernels.append((e.get("tid", 0), e["ts"], -e["dur"], name[: -len(KERNEL_SUFFIX)]))
    return _build(windows, kernels, len(events))


# ONNX Runtime writes one event per line: '{"cat" : "Node","pid" :1,"tid" :1,"dur" :50,
# "ts" :7,"ph" : "X","name" :"n_kernel_time","args" : {...}}' (profiler.cc). Matching the
# head of each line is several times faster than decoding the document, whose bulk is
# arguments (shapes, memory, thread statistics) the profile does not need. The name is
# written as is, not JSON-escaped (a node name with a quote or backslash makes the file
# invalid JSON), so it is read up to the '","args"' that follows it.
_EVENT = re.compile(
    rb'\{"cat" ?: ?"(\w+)", ?"pid" ?: ?-?\d+, ?"tid" ?: ?(-?\d+), ?"dur" ?: ?(\d+), ?'
    rb'"ts" ?: ?(\d+), ?"ph" ?: ?"X", ?"name" ?: ?"(.*?)", ?"args" ?: ?\{'
)
_SUFFIX = KERNEL_SUFFIX.encode()


def _scan(data: bytes) -> tuple[list, list, int] | None:
    """(windows, kernels, event count) from ONNX Runtime's layout; None for any other.

    Every event line must match (one match per line that opens an event), else the
    layout is not the expected one and nothing is guessed.
    """
    head = data[:64].lstrip()
    # Only the tail is stripped: rstrip() on the whole file would copy it (tens of MB).
    if not head.startswith(b"[") or not data[-64:].rstrip().endswith(b"]"):
        return None
    events = _EVENT.findall(data)  # in C; the lines' bulk (arguments) is skipped
    # One event per line between the "[" and "]" lines (a name with a line break, or
    # another writer's layout, fails this and goes to the full decoder).
    if len(events) != data.count(b"\n") - 2:
        return None
    windows: list[tuple[int, int]] = []
    kernels: list[tuple] = []
    cut = len(_SUFFIX)
    decoded: dict[bytes, str] = {}  # each node runs once per inference: decode it once
    for cat, tid, dur, ts, name in events:
        if cat == b"Node":
            if name.endswith(_SUFFIX):
                node = decoded.get(name)
                if node is None:
                    node = decoded[name] = name[:-cut].decode("utf-8", "replace")
                kernels.append((int(tid), int(ts), -int(dur), node))
        elif cat == b"Session" and name == b"model_run":
            windows.append((int(ts), int(dur)))
    return windows, kernels, len(events)


def _build(windows: list[tuple[int, int]], kernels: list[tuple], count: int) -> Trace:
    """Kernel events ``(tid, ts, -dur, node)`` grouped by the ``model_run`` they fall in,
    with exclusive times."""
    windows.sort()
    starts = [ts for ts, _ in windows]
    ends = [ts + dur for ts, dur in windows]
    raw: list[list[tuple]] = [[] for _ in windows]
    outside = 0
    for kernel in kernels:
        ts = kernel[1]
        index = bisect_right(starts, ts) - 1
        if index < 0 or ts > ends[index]:
            outside += 1
        else:
            raw[index].append(kernel)
    runs = [_exclusive(items) for items in raw]
    return Trace(runs, [dur for _, dur in windows], outside, count)


def _exclusive(items: list[tuple]) -> list[Kernel]:
    """Kernels of one run in time order, nested kernels' time taken off their parent.

    Sorting by (thread, start, -duration) puts an enclosing kernel before the kernels
    it contains; a stack of open kernels finds each one's direct parent.
    """
    items.sort()
    exclusive = [-item[2] for item in items]
    stack: list[int] = []  # open kernels on the current thread
    thread = None
    for i, (tid, ts, neg, _node) in enumerate(items):
        if tid != thread:
            stack.clear()
            thread = tid
        while stack and ts >= items[stack[-1]][1] - items[stack[-1]][2]:
            stack.pop()
        if stack:
            exclusive[stack[-1]] += neg  # the parent loses this kernel's duration
        stack.append(i)
    return [Kernel(item[3], time if time > 0 else 0) for item, time in zip(items, exclusive)]
