"""Benchmark ``graphtag.export`` against a plain ``torch.onnx.export``.

Usage::

    python bench/bench_export.py [--models bert-tiny gpt2-24] [--repeat N] [--json OUT]
                                 [--profile] [--processes]

Both sides get the same model object, the same inputs and the same options (torch's
defaults, ``verbose=False``; torch exports with dynamo, graphtag with its default
``auto`` route, whose first rung is dynamo as given) and both write the ONNX file
to a fresh temporary folder (torch's default ``external_data=True``: weights in
``<name>.data``, which graphtag honours), so each timing covers capture, translation,
optimization and the write. One warm-up call each, then ``--repeat`` (default 5) timed
calls each, alternating which goes first, in one process; medians are reported with
``ratio = graphtag / plain``. The garbage collector is collected before every call.
``--processes`` times every export in a fresh process instead (a tiny warm-up export
first), so no export inherits the previous one's caches and heap. Each export's CPU
time (``time.process_time``: every thread of the process) is reported beside its wall
time: on a shared machine it moves far less with the other work than wall time does.

Wall time on this machine moves by 20-30% from one export to the next, which hides a
1% difference between the sides. So each export also clocks what it spends inside
torch (``torch.onnx.export``, torch's optimizer, torch's ``ONNXProgram.save``) and in
the save, and the table gives graphtag's own work: a graphtag export's time outside
torch's exporter, torch's optimizer and its own save (the auto route's ladder, the
hierarchy, the passes and the tag reconciliation). The *accounted ratio* is
``(plain + own + graphtag save - torch save) / plain`` over medians: the cost of
graphtag's additions, measured directly, relative to the plain export; both sides run
the same torch calls with the same options, so the shared work cancels.

``--profile`` runs one more graphtag export per model under cProfile and prints where
graphtag's time goes beyond the plain export (hierarchy, the export pipeline's passes:
scope tagging, torch's optimizer with the tag reconciliation, the tag passes; the save).

Models:

* ``bert-tiny``: ``graphtag.exporter.examples:tiny_bert`` (BERT L-2 H-128 A-2).
* ``gpt2-24``: ``GPT2Model`` with 24 layers, hidden 256, 4 heads, vocab 1000, 128
  positions, weights perturbed; inputs ``input_ids``/``attention_mask`` (1x32) and
  ``use_cache=False``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import logging
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

import graphtag
from graphtag.core.graphs import iter_all_nodes
from graphtag.exporter.example_inputs import ExampleInputs
from graphtag.exporter.examples import tiny_bert


def gpt2_24() -> tuple[torch.nn.Module, ExampleInputs]:
    from models import gpt2_24l

    model, kwargs = gpt2_24l(
        vocab_size=1000, seq_len=32, attention_mask=True, bos_token_id=0, eos_token_id=0
    )
    return model, ExampleInputs(kwargs=kwargs)


MODELS: dict[str, Callable[[], tuple[torch.nn.Module, ExampleInputs]]] = {
    "bert-tiny": tiny_bert,
    "gpt2-24": gpt2_24,
}

# graphtag's default route (auto) on models dynamo exports: its first rung, so both
# sides run the same exporter and the ladder's cost shows in the ratio.
OPTIONS = {"verbose": False}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """torch's progress logs and warnings off, for both sides alike."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def plain(model: torch.nn.Module, inputs: ExampleInputs, path: Path) -> int:
    program = torch.onnx.export(
        model, inputs.args, path, kwargs=inputs.kwargs, dynamo=True, **OPTIONS
    )
    return sum(1 for _ in iter_all_nodes(program.model))


def tagged(model: torch.nn.Module, inputs: ExampleInputs, path: Path) -> int:
    result = graphtag.export(model, inputs.args, inputs.kwargs, path, **OPTIONS)
    return result.stats.nodes


SIDES = {"plain": plain, "graphtag": tagged}


class Clock:
    """Wall seconds spent inside the calls one export shares with the other side.

    ``export``: torch.onnx.export; ``optimize``: torch's ONNX optimizer (the function
    ``ONNXProgram.optimize`` and graphtag's ``torch-optimizer`` pass both call);
    ``torch_save``: ``ONNXProgram.save`` (the plain export's write); ``graphtag_save``:
    graphtag's atomic write. Installed by wrapping those functions where they are
    looked up at call time; the wrappers cost a few microseconds per call."""

    PARTS = ("export", "optimize", "torch_save", "graphtag_save")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.PARTS, 0.0)

    def _wrap(self, part: str, func: Callable) -> Callable:
        def clocked(*args, **kwargs):
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.seconds[part] += time.perf_counter() - start

        return clocked

    @contextlib.contextmanager
    def installed(self) -> Iterator[Clock]:
        import importlib

        from graphtag.exporter import tagged_export

        # The module both torch and the torch-optimizer pass look optimize up in.
        api = tagged_export.torch_framework_api()
        optimizer_module = importlib.import_module(f"onnxscript._framework_apis.{api}")
        targets = [
            (torch.onnx, "export", "export"),
            (optimizer_module, "optimize", "optimize"),
            (torch.onnx.ONNXProgram, "save", "torch_save"),
            (tagged_export, "_save_like_torch", "graphtag_save"),
        ]
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in targets]
        for owner, name, part in targets:
            setattr(owner, name, self._wrap(part, getattr(owner, name)))
        try:
            yield self
        finally:
            for owner, name, func in saved:
                setattr(owner, name, func)


