"""``graphtag run``: apply a pipeline of passes to an ONNX file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from graphtag.cli.tables import render_table
from graphtag.core.errors import GraphtagError


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "run",
        help="run a pipeline of passes on an ONNX file",
        description=(
            "Load MODEL, run the passes of the pipeline in order, write the result to OUT. "
            "The input file is never modified."
        ),
        epilog=(
            "pipeline syntax: pass[{option=value,...}][,pass...], e.g.\n"
            '  -p "toposort,ir.remove-unused-nodes"\n'
            "See 'graphtag passes list' for the passes and their options."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL.onnx", help="input ONNX file")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-p", "--pipeline", help="textual pipeline")
    source.add_argument("--pipeline-file", metavar="TOML", help="pipeline as [[pass]] tables")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="output file")
    parser.add_argument(
        "--time-passes",
        action="store_true",
        help="print per pass its wall time, modified flag, statistics and diagnostics",
    )
    parser.add_argument(
        "--verify-each",
        action="store_true",
        help="run onnx.checker and graphtag's invariants after every pass",
    )
    parser.add_argument(
        "--dump-after",
        action="append",
        default=[],
        metavar="PASS",
        help="save the model after the named pass (repeatable)",
    )
    parser.add_argument(
        "--dump-dir", default=".", metavar="DIR", help="folder for --dump-after files"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graphtag.core.io import load, save
    from graphtag.pipeline import Pipeline

    source, output = Path(args.model), Path(args.output)
    if output.exists() and source.exists() and output.resolve() == source.resolve():
        raise GraphtagError(f"{output}: output would overwrite the input; choose another path")
    options = {
        "verify_each": args.verify_each,
        "dump_after": args.dump_after,
        "dump_dir": args.dump_dir,
        "on_pass_start": lambda i, name: print(f"[{i + 1}] {name}", file=sys.stderr),
    }
    if args.pipeline is not None:
        pipeline = Pipeline.from_text(args.pipeline, **options)
    else:
        pipeline = Pipeline.from_toml(args.pipeline_file, **options)
    model = load(source)
    result = pipeline(model)
    save(result.model, output)
    if args.time_passes:
        print(time_passes_table(pipeline.report))
    print(f"wrote {output}", file=sys.stderr)
    return 0


def time_passes_table(report) -> str:
    """One row per pass (ms, modified, statistics), then each pass's diagnostics."""
    rows = [
        (
            r.name,
            f"{r.seconds * 1000:.1f}",
            "yes" if r.modified else "no",
            " ".join(f"{k}={v}" for k, v in r.stats.items()),
        )
        for r in report.records
    ]
    rows.append(("total", f"{report.total_seconds * 1000:.1f}", "", ""))
    lines = [render_table(("pass", "ms", "modified", "stats"), rows, align="lrll")]
    notes = [f"  {r.name}: {note}" for r in report.records for note in r.diagnostics]
    if notes:
        lines += ["diagnostics:", *notes]
    return "\n".join(lines)
