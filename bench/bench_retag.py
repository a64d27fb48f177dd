"""Benchmark: retag against loading the same file.

Part 1 exports GPT-2 (24 layers, hidden 256) tagged, lets ONNX Runtime optimize it
(``SessionOptions.optimized_model_filepath`` at ORT_ENABLE_BASIC, EXTENDED and ALL),
then times, alternating in one process: ``onnx_ir.load`` of the optimized file, and
``graphtag.retag(reference, model)`` on a freshly loaded copy of it (the reference is
loaded once, beforehand, as the optimized model is for the timing). Goal: retag / load
<= 1.0 for ORT_ENABLE_ALL.

Part 2 retags synthetic tagged transformer graphs against a copy whose every value and
node was renamed and whose tags were removed (every node must be matched structurally,
the slow path) at 20k and 200k nodes. Goal: t(200k) / t(20k) <= 12 (near-linear).

    python bench/bench_retag.py [--repeat 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnx_ir as ir

sys.path.insert(0, str(Path(__file__).parent))
from models import export_gpt2_24l
from synthetic import build_model
from timing import add_synthetic, timed

import graphtag

LEVELS = ("basic", "extended", "all")


def ort_optimize(source: Path, level: str) -> Path:
    import onnxruntime as ort

    out = source.with_name(f"{source.stem}.ort-{level}.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return out


def _time_retag(reference: ir.Model, model: ir.Model):
    gc.collect()
    start = time.perf_counter()
    report = graphtag.retag(reference, model)
    return time.perf_counter() - start, report


def bench_file(reference: ir.Model, path: Path, level: str, repeat: int) -> dict:
    loads, retags = [], []
    report = None
    for _ in range(repeat):
        loads.append(timed(lambda: ir.load(path)))
        seconds, report = _time_retag(reference, ir.load(path))
        retags.append(seconds)
    load, retag = statistics.median(loads), statistics.median(retags)
    assert report is not None
    return {
        "level": level,
        "nodes": report.nodes,
        "load_s": load,
        "retag_s": retag,
        "ratio": retag / load,
        "kinds": dict(sorted(report.counts.items())),
        "match_rate": report.match_rate,
    }


def _renamed(size: int) -> ir.Model:
    """The synthetic model with every value and node renamed and no tags."""
    copy = build_model(size, "transformer", tags=False, shuffle=False)
    for index, node in enumerate(copy.graph):
        node.name = f"renamed_node_{index}"
        for value in node.outputs:
            value.name = f"renamed_{value.name}"
    for value in copy.graph.inputs:
        value.name = f"renamed_{value.name}"
    return copy


def bench_synthetic(sizes: list[int], repeat: int) -> list[dict]:
    rows = []
    for size in sizes:
        reference = build_model(size, "transformer", tags=True, shuffle=False)
        times, report = [], None
        for _ in range(repeat):
            seconds, report = _time_retag(reference, _renamed(size))
            times.append(seconds)
        assert report is not None and report.counts.get("retag:structural", 0) > 0.9 * size
        rows.append(
            {
                "nodes": report.nodes,
                "retag_s": statistics.median(times),
                "kinds": dict(sorted(report.counts.items())),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--skip-gpt2", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result: dict = {}
    if not args.skip_gpt2:
        with tempfile.TemporaryDirectory() as tmp:
            source = export_gpt2_24l(Path(tmp) / "gpt2-24l.onnx")
            reference = graphtag.load(source)
            result["gpt2"] = [
                bench_file(reference, ort_optimize(source, level), level, args.repeat)
                for level in LEVELS
            ]
        print(
            f"retag of GPT-2 24L's ORT-optimized graph vs onnx_ir.load, median of {args.repeat}\n"
        )
        print("| ORT level | nodes | onnx_ir.load s | retag s | retag / load | match kinds |")
        print("|---|---:|---:|---:|---:|---|")
        for row in result["gpt2"]:
            kinds = ", ".join(f"{k} {n}" for k, n in row["kinds"].items())
            print(
                f"| {row['level']} | {row['nodes']} | {row['load_s']:.3f} | "
                f"{row['retag_s']:.3f} | {row['ratio']:.2f} | {kinds} |"
            )
    rows = bench_synthetic(args.sizes, max(1, args.repeat // 2))
    add_synthetic(result, rows, "retag_s", "synthetic nodes, all renamed | retag s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
