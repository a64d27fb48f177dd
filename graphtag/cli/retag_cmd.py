"""``graphtag retag``: tag a model rewritten by another tool from its tagged reference."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from graphtag.cli.tables import add_format_option, emit
from graphtag.core.errors import GraphtagError

_MAX_LISTED = 50


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "retag",
        help="tag a model rewritten by another tool (ONNX Runtime, onnxslim, ...) from its reference",
        description=(
            "Give every node of REWRITTEN (a model another tool made from REFERENCE: ONNX\n"
            "Runtime's optimized graph, onnxruntime.transformers fusions, onnxslim,\n"
            "onnx-graphsurgeon surgery) the tag it deserves, and write it to OUT. Nodes\n"
            "are matched by value names first, then structurally where names changed;\n"
            "fused nodes get the lowest common ancestor of the modules they replaced;\n"
            "tag-propagation tags the rest. OUT also gets REFERENCE's hierarchy, so every\n"
            "other command works on it. Only metadata changes; inputs are never modified."
        ),
        epilog=(
            "example:\n"
            "  graphtag retag model.onnx model.ort.onnx -o model.ort.tagged.onnx\n"
            "Each node's pkg.graphtag.tag_source says how it was matched: retag:value,\n"
            "retag:structural, retag:fused, retag:rewritten, or inferred:<rule>."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "reference", metavar="REFERENCE.onnx", help="the tagged model (graphtag export)"
    )
    parser.add_argument("rewritten", metavar="REWRITTEN.onnx", help="the model made from it")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="output file")
    parser.add_argument(
        "--force",
        action="store_true",
        help="retag even when few values match REFERENCE (normally an error: wrong reference?)",
    )
    parser.add_argument(
        "--min-match-rate",
        type=float,
        default=None,
        metavar="R",
        help="share of REWRITTEN's values that must be found in REFERENCE (default 0.33)",
    )
    parser.add_argument(
        "--exact",
        action="store_true",
        help="copy every metadata entry of matched nodes and values, not only the tags",
    )
    add_format_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graphtag.cli.outputs import guard

    reference, rewritten, output = Path(args.reference), Path(args.rewritten), Path(args.output)
    guard({"-o": output}, [reference, rewritten])  # fail before the work, not after
    rate = args.min_match_rate
    if rate is not None and not 0.0 <= rate <= 1.0:
        raise GraphtagError(f"--min-match-rate must lie between 0 and 1, got {rate}")

    from graphtag.cli.outputs import load_input
    from graphtag.core.io import save
    from graphtag.passes.retag import DEFAULT_MIN_MATCH_RATE, retag

    rate = DEFAULT_MIN_MATCH_RATE if rate is None else rate
    ref_model = load_input(reference, {"-o": output})
    model = load_input(rewritten, {"-o": output})
    report = retag(
        ref_model,
        model,
        force=args.force,
        min_match_rate=rate,
        exact=args.exact,
        reference_name=str(reference),
    )
    save(report.model, output)
    if args.format == "json":
        data = {
            "reference": str(reference),
            "rewritten": str(rewritten),
            "output": str(output),
            "nodes": report.nodes,
            "kinds": dict(sorted(report.counts.items())),
            "values_matched": report.values_matched,
            "values_total": report.values_total,
            "match_rate": round(report.match_rate, 4),
            "ambiguous": report.ambiguous,
            "reference_inlined": report.flattened,
            "unmatched": report.unmatched,
        }
        print(json.dumps(data, indent=2))
    elif args.format == "csv":
        emit(("match", "nodes"), sorted(report.counts.items()), "csv")
    else:
        _print_table(report, rewritten, reference)
    print(f"wrote {output}", file=sys.stderr)
    return 0


def _print_table(report, rewritten: Path, reference: Path) -> None:
    total = report.nodes or 1
    rows = [
        (kind, count, f"{100 * count / total:.1f}%")
        for kind, count in sorted(report.counts.items(), key=lambda item: (-item[1], item[0]))
    ]
    print(f"{rewritten}: {report.nodes} nodes tagged from {reference}")
    emit(("match", "nodes", "share"), rows, "table", align="lrr")
    print(
        f"\nvalues found in the reference: {report.values_matched} of {report.values_total} "
        f"({report.match_rate:.0%})"
        + (
            f"; {report.ambiguous} structural matches among identical nodes"
            if report.ambiguous
            else ""
        )
        + ("; reference functions inlined to match" if report.flattened else "")
    )
    if not report.unmatched:
        print("not matched: none")
        return
    print(f"not matched ({len(report.unmatched)}, tagged by tag-propagation):")
    for line in report.unmatched[:_MAX_LISTED]:
        print(f"  {line}")
    if len(report.unmatched) > _MAX_LISTED:
        print(f"  ... {len(report.unmatched) - _MAX_LISTED} more (--format json lists them all)")
