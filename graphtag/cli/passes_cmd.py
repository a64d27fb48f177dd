"""``graphtag passes list``: the registered passes with their options and docs."""

from __future__ import annotations

import argparse
import json
import sys

from graphtag.cli.tables import render_table
from graphtag.pipeline import registry


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "passes",
        help="list the passes usable in pipelines",
        description="Inspect the registered passes (built-in, onnx_ir's and plugins).",
    )
    sub = parser.add_subparsers(dest="passes_command", metavar="SUBCOMMAND")
    sub.required = True
    listing = sub.add_parser("list", help="list passes, their options and one-line docs")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.set_defaults(func=run_list)


def _options_text(spec) -> str:
    return ", ".join(f"{o.name}:{o.type_name}={o.default}" for o in spec.options) or "-"


def run_list(args: argparse.Namespace) -> int:
    reg = registry()
    specs = reg.specs()
    if args.format == "json":
        data = [
            {
                "name": s.name,
                "origin": s.origin,
                "doc": s.doc,
                "options": [
                    {"name": o.name, "type": o.type_name, "default": o.default} for o in s.options
                ],
            }
            for s in specs
        ]
        print(json.dumps(data, indent=2, default=str))
    else:
        rows = [(s.name, s.origin, _options_text(s), s.doc) for s in specs]
        print(render_table(("pass", "from", "options", "description"), rows))
    for broken in reg.broken:
        print(
            f"graphtag: warning: pass '{broken.name}' ({broken.origin}) not loaded: {broken.error}",
            file=sys.stderr,
        )
    return 0
