"""``graphtag verify MODEL``: check every extracted module against PyTorch; exit 1 on a miss."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import textwrap
import time

from graphtag.cli.model_args import (
    MODEL_HELP,
    add_filter_options,
    add_loading_options,
    filter_config_from_args,
    inputs_from_args,
    load_from_args,
)
from graphtag.cli.tables import render_table


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "verify",
        help="check that every module's extracted ONNX subgraph reproduces PyTorch",
        description=textwrap.fill(
            "Export MODEL (--exporter, auto by default; optimize=False unless --optimize), "
            "capture every kept module's forward outputs in one eager PyTorch run (with the "
            "implementation switches the export route set), extract every module "
            "from the ONNX model, run it in onnxruntime on the boundary values of a full "
            "onnxruntime run, and check that each captured tensor is reproduced by one of "
            "the extracted module's outputs (same shape, max abs diff <= --tolerance). "
            "Outputs that are the module's own inputs passed through are not compared. "
            "A module called several times is checked on every call. Status per module: "
            "OK, MISMATCH, NOT-EXECUTED, NO-NODES (no node left, e.g. folded by the "
            "optimizer) or ERROR. Exit status 1 when a module is MISMATCH or ERROR. " + MODEL_HELP
        ),
        epilog=(
            "example (offline, embedded tiny BERT):\n"
            "  graphtag verify graphtag.exporter.examples:tiny_bert"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL")
    parser.add_argument(
        "--optimize",
        action="store_true",
        help="verify the optimized export (optimize=True; fused modules may have no nodes)",
    )
    parser.add_argument(
        "--exporter",
        choices=("auto", "dynamo", "torchscript"),
        default="auto",
        help="export route, as for graphtag export (default auto)",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset version")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        metavar="ATOL",
        help="largest max abs difference accepted (default 1e-4)",
    )
    add_loading_options(parser)
    add_filter_options(parser)
    parser.add_argument("--format", choices=("table", "json"), default="table")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show torch's own progress messages, logs and warnings during the export",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graphtag.cli.export_cmd import export_hint, print_torch_warnings
    from graphtag.core.errors import GraphtagError
    from graphtag.exporter.noise import quiet_torch
    from graphtag.exporter.verify import TOLERANCE, verify_modules

    tolerance = TOLERANCE if args.tolerance is None else args.tolerance
    if not tolerance >= 0:
        raise GraphtagError(f"--tolerance must be a number >= 0, got {args.tolerance}")
    stderr = sys.stderr  # quiet_torch swallows what torch prints; progress still shows

    def say(text: str) -> None:
        print(text if text.startswith("[") else f"  {text}", file=stderr, flush=True)

    started = time.perf_counter()
    print(f"loading {args.model}", file=stderr, flush=True)
    loaded = load_from_args(args)
    inputs = inputs_from_args(args, loaded)
    options = {} if args.opset is None else {"opset_version": args.opset}
    warnings: list[str] = []
    try:
        with quiet_torch(args.verbose, warn=warnings.append):
            checks = verify_modules(
                loaded.module,
                inputs,
                optimize=args.optimize,
                tolerance=tolerance,
                filter_config=filter_config_from_args(args),
                progress=say,
                exporter=args.exporter,
                verbose=args.verbose,
                **options,
            )
    except GraphtagError as exc:
        raise GraphtagError(f"{exc}{export_hint(exc, args.exporter)}") from exc
    finally:
        print_torch_warnings(warnings)
    counts = {status: sum(1 for c in checks if c.status == status) for status in _ORDER}
    failed = any(check.failed for check in checks)
    if args.format == "json":
        data = {
            "model": args.model,
            "optimize": args.optimize,
            "tolerance": tolerance,
            "counts": counts,
            "modules": [_json_check(check) for check in checks],
        }
        print(json.dumps(data, indent=2))
        return 1 if failed else 0
    rows = [
        (
            check.tag,
            f"{check.matched}/{check.total}" if check.calls else "-",
            _diff_text(check.max_abs_diff),
            check.status_text(),
        )
        for check in checks
    ]
    print(render_table(("module", "outputs matched", "max abs diff", "status"), rows))
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    elapsed = time.perf_counter() - started
    print(f"\n{len(checks)} modules: {summary} ({elapsed:.1f} s)")
    for check in checks:
        if check.status == "MISMATCH":
            print(f"{check.tag}: {check.reason}")
    return 1 if failed else 0


_ORDER = ("OK", "MISMATCH", "ERROR", "NO-NODES", "NOT-EXECUTED")


def _json_check(check) -> dict:
    data = dataclasses.asdict(check)
    diff = data["max_abs_diff"]
    if diff is not None and not math.isfinite(diff):
        data["max_abs_diff"] = str(diff)  # JSON has no infinity
    return data


def _diff_text(diff: float | None) -> str:
    return "-" if diff is None else f"{diff:.2e}"
