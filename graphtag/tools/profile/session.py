"""Run a model in ONNX Runtime with its profiler on and its optimized graph saved.

One session does everything: it optimizes the graph (saved through
``SessionOptions.optimized_model_filepath``, so the profile's node names are that file's
node names), runs the warm-up and the measured inferences with the profiler on, and
writes the trace (``end_profiling``). ONNX Runtime profiles a whole session, so the
warm-up runs are in the trace too; the reader skips them by position.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from graphtag.core.errors import GraphtagError

OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "layout", "all")
_LEVEL_NAMES = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "layout": "ORT_ENABLE_LAYOUT",
    "all": "ORT_ENABLE_ALL",
}
_PROGRESS_EVERY_S = 2.0  # a progress line at most this often, only on long runs


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How ONNX Runtime runs the model."""

    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    warmup: int = 3
    runs: int = 10
    threads: int = 0  # intra-op threads; 0: ONNX Runtime's default
    optimization: str = "all"  # one of OPTIMIZATION_LEVELS

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise GraphtagError(f"--runs must be at least 1, got {self.runs}")
        if self.warmup < 0:
            raise GraphtagError(f"--warmup must be 0 or more, got {self.warmup}")
        if self.threads < 0:
            raise GraphtagError(f"--threads must be 0 (default) or more, got {self.threads}")
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise GraphtagError(
                f"unknown optimization level {self.optimization!r}; use one of "
                + ", ".join(OPTIMIZATION_LEVELS)
            )


@dataclasses.dataclass
class SessionOutput:
    trace: Path  # ONNX Runtime's profile (Chrome trace JSON)
    optimized: Path  # the graph the session ran
    providers: list[str]  # what the session actually uses, in priority order
    version: str  # onnxruntime version
    seconds: float  # session creation, all runs and end_profiling


def resolve_providers(names: Sequence[str]) -> tuple[str, ...]:
    """Canonical execution provider names; unknown or unavailable ones are an error.

    ``cuda``, ``CUDA`` and ``CUDAExecutionProvider`` all name the same provider.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    known = {_key(p): p for p in (*ort.get_all_providers(), *available)}
    resolved = []
    for name in names:
        canonical = known.get(_key(name))
        if canonical is None or canonical not in available:
            what = "unknown" if canonical is None else "not available in this onnxruntime"
            raise GraphtagError(
                f"execution provider '{name}' is {what}; available: " + ", ".join(available)
            )
        if canonical not in resolved:
            resolved.append(canonical)
    if not resolved:
        raise GraphtagError("no execution provider given; available: " + ", ".join(available))
    return tuple(resolved)


def _key(name: str) -> str:
    key = name.strip().lower()
    return key.removesuffix("executionprovider") or key


def run_profiled(
    model_path: Path,
    feeds: Mapping[str, np.ndarray],
    settings: RunSettings,
    workdir: Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> SessionOutput:
    """Optimize, warm up and run ``model_path`` with the profiler on, files in ``workdir``."""
    import onnxruntime as ort

    say = progress or (lambda _text: None)
    started = time.perf_counter()
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(
        ort.GraphOptimizationLevel, _LEVEL_NAMES[settings.optimization]
    )
    optimized = workdir / "optimized.onnx"
    options.optimized_model_filepath = str(optimized)
    # Weights go to a side file: the graph file stays small to load and retag.
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", "optimized.onnx.data"
    )
    options.enable_profiling = True
    options.profile_file_prefix = str(workdir / "ort_profile")
    options.intra_op_num_threads = settings.threads
    options.log_severity_level = 3  # ORT's warning about saving a layout-optimized graph
    try:
        session = ort.InferenceSession(str(model_path), options, providers=list(settings.providers))
    except Exception as exc:
        raise GraphtagError(f"ONNX Runtime cannot load the model: {_first_line(exc)}") from exc
    total = settings.warmup + settings.runs
    last = time.perf_counter()
    for index in range(total):
        try:
            session.run(None, dict(feeds))
        except Exception as exc:
            raise GraphtagError(
                f"ONNX Runtime failed to run the model on the inputs "
                f"({_first_line(exc)}); describe them with --input-specs FILE.json"
            ) from exc
        now = time.perf_counter()
        if now - last >= _PROGRESS_EVERY_S and index + 1 < total:
            last = now
            phase = (
                f"warm-up {index + 1}/{settings.warmup}"
                if index < settings.warmup
                else f"run {index + 1 - settings.warmup}/{settings.runs}"
            )
            say(f"{phase} ({now - started:.0f} s)")
    trace = Path(session.end_profiling())
    return SessionOutput(
        trace=trace,
        optimized=optimized,
        providers=list(session.get_providers()),
        version=ort.__version__,
        seconds=time.perf_counter() - started,
    )


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    for prefix in ("[ONNXRuntimeError] : ",):
        text = text.split(prefix, 1)[-1]
    return text if len(text) <= limit else text[: limit - 3] + "..."
