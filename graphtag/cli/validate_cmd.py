"""``graphtag validate``: check a tagged model, one line per rule; exit 1 when one fails."""

from __future__ import annotations

import argparse
import json

from graphtag.cli.tables import render_table


def add_parser(commands: argparse._SubParsersAction) -> None:
    from graphtag.checks.validation import RULES

    parser = commands.add_parser(
        "validate",
        help="check a tagged model (ONNX checker, tags, coverage, dead code, cycles)",
        description=(
            "Run every validation rule on MODEL and print one line per rule with its status "
            "(PASS, FAIL or SKIP) and a detail. Exit status: 0 when no rule fails, 1 when "
            "one does, 2 when MODEL cannot be read. MODEL is never modified."
        ),
        epilog=(
            "rules: "
            + ", ".join(RULES)
            + "\nThe rules are documented in graphtag/validation.py (pydoc graphtag.checks.validation)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL.onnx", help="input ONNX file")
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graphtag.checks.validation import validate
    from graphtag.core.io import load

    report = validate(load(args.model), path=args.model)
    if args.format == "json":
        data = {"model": str(args.model), **report.to_json_dict()}
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        rows = [(r.rule, r.status, r.detail) for r in report.results]
        counts = report.counts()
        print(render_table(("rule", "status", "detail"), rows))
        print(
            f"\n{args.model}: {counts['PASS']} passed, {counts['FAIL']} failed, "
            f"{counts['SKIP']} skipped"
        )
    return 0 if report.passed else 1
