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

import contextlib
import dataclasses
import io
import itertools
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from graphtag.core.errors import GraphtagError

_log = logging.getLogger(__name__)

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
        names, node = _indexed([k.node for k in kernels])
        return cls(names, node, np.array([k.exclusive_us for k in kernels], dtype=np.int64))

    def __len__(self) -> int:
        return len(self.node)

    def __iter__(self) -> Iterator[Kernel]:
        names = self.names
        for node, us in zip(self.node.tolist(), self.exclusive_us.tolist()):
            yield Kernel(names[node], us)

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
    table, node = _indexed(names)
    return _build(windows, _ints(tid), _ints(ts), _ints(dur), node, table, len(events))


def _indexed(names: list[str]) -> tuple[list[str], np.ndarray]:
    """The distinct names in first-seen order, and each name's index among them."""
    table = list(dict.fromkeys(names))
    index = {name: i for i, name in enumerate(table)}
    return table, np.array([index[name] for name in names], dtype=np.intp)


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
    events = _events(data, data.count(b"\n") - 2)
    if events is None:
        return None
    columns = _Columns()
    columns.add(events)
    return columns.trace()


def _events(lines: bytes, count: int) -> list[tuple] | None:
    """The (cat, tid, dur, ts, name) of each event line; None unless ``count`` match."""
    for pattern in (_EXACT, _SPACED):
        events = pattern.findall(lines)  # in C; the lines' bulk (arguments) is skipped
        if len(events) == count:
            return events
    return None


class _Columns:
    """Events as numpy columns, added batch by batch (a whole file, or the lines of a
    trace being written); node names are classified once each."""

    def __init__(self) -> None:
        self.kinds: dict[bytes, int] = {}  # name -> its node's index, -1 other, -2 model_run
        self.table: list[str] = []  # node names
        self.windows: list[tuple[int, int]] = []
        self.parts: list[tuple[np.ndarray, ...]] = []  # (tid, ts, dur, node) per batch
        self.count = 0

    def add(self, events: list[tuple]) -> None:
        cats, tids, durs, tss, names = (list(map(itemgetter(i), events)) for i in range(5))
        kinds, table, cut = self.kinds, self.table, len(_SUFFIX)
        for name in dict.fromkeys(names):
            if name not in kinds:
                if name.endswith(_SUFFIX):
                    kinds[name] = len(table)
                    table.append(name[:-cut].decode("utf-8", "replace"))
                else:
                    kinds[name] = -2 if name == b"model_run" else -1
        count = len(events)
        kind = np.fromiter(map(kinds.__getitem__, names), dtype=np.intp, count=count)
        kernel = (kind >= 0) & np.fromiter(map(b"Node".__eq__, cats), bool, count)
        window = (kind == -2) & np.fromiter(map(b"Session".__eq__, cats), bool, count)
        ts, dur, tid = (
            np.fromiter(map(int, column), np.int64, count) for column in (tss, durs, tids)
        )
        self.windows += zip(ts[window].tolist(), dur[window].tolist())
        self.parts.append((tid[kernel], ts[kernel], dur[kernel], kind[kernel]))
        self.count += count

    def columns(self) -> tuple[np.ndarray, ...]:
        """(tid, ts, dur, node) of every kernel event so far."""
        if not self.parts:
            return (_ints([]),) * 4
        return tuple(np.concatenate(column) for column in zip(*self.parts))

    def trace(self) -> Trace:
        return _build(self.windows, *self.columns(), self.table, self.count)


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
    windows = sorted(windows)
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
    return [us if us > 0 else 0 for us in exclusive]


# -- reading the trace while ONNX Runtime writes it ------------------------------------

_CHUNK = 1 << 22
_POLL_S = 0.002


