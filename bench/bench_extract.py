"""Benchmark: extracting every module of GPT-2-24L, graphtag vs onnx.utils.extract_model.

Exports GPT-2 (24 layers, hidden 256, perturbed weights, ``input_ids`` and
``use_cache=False``) with ``graphtag.export`` (torch's optimizer on), then, in the same
process and on the same file:

* graphtag: load the file once, compute every module's boundaries once, extract every
  module and save each to its own .onnx file;
* onnx: ``onnx.utils.extract_model(file, out, inputs, outputs)`` once per module with
  the input/output value names from graphtag's boundaries (defaults: check_model and
  infer_shapes on; it loads the file and saves the result on every call).

Each side is timed ``--repeat`` times and the median is reported. onnx's extractor is
slow: by default it runs on every module (about 25 s per run here); ``--sample N`` times
it on a fixed random sample of N modules (``random.Random(0)``) instead and extrapolates
its total from the sample's mean time per module (the output says so). Goal:
onnx / graphtag >= 20.

    python bench/bench_extract.py [--repeat 3] [--sample N] [--workdir DIR] [--json out.json]

The saves dominate graphtag's time (GPT-2-24L: about 350 MB of weights over all the
module files), so the result depends on the disk; ``--workdir /dev/shm`` measures
without it.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnx
import onnx.utils
import onnx_ir as ir

import graphtag
from graphtag.analysis.boundaries import compute_boundaries
from graphtag.surgery.extraction import Extractor


def run_graphtag(path: Path, out: Path) -> tuple[float, float]:
    """Seconds to load, compute boundaries, extract and save every module; and the same
    without the saves (the in-memory API)."""
    gc.collect()
    start = time.perf_counter()
    saving = 0.0
    model = graphtag.load(path)
    ir.external_data.load_to_model(model)  # weights go inside each extracted file
    boundaries = compute_boundaries(model)
    extractor = Extractor(model, boundaries)
    for index, tag in enumerate(boundaries):
        extracted = extractor.extract(tag)
        before = time.perf_counter()
        graphtag.save(extracted, out / f"m{index}.onnx")
        saving += time.perf_counter() - before
    total = time.perf_counter() - start
    return total, total - saving


def run_onnx(path: Path, out: Path, modules: list[tuple[str, list[str], list[str]]]) -> float:
    """Seconds for one onnx.utils.extract_model call per module."""
    gc.collect()
    start = time.perf_counter()
    for index, (_, inputs, outputs) in enumerate(modules):
        onnx.utils.extract_model(str(path), str(out / f"o{index}.onnx"), inputs, outputs)
    return time.perf_counter() - start


def same_nodes(ours: Path, theirs: Path) -> bool:
    """Both extractions hold the same multiset of (op, outputs) nodes."""

    def key(model: onnx.ModelProto) -> list:
        return sorted((n.op_type, tuple(n.output)) for n in model.graph.node)

    return key(onnx.load(ours, load_external_data=False)) == key(
        onnx.load(theirs, load_external_data=False)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sample", type=int, default=0, help="onnx modules timed (0: all)")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--workdir", type=Path, help="where both sides write (default: the system temp dir)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="graphtag-bench-extract-", dir=args.workdir))
    try:
        from models import export_gpt2_24l  # beside this script

        path = export_gpt2_24l(work / "gpt2-24l.onnx")
        model = graphtag.load(path)
        boundaries = compute_boundaries(model)
        modules = [
            (tag, [v.name for v in b.inputs], [v.name for v in b.outputs])
            for tag, b in boundaries.items()
        ]
        n_nodes = len(model.graph)
        del model, boundaries
        # onnx's extractor refuses an empty input list (e.g. a module computing from
        # weights only); those modules are left out of its side (graphtag's still has them).
        accepted = [m for m in modules if m[1]]
        sample = accepted
        if 0 < args.sample < len(accepted):
            sample = random.Random(0).sample(accepted, args.sample)
        ours_times, memory_times, onnx_times = [], [], []
        for run in range(args.repeat):
            for sub in ("ours", "onnx"):
                shutil.rmtree(work / sub, ignore_errors=True)
                (work / sub).mkdir()
            total, in_memory = run_graphtag(path, work / "ours")
            ours_times.append(total)
            memory_times.append(in_memory)
            onnx_times.append(run_onnx(path, work / "onnx", sample))
            print(
                f"run {run + 1}: graphtag {ours_times[-1]:.2f}s, "
                f"onnx {onnx_times[-1]:.2f}s ({len(sample)} modules)",
                file=sys.stderr,
            )
        index = {tag: i for i, (tag, _, _) in enumerate(modules)}
        mismatched = [
            tag
            for i, (tag, _, _) in enumerate(sample)
            if not same_nodes(work / "ours" / f"m{index[tag]}.onnx", work / "onnx" / f"o{i}.onnx")
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ours = statistics.median(ours_times)
    memory = statistics.median(memory_times)
    onnx_sample = statistics.median(onnx_times)
    onnx_total = onnx_sample / len(sample) * len(accepted)
    extrapolated = len(sample) < len(accepted)
    ratio = onnx_total / ours
    result = {
        "model": "GPT-2 24L hidden 256 (dynamo, optimizer on)",
        "nodes": n_nodes,
        "modules": len(modules),
        "repeat": args.repeat,
        "workdir": str(work.parent),
        "graphtag_s": ours,
        "graphtag_runs_s": ours_times,
        "graphtag_in_memory_s": memory,
        "graphtag_in_memory_runs_s": memory_times,
        "ratio_in_memory": onnx_total / memory,
        "onnx_refused_modules": [tag for tag, inputs, _ in modules if not inputs],
        "onnx_sample_modules": len(sample),
        "onnx_sample_s": onnx_sample,
        "onnx_runs_s": onnx_times,
        "onnx_total_s": onnx_total,
        "onnx_extrapolated": extrapolated,
        "ratio": ratio,
        "sample_node_mismatches": mismatched,
    }
    note = f"extrapolated from {len(sample)} random modules" if extrapolated else "measured"
    refused = len(modules) - len(accepted)
    print(f"Extract every module of GPT-2-24L ({n_nodes} nodes, {len(modules)} modules),")
    print(
        f"median of {args.repeat} runs; each side writes one .onnx file per module "
        f"(weights inside) under {work.parent}.\n"
    )
    print("| extractor | modules timed | s (timed) | s (all modules) | ms / module |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| graphtag (load once + boundaries + extract + save) | {len(modules)} | {ours:.2f} "
        f"| {ours:.2f} | {ours / len(modules) * 1000:.1f} |"
    )
    print(
        f"| graphtag, same run without the saves (in-memory API) | {len(modules)} "
        f"| {memory:.2f} | {memory:.2f} | {memory / len(modules) * 1000:.1f} |"
    )
    print(
        f"| onnx.utils.extract_model per module | {len(sample)} | {onnx_sample:.2f} "
        f"| {onnx_total:.2f} ({len(accepted)} modules, {note}) "
        f"| {onnx_sample / len(sample) * 1000:.1f} |"
    )
    print(f"\nonnx / graphtag = {ratio:.1f}x with saves (goal >= 20x), ", end="")
    print(f"{onnx_total / memory:.1f}x against the in-memory API")
    if refused:
        print(
            f"onnx.utils.extract_model refuses modules without inputs: {refused} module(s) "
            f"left out of its total (graphtag's total includes them)"
        )
    print(f"sampled modules whose node sets differ: {len(mismatched)} {mismatched[:5]}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
