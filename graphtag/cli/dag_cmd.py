"""``graphtag dag MODEL.onnx -o dag.json [--ops ops.json]``: per-module DAGs as JSON."""

from __future__ import annotations

import argparse
import sys
import textwrap


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "dag",
        help="write every module's own nodes and the edges among them as JSON",
        description=textwrap.fill(
            'Write one JSON object keyed by module tag, each {"nodes": [...], "edges": '
            "[[src, dst], ...]}: the module's own nodes (tagged exactly with its tag, not "
            "its descendants') and the edges among them (src produces a value dst "
            "consumes). --ops also writes operation metadata keyed by node name (op_type, "
            "inputs, outputs, tags with context modules) plus every initializer "
            '(op_type "Initializer", tags of the modules using it). Files are written '
            "atomically; MODEL is never modified."
        ),
        epilog="example:\n  graphtag dag bert.onnx -o dag.json --ops ops.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL.onnx", help="tagged ONNX file")
    parser.add_argument("-o", "--output", required=True, metavar="DAG.json")
    parser.add_argument("--ops", metavar="OPS.json", help="also write operation metadata")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graphtag.cli.outputs import guard

    outputs = {"-o": args.output, "--ops": args.ops}
    guard(outputs, [args.model])  # before the work: a bad path fails at once

    from graphtag.cli.outputs import load_input
    from graphtag.core import metadata
    from graphtag.core.errors import GraphtagError
    from graphtag.tools.dag import module_dags, operation_metadata, write_json

    model = load_input(args.model, outputs)
    if not any(metadata.node_tag(node) for node in model.graph):
        raise GraphtagError(f"{args.model}: no node carries a module tag (export it with graphtag)")
    dags = module_dags(model)
    write_json(dags, args.output)
    ops = None
    if args.ops:
        ops = operation_metadata(model)
        write_json(ops, args.ops)
    nodes = sum(len(d["nodes"]) for d in dags.values())
    edges = sum(len(d["edges"]) for d in dags.values())
    print(f"{args.output}: {len(dags)} modules, {nodes} nodes, {edges} edges", file=sys.stderr)
    if ops is not None:
        print(f"{args.ops}: {len(ops)} operations", file=sys.stderr)
    return 0