class TraceFollower:
    """Reads ONNX Runtime's trace in a helper process while ONNX Runtime writes it.

    ``end_profiling`` holds Python's lock while it writes the trace (about 0.5 s for 100
    runs of a 750-kernel model, one core), so no thread can read meanwhile; a process on
    another core can. Started before the session (its start-up overlaps the session's
    creation), the helper waits idle until :meth:`follow` names the file, then parses
    its lines as they are written. :meth:`result` returns the trace; whenever the helper
    could not give it (no helper, another layout, a failure) the file is read here.
    """

    def __init__(self) -> None:
        try:
            # -P: the script's folder (this package) must not shadow top-level modules.
            self._proc: subprocess.Popen | None = subprocess.Popen(
                [sys.executable, "-P", __file__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            _log.debug("no helper process to read the trace (%s): it is read after", exc)
            self._proc = None
        self._following = False

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """Block until the helper has started (so that its start-up does not overlap the
        measured runs); a helper not ready in time is stopped."""
        proc = self._proc
        if proc is None:
            return False
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()))
        reader.start()
        reader.join(timeout)
        if line != [b"ready\n"]:
            _log.debug("the trace reader's helper did not start in %s s", timeout)
            self.close()  # also ends a readline still waiting
            reader.join()
            return False
        return True

    def follow(self, path: Path | None) -> None:
        """Start reading ``path`` (the trace file ONNX Runtime opened), or nothing."""
        if self._proc is None or path is None:
            self.close()
            return
        try:
            self._proc.stdin.write(str(path).encode() + b"\n")
            self._proc.stdin.flush()
            self._following = True
        except OSError:
            self.close()

    def result(self, path: str | os.PathLike) -> Trace:
        """The trace at ``path``, which ONNX Runtime has finished writing."""
        path = Path(path)
        trace = self._collect(path) if self._following else None
        self.close()
        if trace is None:
            _log.debug("%s is read after it was written, not by the helper", path)
            return read_trace(path)
        return trace

    def _collect(self, path: Path) -> Trace | None:
        proc = self._proc
        try:
            size = path.stat().st_size
            out, _ = proc.communicate(b"done\n", timeout=30 + size / 20e6)
            header, _, rest = out.partition(b"\n")
            found = json.loads(header)
            if not found.get("ok"):
                return None
            stream = io.BytesIO(rest)
            tid, ts, dur, node = (np.load(stream, allow_pickle=False) for _ in range(4))
        except (OSError, ValueError, EOFError, KeyError, subprocess.SubprocessError):
            return None
        windows = [tuple(window) for window in found["windows"]]
        return _build(windows, tid, ts, dur, node, found["table"], found["count"])

    def close(self) -> None:
        """Stop the helper (if still running) and release its pipes."""
        proc, self._proc, self._following = self._proc, None, False
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):  # a broken pipe to a helper that is gone
                pipe.close()
        proc.wait()

    def __enter__(self) -> TraceFollower:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _follow(path: Path, done: threading.Event) -> _Columns | None:
    """Parse ``path`` line by line as it grows, until ``done`` is set and all is read;
    None unless it has ONNX Runtime's exact layout ("[", one event per line, "]")."""
    columns = _Columns()
    pending, started, ended = b"", False, False
    with path.open("rb") as file:
        while True:
            chunk = file.read(_CHUNK)
            if not chunk:
                if not done.is_set():
                    time.sleep(_POLL_S)
                    continue
                chunk = file.read()  # written before done was set
                if not chunk:
                    break
            pending += chunk
            cut = pending.rfind(b"\n") + 1
            if not cut:
                continue
            block, pending = pending[:cut], pending[cut:]
            count = block.count(b"\n")
            if not started:
                if not block.startswith(b"[\n"):
                    return None
                block, count, started = block[2:], count - 1, True
            if ended:
                return None  # lines after the closing "]"
            if block == b"]\n" or block.endswith(b"\n]\n"):
                block, count, ended = block[:-2], count - 1, True
            events = _events(block, count)
            if events is None:
                return None
            if events:
                columns.add(events)
    tail = pending.strip()
    if tail == b"]" and not ended:
        tail, ended = b"", True
    return columns if started and ended and not tail else None


def _follow_main() -> None:
    """The helper process: "ready" once started; then the path on the first line of
    stdin, "done" on the second."""
    sys.stdout.buffer.write(b"ready\n")
    sys.stdout.buffer.flush()
    path = sys.stdin.buffer.readline().decode().strip()
    if not path:
        return
    done = threading.Event()

    def wait() -> None:
        sys.stdin.buffer.readline()  # "done", or end of file if the parent is gone
        done.set()

    threading.Thread(target=wait, daemon=True).start()
    try:
        columns = _follow(Path(path), done)
    except OSError:
        columns = None
    out = sys.stdout.buffer
    if columns is None:
        out.write(b'{"ok": false}\n')
    else:
        header = {
            "ok": True,
            "table": columns.table,
            "windows": columns.windows,
            "count": columns.count,
        }
        out.write(json.dumps(header).encode() + b"\n")
        for column in columns.columns():
            np.save(out, column, allow_pickle=False)
    out.flush()


if __name__ == "__main__":
    _follow_main()
