"""Per-module eager PyTorch times beside ONNX Runtime's (``graphtag profile --torch``).

:func:`time_modules` runs the model with a forward pre-hook and hook on every kept
module (the hierarchy's tags). The hooks keep a stack of the modules running: when a
call ends, its elapsed time minus the time of the kept modules it called is its *self*
time, added to its tag; its elapsed time is charged to the caller. Self times therefore
add up exactly to the root's call, and a module called from anywhere (a shared block)
is charged where it ran. Work of filtered-out modules (``torch.nn.Linear``, ...) is
their kept ancestor's, as in the tags. The hooks cost a few microseconds per call, which
lands in the caller's self time.

:func:`profile_source` is the whole ``--torch`` flow: export with graphtag, profile the
export in ONNX Runtime (graphtag.tools.profile), time the same modules in PyTorch on the
same inputs with the same warm-up and run counts.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from graphtag.core.errors import GraphtagError, first_line
from graphtag.exporter.eager import require_hooks, state_kept
from graphtag.exporter.example_inputs import ExampleInputs
from graphtag.exporter.noise import quiet_torch
from graphtag.tools.profile import ModuleProfile, RunSeries, RunSettings, collect_ort

_PROGRESS_EVERY_S = 2.0


def time_modules(
    module: torch.nn.Module,
    inputs: ExampleInputs,
    names: Mapping[str, str],
    *,
    warmup: int = 3,
    runs: int = 10,
    threads: int = 0,
    progress: Callable[[str], None] | None = None,
) -> RunSeries:
    """Self time (ns) and calls of every module in ``names`` (tag -> dotted name), per run.

    ``threads`` > 0 sets torch's intra-op threads for the duration. Each run's wall time
    is the time of the whole ``module(...)`` call.
    """
    require_hooks(module, "profile --torch")
    say = progress or (lambda _text: None)
    tag_of: dict[int, str] = {}
    for tag, name in names.items():
        try:
            sub = module.get_submodule(name) if name else module
        except AttributeError:
            continue
        tag_of.setdefault(id(sub), tag)
    stack: list[list] = []  # [tag, start ns, ns spent in kept callees]
    times: dict[str, int] = {}
    calls: dict[str, int] = {}
    clock = time.perf_counter_ns

    def before(sub, _args) -> None:
        stack.append([tag_of[id(sub)], clock(), 0])

    def after(_sub, _args, _output) -> None:
        now = clock()
        tag, start, inner = stack.pop()
        elapsed = now - start
        times[tag] = times.get(tag, 0) + elapsed - inner
        calls[tag] = calls.get(tag, 0) + 1
        if stack:
            stack[-1][2] += elapsed

    handles = []
    for sub in module.modules():
        if id(sub) in tag_of:
            handles.append(sub.register_forward_pre_hook(before))
            handles.append(sub.register_forward_hook(after, always_call=True))
    self_ns: list[dict[str, int]] = []
    call_counts: list[dict[str, int]] = []
    wall_ns: list[int] = []
    started = last = time.perf_counter()
    try:
        with _threads(threads), torch.no_grad(), state_kept(module):
            for index in range(warmup + runs):
                stack.clear()
                times, calls = {}, {}
                begin = clock()
                try:
                    module(*inputs.args, **inputs.kwargs)
                except Exception as exc:
                    raise GraphtagError(
                        f"the PyTorch model failed on the inputs: {first_line(exc, typed=True)}"
                    ) from exc
                wall = clock() - begin
                if index >= warmup:
                    self_ns.append(times)
                    call_counts.append(calls)
                    wall_ns.append(wall)
                now = time.perf_counter()
                if now - last >= _PROGRESS_EVERY_S and index + 1 < warmup + runs:
                    last = now
                    phase = (
                        f"warm-up {index + 1}/{warmup}"
                        if index < warmup
                        else f"run {index + 1 - warmup}/{runs}"
                    )
                    say(f"PyTorch {phase} ({now - started:.0f} s)")
    finally:
        for handle in handles:
            handle.remove()
    return RunSeries(self_ns, call_counts, wall_ns)


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    if count <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def profile_source(
    module: torch.nn.Module,
    inputs: ExampleInputs,
    settings: RunSettings,
    *,
    with_torch: bool = True,
    filter_config: Any = None,
    progress: Callable[[str], None] | None = None,
    save_optimized: str | Path | None = None,
    save_trace: str | Path | None = None,
) -> ModuleProfile:
    """Export ``module`` with graphtag, profile it in ONNX Runtime, and (``with_torch``)
    time its kept modules in eager PyTorch on the same inputs."""
    import graphtag
    from graphtag.exporter.verify import graph_feeds

    if with_torch:  # before the export, not after minutes of it
        require_hooks(module, "profile --torch")
    say = progress or (lambda _text: None)
    say("exporting with graphtag")
    with quiet_torch():  # the profile is the output: no export progress or warnings
        result = graphtag.export(
            module, inputs.args, inputs.kwargs, filter_config=filter_config, verbose=False
        )
    feeds = graph_feeds(result.model, module, inputs)
    with tempfile.TemporaryDirectory(prefix="graphtag-profile-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        result.save(path)
        measured = collect_ort(
            path,
            settings,
            feeds=feeds,
            progress=say,
            save_optimized=save_optimized,
            save_trace=save_trace,
        )
    measured.model = f"{type(module).__name__} (exported by graphtag)"
    if result.output_check is not None and (line := result.output_check.warning()):
        measured.notes.append(line)  # a profile of a graph that is not the model
    series = None
    if with_torch:
        say(f"timing {len(result.hierarchy)} modules in eager PyTorch")
        series = time_modules(
            module,
            inputs,
            {info.tag: info.name for info in result.hierarchy},
            warmup=settings.warmup,
            runs=settings.runs,
            threads=settings.threads,
            progress=say,
        )
    return ModuleProfile(measured, torch=series)
