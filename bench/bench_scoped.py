"""Benchmark: a scoped pass against the same pass unscoped plus one extraction per scope.

Exports GPT-2 (24 layers, hidden 256) with the exporter's optimizer off (the raw graph,
where CSE has work to do) and tagged, then times, on freshly loaded copies, alternating
in one process (median of ``--repeat`` runs):

* ``unscoped``: the pass on the whole model;
* ``scoped``: ``PASS@PATTERN`` through the pipeline, for one layer and for every layer;
* ``extraction``: what extracting those scopes costs on its own (the boundaries of every
  module once, then ``Extractor.extract`` per scope: ``graphtag extract``'s in-memory
  work).

The three run back to back in each repeat, their order rotating between repeats. Two
ratios are printed: scoped / (unscoped + extraction) of the medians, and the median of
that ratio taken within each repeat (the steps of one repeat share the machine's state,
so it moves less from run to run on a noisy machine).

Goal: scoped <= unscoped + extraction, for every pass and pattern.

``--instructions`` also counts each step's executed instructions under valgrind's
callgrind (``instructions.py``): one run of each step after a warm-up, in a separate
process per pass and pattern. The count is the same from run to run whatever the load,
so it places a ratio that wall time leaves within noise (it is not time: cache misses
are not in it).

``--sizes N ...`` adds a scaling run: CSE scoped to every layer of synthetic tagged
transformer graphs (``synthetic.build_model``, 29 nodes per layer, in graph order) of
about N nodes each, and t(largest) / t(smallest); ``--skip-gpt2`` runs only that.

    python bench/bench_scoped.py [--repeat 5] [--passes PASS ...] [--json out.json]
                                 [--sizes 10000 100000] [--skip-gpt2] [--instructions]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import onnx_ir as ir

sys.path.insert(0, str(Path(__file__).parent))
from instructions import region, run_counted
from models import export_gpt2_24l
from synthetic import build_model
from timing import add_synthetic, timed

from graphtag.analysis.boundaries import module_boundaries
from graphtag.analysis.selection import module_scopes
from graphtag.pipeline import Pipeline
from graphtag.surgery.extraction import Extractor

PASSES = ["ir.common-subexpression-elimination", "torch-optimizer", "demo-stamp", "namespace"]
PATTERNS = {"one layer": "*/GPT2Block.5", "every layer": "*/GPT2Block.*"}


def _extract_scopes(model: ir.Model, pattern: str) -> None:
    tags = [tag for tag, nodes in module_scopes(model, pattern) if nodes]
    extractor = Extractor(model, module_boundaries(model))
    for tag in tags:
        extractor.extract(tag)


def _rotated(index: int) -> list[int]:
    """The order of the three steps in repeat ``index``: 0 1 2, then 1 2 0, then 2 0 1."""
    return [(index + k) % 3 for k in range(3)]


def bench(path: Path, repeat: int, passes: list[str] = PASSES) -> list[dict]:
    rows = []
    for pass_name in passes:
        for label, pattern in PATTERNS.items():
            steps = list(_steps(pass_name, pattern).values())  # unscoped, scoped, extraction
            times: list[list[float]] = [[], [], []]  # unscoped, scoped, extraction
            for index in range(repeat):
                for which in _rotated(index):  # no step always runs first or last
                    model = ir.load(path)
                    times[which].append(timed(lambda m=model, f=steps[which]: f(m)))
            whole, scoped, extraction = times
            row = {
                "pass": pass_name,
                "scope": label,
                "scopes": sum(1 for _, n in module_scopes(ir.load(path), pattern) if n),
                "unscoped_s": statistics.median(whole),
                "scoped_s": statistics.median(scoped),
                "extraction_s": statistics.median(extraction),
            }
            row["budget_s"] = row["unscoped_s"] + row["extraction_s"]
            row["ratio"] = row["scoped_s"] / row["budget_s"]
            # The three steps of one repeat ran back to back, under the same machine
            # state: the median of their ratios moves less than the ratio of medians.
            row["paired_ratio"] = statistics.median(
                s / (w + e) for w, s, e in zip(whole, scoped, extraction)
            )
            rows.append(row)
            print(
                f"| {pass_name} | {label} | {row['scopes']} | {row['unscoped_s']:.3f} | "
                f"{row['extraction_s']:.3f} | {row['scoped_s']:.3f} | {row['ratio']:.2f} | "
                f"{row['paired_ratio']:.2f} |",
                flush=True,
            )
    return rows


def _steps(pass_name: str, pattern: str) -> dict:
    return {
        "unscoped": lambda m: Pipeline.from_text(pass_name)(m),
        "scoped": lambda m: Pipeline.from_text(f"{pass_name}@{pattern}")(m),
        "extraction": lambda m: _extract_scopes(m, pattern),
    }


def count_worker(path: Path, pass_name: str, pattern: str) -> None:
    """Under callgrind: each step once to warm up (imports, plugin discovery), then once
    in a counted region, each on a freshly loaded model (loading is not counted)."""
    steps = _steps(pass_name, pattern)
    for step in steps.values():
        step(ir.load(path))
    for label, step in steps.items():
        model = ir.load(path)
        with region(label):
            step(model)
        del model


def bench_instructions(path: Path, passes: list[str]) -> list[dict]:
    rows = []
    for pass_name in passes:
        for label, pattern in PATTERNS.items():
            argv = [__file__, "--count-worker", str(path), pass_name, pattern]
            counts = dict(run_counted(argv))
            whole, scoped, extraction = (counts[k] for k in ("unscoped", "scoped", "extraction"))
            row = {
                "pass": pass_name,
                "scope": label,
                "unscoped_instructions": whole,
                "extraction_instructions": extraction,
                "scoped_instructions": scoped,
                "ratio": scoped / (whole + extraction),
            }
            rows.append(row)
            print(
                f"| {pass_name} | {label} | {whole / 1e6:.0f}M | {extraction / 1e6:.0f}M | "
                f"{scoped / 1e6:.0f}M | {row['ratio']:.3f} |",
                flush=True,
            )
    return rows


def bench_scaling(sizes: list[int], repeat: int) -> list[dict]:
    """CSE on every layer of synthetic graphs, each run on a freshly built model."""
    rows = []
    text = f"{PASSES[0]}@*/Layer.*"
    for size in sizes:
        times, scopes = [], 0
        for _ in range(repeat):
            model = build_model(size, "transformer", tags=True, shuffle=False)
            scopes = sum(1 for _, nodes in module_scopes(model, "*/Layer.*") if nodes)
            times.append(timed(lambda m=model: Pipeline.from_text(text)(m)))
            del model
        rows.append({"nodes": size, "scopes": scopes, "scoped_s": statistics.median(times)})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--passes", nargs="+", default=PASSES, metavar="PASS")
    parser.add_argument("--sizes", type=int, nargs="+", default=[], metavar="N")
    parser.add_argument("--skip-gpt2", action="store_true")
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--count-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.count_worker:
        path, pass_name, pattern = args.count_worker
        count_worker(Path(path), pass_name, pattern)
        return
    result: dict = {}
    if not args.skip_gpt2:
        with tempfile.TemporaryDirectory() as tmp:
            path = export_gpt2_24l(Path(tmp) / "gpt2-24l-noopt.onnx", optimize=False)
            nodes = len(ir.load(path).graph)
            print(f"GPT-2 24 layers, optimize=False: {nodes} nodes; median of {args.repeat}\n")
            print(
                "| pass | scope | scopes | unscoped s | extraction s | scoped s | "
                "scoped / (unscoped + extraction) | median of per-repeat ratios |"
            )
            print("|---|---|---:|---:|---:|---:|---:|---:|")
            result.update(nodes=nodes, rows=bench(path, args.repeat, args.passes))
            if args.instructions:
                print(
                    "\nInstructions (callgrind, one counted run of each step):\n\n"
                    "| pass | scope | unscoped | extraction | scoped | "
                    "scoped / (unscoped + extraction) |\n|---|---|---:|---:|---:|---:|"
                )
                result["instructions"] = bench_instructions(path, args.passes)
    if args.sizes:
        rows = bench_scaling(args.sizes, args.repeat)
        add_synthetic(result, rows, "scoped_s", f"synthetic nodes | {PASSES[0]}@*/Layer.* s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
