"""``graphtag report MODEL.onnx -o report.html [--profile P.json]``: an HTML report."""

from __future__ import annotations

import argparse
import sys
import textwrap


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "report",
        help="write a self-contained HTML report: module tree, hierarchy chart, module graph",
        description=textwrap.fill(
            "Write one HTML file that works offline (no network, everything inline): the "
            "collapsible module tree with per module its class, nodes, parameters and "
            "bytes, op types, shared parameters, functions and inferred tags; a treemap or "
            "sunburst of the hierarchy sized by parameters, bytes, nodes or time; the "
            "graph of a chosen module's children and the values flowing between them; "
            "search by tag, class or op type. --profile adds time columns from a "
            "graphtag.profile/1 JSON file. The file is written atomically; MODEL is never "
            "modified."
        ),
        epilog=(
            "profile schema (graphtag.profile/1):\n"
            '  {"schema": "graphtag.profile/1", "total_ms": 12.5, "modules": {TAG: '
            '{"self_ms": 0.4, "total_ms": 3.1, "calls": 1, "nodes": 12}}}\n'
            "example:\n"
            "  graphtag report bert.onnx -o bert.html"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL.onnx", help="ONNX file (tagged by graphtag)")
    parser.add_argument("-o", "--output", required=True, metavar="REPORT.html")
    parser.add_argument("--profile", metavar="PROFILE.json", help="per-module times to show")
    parser.add_argument("--title", help="title shown in the report (default: the file name)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from graphtag.cli.outputs import guard

    guard({"-o": args.output}, [args.model, args.profile])

    from graphtag.cli.outputs import load_input
    from graphtag.core.io import write_text_atomic
    from graphtag.tools.report import load_profile, render_html, report_data

    profile = load_profile(args.profile) if args.profile is not None else None
    model = load_input(args.model, {"-o": args.output})
    title = args.title or Path(args.model).name
    data = report_data(model, title=title, profile=profile)
    write_text_atomic(args.output, render_html(data))
    size = Path(args.output).stat().st_size
    model = data["model"]
    print(
        f"{args.output}: {model['modules']} modules, {model['nodes']} nodes, {size / 1e6:.1f} MB",
        file=sys.stderr,
    )
    for note in data["notes"]:
        print(f"graphtag: note: {note}", file=sys.stderr)
    return 0
