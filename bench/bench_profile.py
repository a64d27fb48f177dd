"""Benchmark: ``graphtag profile`` against ONNX Runtime's own profiling of the same runs.

For each model (exported tagged by graphtag), alternating in one process after one
warm-up of each:

* ONNX Runtime alone: ``InferenceSession`` with ``enable_profiling`` (the default
  ORT_ENABLE_ALL), the same warm-up and measured runs on the same inputs,
  ``end_profiling`` (the trace written), the session released; shown also with the optimized graph saved
  (``optimized_model_filepath``), without which the trace's node names cannot be read;
* ``graphtag profile MODEL -o profile.json``, run in-process (``graphtag.cli.main``,
  output discarded): the same session plus saving the optimized graph, retagging it,
  reading the trace, the module tree, the tables and the JSON.

Goal: graphtag / ONNX Runtime <= 1.2 (medians of ``--repeat`` pairs).

    python bench/bench_profile.py [--repeat 5] [--runs 10] [--warmup 3] [--threads N]
                                  [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import graphtag
from graphtag.cli import main as graphtag_main
from graphtag.tools.profile.inputs import make_feeds


def export_models(folder: Path) -> dict[str, Path]:
    from models import gpt2_24l

    from graphtag.exporter.examples import tiny_bert

    paths = {}
    module, inputs = tiny_bert()
    paths["BERT L-2 H-128, seq 16"] = folder / "bert.onnx"
    graphtag.export(module, inputs.args, inputs.kwargs, paths["BERT L-2 H-128, seq 16"],
                    verbose=False)  # fmt: skip
    for seq in (16, 128):
        model, kwargs = gpt2_24l(seq_len=seq)
        name = f"GPT-2 24L H-256, seq {seq}"
        paths[name] = folder / f"gpt2-{seq}.onnx"
        graphtag.export(model, (), kwargs, paths[name], verbose=False)
    return paths


def ort_alone(
    path: Path, feeds: dict, warmup: int, runs: int, *, save: bool = False, threads: int = 0
) -> float:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="graphtag-bench-ort-") as tmp:
        gc.collect()
        start = time.perf_counter()
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort_profile")
        options.log_severity_level = 3
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, as graphtag's
        if save:
            options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            options.add_session_config_entry(
                "session.optimized_model_external_initializers_file_name", "optimized.onnx.data"
            )
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            session.run(None, feeds)
        session.end_profiling()
        # Releasing the session (its profiler's events, its weights) is part of the run,
        # as it is inside graphtag profile: 0.03 s at 10 runs and 0.1 s at 100 on GPT-2.
        del session
        return time.perf_counter() - start


def graphtag_profile(path: Path, warmup: int, runs: int, threads: int = 0) -> float:
    with tempfile.TemporaryDirectory(prefix="graphtag-bench-profile-") as tmp:
        argv = ["profile", str(path), "--warmup", str(warmup), "--runs", str(runs)]
        argv += ["--threads", str(threads), "-o", str(Path(tmp) / "profile.json")]
        gc.collect()
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = graphtag_main(argv)
        seconds = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"graphtag profile {path} failed ({code})")
        return seconds


def bench(name: str, path: Path, args) -> dict:
    model = graphtag.load(path)
    feeds = make_feeds(model)  # what graphtag profile feeds (same seed, same arrays)
    ort_alone(path, feeds, args.warmup, args.runs, threads=args.threads)
    graphtag_profile(path, args.warmup, args.runs, args.threads)
    alone, saved, ours = [], [], []
    for _ in range(args.repeat):
        alone.append(ort_alone(path, feeds, args.warmup, args.runs, threads=args.threads))
        saved.append(
            ort_alone(path, feeds, args.warmup, args.runs, save=True, threads=args.threads)
        )
        ours.append(graphtag_profile(path, args.warmup, args.runs, args.threads))
    a, b = statistics.median(alone), statistics.median(ours)
    return {
        "model": name,
        "nodes": len(list(model.graph)),
        "ort_s": a,
        "ort_saved_s": statistics.median(saved),
        "graphtag_s": b,
        "ratio": b / a,
        "ort_all_s": alone,
        "graphtag_all_s": ours,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--threads", type=int, default=0, help="intra-op threads on both sides (0: default)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    print(f"load average before: {_load()}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="graphtag-bench-models-") as tmp:
        rows = [bench(name, path, args) for name, path in export_models(Path(tmp)).items()]
    print(
        f"graphtag profile vs ONNX Runtime's profiling alone, {args.warmup} warm-up + "
        f"{args.runs} runs, intra-op threads {args.threads or 'default'}, median of "
        f"{args.repeat}\n"
    )
    print(
        "| model | nodes | ORT profiling s | ORT, graph saved s | graphtag profile s | "
        "graphtag / ORT |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['model']} | {row['nodes']} | {row['ort_s']:.3f} | "
            f"{row['ort_saved_s']:.3f} | {row['graphtag_s']:.3f} | {row['ratio']:.2f} |"
        )
    print(f"\nload average after: {_load()} (2-core machine shared with other work)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def _load() -> str:
    import os

    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
