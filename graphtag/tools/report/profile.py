"""The profile a report can show: per-module times, schema ``graphtag.profile/1``.

A profile is a JSON object::

    {
      "schema": "graphtag.profile/1",
      "total_ms": 12.5,                 # wall time of one inference, milliseconds
      "runs": 20,                       # optional: how many runs the figures average
      "modules": {
        "/Model/Layer.0": {
          "self_ms": 0.4,               # time of the nodes tagged exactly with this tag
          "total_ms": 3.1,              # time of the module and all its descendants
          "calls": 1,                   # optional, int: times its work ran per inference
          "nodes": 12                   # optional, int: nodes that were timed
        }
      }
    }

Times are non-negative numbers. Unknown keys are ignored (so later versions of the
same schema can add fields); a different ``schema`` value is refused.

``graphtag profile`` (graphtag.tools.profile) writes this schema from ONNX Runtime's
profiler: ``total_ms`` is one inference's wall time, a module's ``calls`` the kernel
executions of its own nodes and ``nodes`` its own nodes in the graph ONNX Runtime ran;
it adds fields the report does not read (``kernel_ms``, per-module spreads, op types
and, with ``--torch``, PyTorch's figures under ``"torch"``; see the README).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

from graphtag.core.errors import GraphtagError

SCHEMA = "graphtag.profile/1"


@dataclasses.dataclass(frozen=True)
class ModuleTime:
    self_ms: float
    total_ms: float
    calls: int = 1
    nodes: int | None = None


@dataclasses.dataclass(frozen=True)
class Profile:
    total_ms: float
    modules: dict[str, ModuleTime]
    runs: int | None = None


def load_profile(path: str | os.PathLike) -> Profile:
    """Read and validate a profile file; any problem is one :class:`GraphtagError` line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GraphtagError(f"{path}: no such profile file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphtagError(f"{path}: cannot read the profile ({exc})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise GraphtagError(f"{path}: the profile is not valid JSON ({exc})") from None
    try:
        return parse_profile(data)
    except ValueError as exc:
        raise GraphtagError(f"{path}: {exc}") from None


def parse_profile(data: object) -> Profile:
    """Validate a decoded profile; raises ValueError naming the first problem."""
    if not isinstance(data, dict):
        raise ValueError(f"not a graphtag profile (expected a JSON object with schema {SCHEMA!r})")
    schema = data.get("schema")
    if schema != SCHEMA:
        raise ValueError(f"not a graphtag profile: schema is {schema!r}, expected {SCHEMA!r}")
    total = _number(data.get("total_ms"), "total_ms")
    runs = data.get("runs")
    if runs is not None:
        runs = _count(runs, "runs")
    modules = data.get("modules")
    if not isinstance(modules, dict):
        raise ValueError("profile 'modules' must be an object keyed by module tag")
    parsed: dict[str, ModuleTime] = {}
    for tag, entry in modules.items():
        where = f"modules[{tag!r}]"
        if not isinstance(entry, dict):
            raise ValueError(f"profile {where} must be an object")
        nodes = entry.get("nodes")
        parsed[tag] = ModuleTime(
            self_ms=_number(entry.get("self_ms"), f"{where}.self_ms"),
            total_ms=_number(entry.get("total_ms"), f"{where}.total_ms"),
            calls=_count(entry.get("calls", 1), f"{where}.calls"),
            nodes=None if nodes is None else _count(nodes, f"{where}.nodes"),
        )
    return Profile(total_ms=total, modules=parsed, runs=runs)


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"profile {name} must be a number of milliseconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"profile {name} must be finite and >= 0, got {value!r}")
    return float(value)


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"profile {name} must be a non-negative integer, got {value!r}")
    return value
