"""``graphtag compare --topology A.onnx B.onnx``."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "compare",
        help="compare two ONNX files (topology: everything but metadata)",
        description=(
            "Compare two ONNX models. With --topology: same nodes in the same order with the "
            "same op types, inputs, outputs and attributes, same graph inputs/outputs, "
            "initializers, opsets and functions; metadata is ignored. Exit 0 when identical, "
            "1 with a readable diff otherwise."
        ),
    )
    parser.add_argument("a", metavar="A.onnx")
    parser.add_argument("b", metavar="B.onnx")
    parser.add_argument(
        "--topology",
        action="store_true",
        required=True,
        help="compare graph structure, ignoring metadata",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graphtag.checks.compare import compare_topology
    from graphtag.cli.outputs import load_input

    diff = compare_topology(load_input(args.a), load_input(args.b))
    print(diff.report())
    return 0 if diff.identical else 1
