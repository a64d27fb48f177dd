"""``graphtag run``: apply a pipeline of passes to an ONNX file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from graphtag.cli.tables import add_format_option, emit


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
        help="print per pass its wall time, modified flag, statistics and diagnostics "
        "(--format json or csv prints them as data, and implies this option)",
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
    add_format_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graphtag.cli.outputs import guard

    source, output = Path(args.model), Path(args.output)
    guard({"-o": output}, [source, args.pipeline_file])  # before any import or work

    from graphtag.cli.outputs import load_input
    from graphtag.core.io import save
    from graphtag.pipeline import Pipeline

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
    dumps = {f"--dump-after {p.name}": p for p in pipeline.dump_paths()}
    guard({"-o": output, **dumps}, [source, args.pipeline_file])
    model = load_input(source, {"-o": output, **dumps})
    result = pipeline(model)
    save(result.model, output)
    if args.time_passes or args.format != "table":
        print_time_passes(pipeline.report, args.format)
    print(f"wrote {output}", file=sys.stderr)
    return 0


def print_time_passes(report, fmt: str = "table") -> None:
    """One row per pass (ms, modified, statistics), then each pass's diagnostics."""
    if fmt == "json":
        data = {
            "passes": [
                {
                    "name": r.name,
                    "ms": round(r.seconds * 1000, 3),
                    "modified": r.modified,
                    "stats": r.stats,
                    "diagnostics": r.diagnostics,
                }
                for r in report.records
            ],
            "total_ms": round(report.total_seconds * 1000, 3),
        }
        emit((), [], "json", json_data=data)
        return
    stats = [" ".join(f"{k}={v}" for k, v in r.stats.items()) for r in report.records]
    if fmt == "csv":
        rows = [
            (
                r.name,
                f"{r.seconds * 1000:.3f}",
                str(r.modified).lower(),
                text,
                "; ".join(r.diagnostics),
            )
            for r, text in zip(report.records, stats)
        ]
        emit(("pass", "ms", "modified", "stats", "diagnostics"), rows, "csv")
        return
    rows = [
        (r.name, f"{r.seconds * 1000:.1f}", "yes" if r.modified else "no", text)
        for r, text in zip(report.records, stats)
    ]
    rows.append(("total", f"{report.total_seconds * 1000:.1f}", "", ""))
    emit(("pass", "ms", "modified", "stats"), rows, "table", align="lrll")
    notes = [f"  {r.name}: {note}" for r in report.records for note in r.diagnostics]
    if notes:
        print("\n".join(["diagnostics:", *notes]))
