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
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnx_ir as ir

sys.path.insert(0, str(Path(__file__).parent))
from synthetic import build_model

from graphtag.core import metadata
from graphtag.passes import DEFAULT_PIPELINE
from graphtag.pipeline import Pipeline


def _timed(fn) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def export_gpt2(folder: Path, optimize: bool) -> Path:
    from models import gpt2_24l

    import graphtag

    model, kwargs = gpt2_24l()
    path = folder / f"gpt2-24l-{'opt' if optimize else 'noopt'}.onnx"
    graphtag.export(model, (), kwargs, path, optimize=optimize, pipeline=None, verbose=False)
    return path


def bench_file(path: Path, repeat: int) -> dict:
    loads, runs = [], []
    nodes = len(list(ir.load(path).graph))
    for _ in range(repeat):
        loads.append(_timed(lambda: ir.load(path)))
        model = ir.load(path)
        runs.append(_timed(lambda m=model: Pipeline.from_text(DEFAULT_PIPELINE)(m)))
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
            times.append(_timed(lambda m=model: Pipeline.from_text(DEFAULT_PIPELINE)(m)))
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
    result["synthetic"] = rows
    print("\n| synthetic nodes | pipeline s |\n|---:|---:|")
    for row in rows:
        print(f"| {row['nodes']} | {row['pipeline_s']:.3f} |")
    if len(rows) >= 2:
        scale = rows[-1]["pipeline_s"] / rows[0]["pipeline_s"]
        result["scaling"] = scale
        print(f"\nt({rows[-1]['nodes']}) / t({rows[0]['nodes']}) = {scale:.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
