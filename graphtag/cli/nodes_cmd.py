"""``graphtag nodes``: the nodes of the modules a tag pattern names, for tools taking node lists."""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "nodes",
        help="list the nodes (values, initializers) of the modules a tag pattern selects",
        description=(
            "Print the names of the nodes of every module --module PATTERN matches, one per\n"
            "line, so the list pipes into any tool that takes node names (quantization\n"
            "exclusions, float16 block lists). A module's nodes are those tagged with its tag\n"
            "or a descendant's, plus the nodes inside their control-flow bodies. Patterns:\n"
            "'*' and '?' stay within a tag segment, '**' crosses segments, a pattern without\n"
            "a leading '/' matches the end of a tag, 'A|B' either. A pattern that is exactly\n"
            "a tag selects that tag, even one with '[', ']' or '|' (ModuleDict keys); '[[]',\n"
            "'[]]' and '[|]' match those characters inside a glob. MODEL is never modified."
        ),
        epilog=(
            "examples:\n"
            "  graphtag nodes model.onnx --module '*/*Attention*'\n"
            "  graphtag nodes model.onnx --module '/BertModel/BertEncoder' --exclude '*/LayerNorm'\n"
            "  graphtag nodes model.onnx --module '*/BertLayer.0' --initializers\n"
            "  graphtag nodes model.onnx --module '*/BertLayer.*' --format json\n"
            "A pattern matching no module is an error naming the closest tags."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL.onnx", help="input ONNX file (tagged)")
    parser.add_argument(
        "--module",
        required=True,
        action="append",
        metavar="PATTERN",
        help="tag pattern of the modules to select (repeatable: any of them)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        metavar="PATTERN",
        help="leave out the nodes of these modules and their descendants (repeatable)",
    )
    parser.add_argument(
        "--self-only",
        action="store_true",
        help="only nodes tagged with a matched module itself, not its descendants",
    )
    parser.add_argument(
        "--with-contexts",
        action="store_true",
        help="also nodes whose pkg.graphtag.contexts name a selected module "
        "(residual adds, fused nodes)",
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--values", action="store_true", help="print the values the nodes compute instead"
    )
    what.add_argument(
        "--initializers",
        action="store_true",
        help="print the initializers the nodes read instead",
    )
    parser.add_argument(
        "--format",
        choices=("lines", "json"),
        default="lines",
        help="lines: one name per line (default); json: modules, nodes, values, initializers",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graphtag.analysis.selection import select
    from graphtag.core import metadata
    from graphtag.core.io import load

    model = load(args.model)
    selection = select(
        model,
        args.module,  # each --module read on its own: an exact tag may contain '|'
        exclude=args.exclude,
        self_only=args.self_only,
        with_contexts=args.with_contexts,
    )
    nodes = selection.all_nodes()
    if not nodes:
        print(
            f"graphtag: warning: {len(selection.modules)} module(s) matched, but no node of "
            "the main graph is left in the selection",
            file=sys.stderr,
        )
    if args.format == "json":
        data = {
            "model": str(args.model),
            "pattern": selection.pattern,
            "exclude": selection.exclude,
            "self_only": selection.self_only,
            "with_contexts": selection.with_contexts,
            "modules": selection.modules,
            "excluded_modules": selection.excluded_modules,
            "nodes": [
                {
                    "name": node.name,
                    "op_type": node.op_type,
                    "domain": node.domain,
                    "module": metadata.node_tag(node),
                }
                for node in nodes
            ],
            "values": [v.name for v in selection.values()],
            "initializers": [v.name for v in selection.initializers()],
        }
        print(json.dumps(data, indent=1))
        return 0
    if args.values:
        names = [v.name for v in selection.values()]
    elif args.initializers:
        names = [v.name for v in selection.initializers()]
    else:
        names = [node.name for node in nodes]
    unnamed = sum(1 for name in names if not name)
    if unnamed:
        print(
            f"graphtag: warning: {unnamed} selected item(s) have no name and are not listed",
            file=sys.stderr,
        )
    sys.stdout.write("".join(f"{name}\n" for name in names if name))
    return 0