def timed(side: str, model, inputs: ExampleInputs) -> tuple[float, float, int, dict]:
    """(wall seconds, CPU seconds of the process's threads, nodes, Clock seconds)."""
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp, Clock().installed() as clock:
        gc.collect()
        start, cpu = time.perf_counter(), time.process_time()
        nodes = SIDES[side](model, inputs, Path(tmp) / "model.onnx")
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return wall, cpu, nodes, clock.seconds


def bench_model(name: str, repeat: int, *, processes: bool = False) -> dict:
    """``repeat`` rounds, alternating which side goes first, after a warm-up round.

    ``processes``: each timed export in a fresh process (``_one``, which warms up on the
    tiny BERT itself, so there is no warm-up round): one process accumulates torch's
    caches and heap from export to export, which made single GPT-2 exports range from
    8.6 to 13.5 s here."""
    if processes:
        run, first = (lambda side: _in_child(side, name)), 1
    else:
        model, inputs = MODELS[name]()
        run, first = (lambda side: timed(side, model, inputs)), 0
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    cpu: dict[str, list[float]] = {side: [] for side in SIDES}
    parts: dict[str, list[dict]] = {side: [] for side in SIDES}
    nodes: dict[str, int] = {}
    for i in range(first, 1 + repeat):  # round 0 is the warm-up
        order = list(SIDES) if i % 2 == 0 else list(reversed(SIDES))
        this_round = {}
        for side in order:
            this_round[side], seconds, nodes[side], clocked = run(side)
            if i:
                times[side].append(this_round[side])
                cpu[side].append(seconds)
                parts[side].append(clocked)
        print(
            f"  {name} round {i}{'' if i else ' (warm-up)'}: "
            + ", ".join(f"{side} {this_round[side]:.2f} s" for side in SIDES),
            file=sys.stderr,
            flush=True,
        )
    return _row(name, nodes, times, cpu, parts)


def _in_child(side: str, name: str) -> tuple[float, float, int, dict]:
    import subprocess

    command = [sys.executable, __file__, "_one", side, name]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{side} export of {name} failed:\n{done.stderr[-2000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return row["seconds"], row["cpu_seconds"], row["nodes"], row["clock"]


def _one(side: str, name: str) -> None:
    """Child of --processes: a warm-up export of the tiny BERT, then one timed export."""
    with quiet():
        small, small_inputs = tiny_bert()
        timed(side, small, small_inputs)
        model, inputs = MODELS[name]()
        seconds, cpu, nodes, clock = timed(side, model, inputs)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "nodes": nodes, "clock": clock}))


def own_work(wall: float, clocked: dict) -> float:
    """A graphtag export's seconds outside torch's exporter, optimizer and its own save."""
    return wall - clocked["export"] - clocked["optimize"] - clocked["graphtag_save"]


