"""Benchmark: graphtag's default tag pipeline against loading the same file.

Part 1 exports GPT-2 (24 layers, hidden 256) twice, with and without the exporter's
optimizer, tags only (no passes), then times, alternating in one process:
``onnx_ir.load(file)`` and the default pipeline (tag-propagation, multi-consumer,
residual-resolution) on a freshly loaded copy. Goal: pipeline / load <= 1.0.

Part 2 runs the same pipeline on synthetic tagged transformer graphs of 20k and 200k
nodes with 5% of the tags removed. Goal: t(200k) / t(20k) <= 12.

    python bench/bench_passes.py [--repeat 5] [--json out.json]
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
from models import export_gpt2_24l
from synthetic import build_model
from timing import add_synthetic, timed

from graphtag.core import metadata
from graphtag.passes import DEFAULT_PIPELINE
from graphtag.pipeline import Pipeline


def export_gpt2(folder: Path, optimize: bool) -> Path:
    path = folder / f"gpt2-24l-{'opt' if optimize else 'noopt'}.onnx"
    return export_gpt2_24l(path, optimize=optimize, pipeline=None)


def bench_file(path: Path, repeat: int) -> dict:
    loads, runs = [], []
    nodes = len(list(ir.load(path).graph))
    for _ in range(repeat):
        loads.append(timed(lambda: ir.load(path)))
        model = ir.load(path)
        runs.append(timed(lambda m=model: Pipeline.from_text(DEFAULT_PIPELINE)(m)))
    load, run = statistics.median(loads), statistics.median(runs)
    return {
        "model": path.stem,
        "nodes": nodes,
        "load_s": load,
        "pipeline_s": run,
        "ratio": run / load,
    }


def _untag_some(model: ir.Model, every: int = 20) -> None:
    for index, node in enumerate(model.graph):
        if index % every == 0:
            node.metadata_props.pop(metadata.MODULE, None)


def bench_synthetic(sizes: list[int], repeat: int) -> list[dict]:
    rows = []
    for size in sizes:
        times = []
        for _ in range(repeat):
            model = build_model(size, "transformer", tags=True, shuffle=False)
            _untag_some(model)
            times.append(timed(lambda m=model: Pipeline.from_text(DEFAULT_PIPELINE)(m)))
            del model
        rows.append({"nodes": size, "pipeline_s": statistics.median(times)})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--skip-gpt2", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result: dict = {"pipeline": DEFAULT_PIPELINE}
    if not args.skip_gpt2:
        with tempfile.TemporaryDirectory() as tmp:
            files = [export_gpt2(Path(tmp), optimize) for optimize in (True, False)]
            result["gpt2"] = [bench_file(f, args.repeat) for f in files]
        print(f"Default pipeline ({DEFAULT_PIPELINE}) vs onnx_ir.load, median of {args.repeat}\n")
        print("| model | nodes | onnx_ir.load s | pipeline s | pipeline / load |")
        print("|---|---:|---:|---:|---:|")
        for row in result["gpt2"]:
            print(
                f"| {row['model']} | {row['nodes']} | {row['load_s']:.3f} | "
                f"{row['pipeline_s']:.3f} | {row['ratio']:.2f} |"
            )
    rows = bench_synthetic(args.sizes, max(1, args.repeat // 2))
    add_synthetic(result, rows, "pipeline_s", "synthetic nodes | pipeline s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
