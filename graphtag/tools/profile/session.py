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

from graphtag.core.errors import GraphtagError, first_line

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


class ProfiledSession:
    """An ONNX Runtime session with the profiler on; files go to ``workdir``.

    Creating it optimizes the graph and writes it to :attr:`optimized`;
    :meth:`warm_up` and :meth:`measure` run the inferences; :meth:`finish` writes and
    returns the trace. ONNX Runtime releases Python's lock in these steps, so a caller
    may do other work meanwhile, except during :meth:`measure`.
    """

    def __init__(self, model_path: Path, settings: RunSettings, workdir: Path) -> None:
        import onnxruntime as ort

        workdir.mkdir(parents=True, exist_ok=True)
        self._workdir = workdir
        self.settings = settings
        self.version = ort.__version__
        self.started = time.perf_counter()
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _LEVEL_NAMES[settings.optimization]
        )
        self.optimized = workdir / "optimized.onnx"
        options.optimized_model_filepath = str(self.optimized)
        # Weights go to a side file: the graph file stays small to load and retag.
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", "optimized.onnx.data"
        )
        options.enable_profiling = True
        options.profile_file_prefix = str(workdir / "ort_profile")
        options.intra_op_num_threads = settings.threads
        # Failures reach the caller as exceptions; ORT's log would repeat them (and warn
        # that a layout-optimized graph is machine-specific, which is expected here).
        options.log_severity_level = 4
        try:
            self._session = ort.InferenceSession(
                str(model_path), options, providers=list(settings.providers)
            )
        except Exception as exc:
            raise GraphtagError(f"ONNX Runtime cannot load the model: {_first_line(exc)}") from exc
        self.providers = list(self._session.get_providers())

    def warm_up(
        self, feeds: Mapping[str, np.ndarray], progress: Callable[[str], None] | None = None
    ) -> None:
        """The warm-up inferences (in the trace, skipped when it is read)."""
        self._run(feeds, self.settings.warmup, "warm-up", progress)

    def measure(
        self, feeds: Mapping[str, np.ndarray], progress: Callable[[str], None] | None = None
    ) -> None:
        """The measured inferences."""
        self._run(feeds, self.settings.runs, "run", progress)

    def _run(self, feeds, count: int, label: str, progress) -> None:
        say = progress or (lambda _text: None)
        feeds = dict(feeds)
        last = time.perf_counter()
        for index in range(count):
            try:
                self._session.run(None, feeds)
            except Exception as exc:
                raise GraphtagError(
                    f"ONNX Runtime failed to run the model on the inputs "
                    f"({_first_line(exc)}); describe them with --input-specs FILE.json"
                ) from exc
            now = time.perf_counter()
            if now - last >= _PROGRESS_EVERY_S and index + 1 < count:
                last = now
                say(f"{label} {index + 1}/{count} ({now - self.started:.0f} s)")

    def trace_file(self) -> Path | None:
        """The trace file ONNX Runtime opened for this session (it writes the events at
        :meth:`finish`), when there is exactly one."""
        found = list(self._workdir.glob("ort_profile*.json"))
        return found[0] if len(found) == 1 else None

    def finish(self) -> Path:
        """Stop the profiler; the trace file it wrote."""
        return Path(self._session.end_profiling())


def _first_line(exc: BaseException) -> str:
    # ONNX Runtime prefixes every message with its own marker; the reason comes after it.
    return first_line(exc).split("[ONNXRuntimeError] : ", 1)[-1]