def _row(
    name: str,
    nodes: dict[str, int],
    times: dict[str, list[float]],
    cpu: dict[str, list[float]],
    parts: dict[str, list[dict]],
) -> dict:
    medians = {side: statistics.median(values) for side, values in times.items()}
    cpu_medians = {side: statistics.median(values) for side, values in cpu.items()}
    own = [own_work(w, c) for w, c in zip(times["graphtag"], parts["graphtag"], strict=True)]
    graphtag_save = [c["graphtag_save"] for c in parts["graphtag"]]
    torch_save = [c["torch_save"] for c in parts["plain"]]
    added = (
        statistics.median(own) + statistics.median(graphtag_save) - statistics.median(torch_save)
    )
    return {
        "model": name,
        "nodes_plain": nodes["plain"],
        "nodes_graphtag": nodes["graphtag"],
        "plain_median_s": medians["plain"],
        "graphtag_median_s": medians["graphtag"],
        "ratio": medians["graphtag"] / medians["plain"],
        "plain_s": times["plain"],
        "graphtag_s": times["graphtag"],
        # CPU time of the process (every thread): what the export costs, less exposed
        # than wall time to other work on the machine.
        "plain_cpu_median_s": cpu_medians["plain"],
        "graphtag_cpu_median_s": cpu_medians["graphtag"],
        "cpu_ratio": cpu_medians["graphtag"] / cpu_medians["plain"],
        "plain_cpu_s": cpu["plain"],
        "graphtag_cpu_s": cpu["graphtag"],
        # graphtag's additions, clocked directly (see the module docstring).
        "graphtag_own_s": own,
        "graphtag_own_median_s": statistics.median(own),
        "graphtag_save_median_s": statistics.median(graphtag_save),
        "torch_save_median_s": statistics.median(torch_save),
        "accounted_ratio": (medians["plain"] + added) / medians["plain"],
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | nodes | plain median s | graphtag median s | ratio | plain CPU s | "
        "graphtag CPU s | CPU ratio | graphtag's own s | save s (torch / graphtag) "
        "| accounted ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        nodes = str(row["nodes_plain"])
        if row["nodes_graphtag"] != row["nodes_plain"]:
            nodes += f" (graphtag {row['nodes_graphtag']})"
        lines.append(
            f"| {row['model']} | {nodes} | {row['plain_median_s']:.3f} "
            f"| {row['graphtag_median_s']:.3f} | {row['ratio']:.3f} "
            f"| {row['plain_cpu_median_s']:.3f} | {row['graphtag_cpu_median_s']:.3f} "
            f"| {row['cpu_ratio']:.3f} | {row['graphtag_own_median_s']:.3f} "
            f"| {row['torch_save_median_s']:.3f} / {row['graphtag_save_median_s']:.3f} "
            f"| {row['accounted_ratio']:.3f} |"
        )
    return "\n".join(lines)


# Where graphtag's time goes: (label, file name ending, function name) as cProfile has them.
PHASES = (
    ("build_hierarchy", "module_tree.py", "build_hierarchy"),
    ("torch.onnx.export (DynamoExporter._export)", "exporters.py", "_export"),
    ("write_model_metadata", "tagged_export.py", "write_model_metadata"),
    ("pipeline build (export_steps)", "tagged_export.py", "export_steps"),
    ("pipeline run (every pass)", "manager.py", "call"),
    ("  scope-tagging", "scope_tagging.py", "call"),
    ("  torch-optimizer", "torch_optimizer.py", "call"),
    ("    of which torch's optimizer", "torch_2_8.py", "optimize"),
    ("    of which tag reconciliation", "torch_optimizer.py", "reconcile_tags"),
    ("save (_save_like_torch)", "tagged_export.py", "_save_like_torch"),
)


def _profile(side: str, model, inputs: ExampleInputs) -> pstats.Stats:
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        profiler = cProfile.Profile()
        profiler.enable()
        SIDES[side](model, inputs, Path(tmp) / "model.onnx")
        profiler.disable()
    return pstats.Stats(profiler, stream=io.StringIO())


def _cumulative(stats: pstats.Stats, suffix: str, func: str) -> float:
    return sum(
        entry[3]
        for (filename, _, name), entry in stats.stats.items()
        if name == func and filename.endswith(suffix)
    )


def profile_model(name: str) -> None:
    model, inputs = MODELS[name]()
    timed("plain", model, inputs)  # warm both paths up first
    timed("graphtag", model, inputs)
    plain_total = _cumulative(_profile("plain", model, inputs), "bench_export.py", "plain")
    stats = _profile("graphtag", model, inputs)
    total = _cumulative(stats, "bench_export.py", "tagged")
    print(f"\nprofile of one export of {name} (cumulative s, under cProfile):")
    for label, suffix, func in PHASES:
        seconds = _cumulative(stats, suffix, func)
        print(f"  {label:42s} {seconds:7.3f}  ({seconds / total:6.1%})")
    print(f"  {'graphtag.export total':42s} {total:7.3f}")
    print(f"  {'plain torch.onnx.export total':42s} {plain_total:7.3f}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_one"]:
        _one(argv[1], argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per side (>= 1)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--profile", action="store_true", help="profile graphtag's phases")
    parser.add_argument(
        "--processes", action="store_true", help="each timed export in a fresh process"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    rows = []
    with quiet():
        for name in args.models:
            rows.append(bench_model(name, args.repeat, processes=args.processes))
        if args.profile:
            for name in args.models:
                profile_model(name)
    where = "each in a fresh process after a tiny warm-up" if args.processes else "1 warm-up"
    print(
        f"\ngraphtag.export vs torch.onnx.export (dynamo, same options, both writing to a "
        f"temp dir), median of {args.repeat} after {where}, alternating:\n"
    )
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps({"repeat": args.repeat, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
