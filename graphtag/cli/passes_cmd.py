"""``graphtag passes list``: the registered passes with their options and docs."""

from __future__ import annotations

import argparse
import json
import sys

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


def _describe(spec) -> list[str]:
    """The pass's line, its doc, then one line per option (type, default, description)."""
    lines = [f"{spec.name}  ({spec.origin})"]
    if spec.doc:
        lines.append(f"    {spec.doc}")
    options = [(f"{o.name}: {o.type_name} = {o.default!r}", o.description) for o in spec.options]
    width = max((len(head) for head, _ in options), default=0)
    lines += [f"    {head.ljust(width)}  {text}".rstrip() for head, text in options]
    return lines


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
                    {
                        "name": o.name,
                        "type": o.type_name,
                        "default": o.default,
                        "description": o.description,
                    }
                    for o in s.options
                ],
            }
            for s in specs
        ]
        print(json.dumps(data, indent=2, default=str))
    else:
        print("\n".join(line for spec in specs for line in _describe(spec)))
    for broken in reg.broken:
        print(
            f"graphtag: warning: pass '{broken.name}' ({broken.origin}) not loaded: {broken.error}",
            file=sys.stderr,
        )
    return 0
