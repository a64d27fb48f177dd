"""Per-module latency: ONNX Runtime's profiler, read through the module tags (torch-free).

ONNX Runtime profiles the kernels of the graph it optimized, whose nodes are renamed,
fused and untagged; :func:`profile_onnx` saves that graph, retags it against the tagged
model and adds every kernel's time to its module::

    from graphtag.tools.profile import RunSettings, profile_onnx

    profile = profile_onnx("bert.onnx", RunSettings(warmup=3, runs=10))
    for row in profile.view(depth=3).rows:
        print(row.tag, row.ort.self_ns, row.ort.total_ns)
    data = profile.to_json()  # graphtag.profile/1, for graphtag report --profile

PyTorch's side (eager times per module, forward hooks) is measured by
graphtag.exporter.module_timing and joins as ``ModuleProfile(ort, torch=series)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from graphtag.tools.profile.collect import OrtMeasurement, collect_ort
from graphtag.tools.profile.compare import compare_profiles
from graphtag.tools.profile.result import ModuleProfile, Row, View, top_ops
from graphtag.tools.profile.series import ModuleTimes, RunSeries, Summary
from graphtag.tools.profile.session import OPTIMIZATION_LEVELS, RunSettings, resolve_providers

__all__ = [
    "OPTIMIZATION_LEVELS",
    "ModuleProfile",
    "ModuleTimes",
    "OrtMeasurement",
    "Row",
    "RunSeries",
    "RunSettings",
    "Summary",
    "View",
    "collect_ort",
    "compare_profiles",
    "profile_onnx",
    "resolve_providers",
    "top_ops",
]


def profile_onnx(
    model_path: str | Path,
    settings: RunSettings | None = None,
    *,
    input_specs: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ModuleProfile:
    """Profile ``model_path`` in ONNX Runtime and attribute every kernel to its module."""
    measured = collect_ort(
        model_path, settings or RunSettings(), input_specs=input_specs, progress=progress
    )
    return ModuleProfile(measured)
