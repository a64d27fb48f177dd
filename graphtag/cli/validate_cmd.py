"""``graphtag validate``: check a tagged model, one line per rule; exit 1 when one fails."""

from __future__ import annotations

import argparse
import json

from graphtag.cli.tables import add_format_option, emit

# The rules in report order (graphtag.checks.validation.RULES; a test keeps them equal).
# Listed here so that --help does not import onnx.
RULE_NAMES = (
    "onnx-checker",
    "strings",
    "tag-format",
    "tags-in-hierarchy",
    "node-coverage",
    "parameter-coverage",
    "orphan-nodes",
    "cycles",
    "consumers",
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "validate",
        help="check a tagged model (ONNX checker, strings, tags, coverage, dead code, cycles)",
        description=(
            "Run every validation rule on MODEL and print one line per rule with its status "
            "(PASS, FAIL or SKIP) and a detail. Exit status: 0 when no rule fails, 1 when "
            "one does, 2 when MODEL cannot be read. MODEL is never modified."
        ),
        epilog=(
            "rules: "
            + ", ".join(RULE_NAMES)
            + "\nThe rules are documented in graphtag/checks/validation.py "
            "(pydoc graphtag.checks.validation).\n"
            "--format json lists every offending item of every rule; csv has one row per rule."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL.onnx", help="input ONNX file")
    add_format_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graphtag.checks.validation import validate
    from graphtag.core.io import load

    report = validate(load(args.model), path=args.model)
    rows = [(r.rule, r.status, r.detail) for r in report.results]
    if args.format == "json":
        data = {"model": str(args.model), **report.to_json_dict()}
        print(json.dumps(data, indent=2, sort_keys=True))
    elif args.format == "csv":
        emit(("rule", "status", "detail", "items"), [
            (*row, "\n".join(r.items)) for row, r in zip(rows, report.results)
        ], "csv")  # fmt: skip
    else:
        counts = report.counts()
        emit(("rule", "status", "detail"), rows, "table")
        print(
            f"\n{args.model}: {counts['PASS']} passed, {counts['FAIL']} failed, "
            f"{counts['SKIP']} skipped"
        )
    return 0 if report.passed else 1
