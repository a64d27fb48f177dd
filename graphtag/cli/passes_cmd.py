"""``graphtag passes list``: the registered passes with their options and docs."""

from __future__ import annotations

import argparse
import json
import textwrap

from graphtag.cli.tables import add_format_option, emit, render_table, terminal_width


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "passes",
        help="list the passes usable in pipelines",
        description="Inspect the registered passes (built-in, onnx_ir's and plugins).",
    )
    sub = parser.add_subparsers(dest="passes_command", metavar="SUBCOMMAND")
    sub.required = True
    listing = sub.add_parser(
        "list",
        help="list passes, their options and one-line docs",
        description="One entry per pass: its name, origin and one-line doc, then one line "
        "per option (type, default, description). csv: one row per option.",
    )
    add_format_option(listing)
    listing.set_defaults(func=run_list)


def _describe(spec, width: int) -> list[str]:
    """The pass's line, its doc, then its options (type, default, description)."""
    lines = [f"{spec.name}  ({spec.origin})"]
    if spec.doc:
        lines += textwrap.wrap(spec.doc, width, initial_indent="    ", subsequent_indent="    ")
    options = [(f"{o.name}: {o.type_name} = {o.default!r}", o.description) for o in spec.options]
    if options:
        table = render_table(("option", "description"), options, width=width - 4)
        lines += [f"    {line}".rstrip() for line in table.splitlines()[2:]]  # no header
    return lines


def run_list(args: argparse.Namespace) -> int:
    from graphtag.pipeline import registry

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
    elif args.format == "csv":
        rows = [
            (s.name, s.origin, s.doc, o.name, o.type_name, o.default, o.description)
            for s in specs
            for o in (s.options or [None])
            if o is not None
        ]
        rows += [(s.name, s.origin, s.doc, "", "", "", "") for s in specs if not s.options]
        order = {s.name: i for i, s in enumerate(specs)}
        rows.sort(key=lambda row: order[row[0]])
        headers = ("pass", "origin", "doc", "option", "type", "default", "description")
        emit(headers, rows, "csv")
    else:
        width = terminal_width()
        print("\n".join(line for spec in specs for line in _describe(spec, width)))
    return 0  # the registry has warned about plugins it could not load
