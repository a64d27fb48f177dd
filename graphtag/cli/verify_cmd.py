"""``graphtag verify MODEL``: check every extracted module against PyTorch; exit 1 on a miss."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import textwrap
import time

from graphtag.cli import model_args
from graphtag.cli.tables import add_format_option, emit


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
            "the extracted module's values (same shape, every element within "
            "--atol + --rtol * |torch value|, as numpy.allclose): by one of its outputs when "
            "the model uses the tensor after the call, by any value the module computes "
            "when only the call itself uses it. Outputs that are the module's own inputs "
            "passed through are not compared. A module called several times is checked on "
            "every call. Status per module: OK, UNUSED (some outputs nothing in the model "
            "uses have no node: the exporter removed them; every other output matched), "
            "CONSTANT (some outputs do not depend on the model's inputs and only a constant "
            "of the graph reproduces them: the exporter folded them into their consumers; "
            "every other output matched), "
            "MISMATCH, NOT-EXECUTED, NO-NODES (no node left, e.g. folded by the optimizer) "
            "or ERROR. Exit status 1 when a module is MISMATCH or ERROR. " + model_args.MODEL_HELP
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
    model_args.add_export_options(parser, "export route, as for graphtag export (default auto)")
    parser.add_argument(
        "--rtol",
        type=float,
        default=None,
        help="relative tolerance, as in numpy.allclose (default 1e-3)",
    )
    parser.add_argument(
        "--atol",
        type=float,
        default=None,
        help="absolute tolerance, scaled by max(1, the largest |value| of the PyTorch "
        "tensor) (default 1e-4)",
    )
    model_args.add_loading_options(parser)
    model_args.add_filter_options(parser)
    add_format_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graphtag.cli.export_cmd import export_hint, print_torch_warnings
    from graphtag.core.errors import GraphtagError
    from graphtag.exporter.noise import quiet_torch
    from graphtag.exporter.verify import ATOL, RTOL, STATUSES, verify_modules

    rtol = RTOL if args.rtol is None else args.rtol
    atol = ATOL if args.atol is None else args.atol
    for name, value in (("--rtol", rtol), ("--atol", atol)):
        if not (value >= 0 and math.isfinite(value)):
            raise GraphtagError(f"{name} must be a finite number >= 0, got {value}")
    stderr = sys.stderr  # quiet_torch swallows what torch prints; progress still shows

    def say(text: str) -> None:
        print(text if text.startswith("[") else f"  {text}", file=stderr, flush=True)

    started = time.perf_counter()
    print(f"loading {args.model}", file=stderr, flush=True)
    loaded = model_args.load_from_args(args)
    inputs = model_args.inputs_from_args(args, loaded)
    options = {} if args.opset is None else {"opset_version": args.opset}
    warnings: list[str] = []
    try:
        with quiet_torch(args.verbose, warn=warnings.append):
            checks = verify_modules(
                loaded.module,
                inputs,
                optimize=args.optimize,
                rtol=rtol,
                atol=atol,
                filter_config=model_args.filter_config_from_args(args),
                progress=say,
                exporter=args.exporter,
                verbose=args.verbose,
                **options,
            )
    except GraphtagError as exc:
        raise GraphtagError(f"{exc}{export_hint(exc, args.exporter)}") from exc
    finally:
        print_torch_warnings(warnings)
    counts = {status: sum(1 for c in checks if c.status == status) for status in STATUSES}
    failed = any(check.failed for check in checks)
    if args.format == "json":
        data = {
            "model": args.model,
            "optimize": args.optimize,
            "rtol": rtol,
            "atol": atol,
            "counts": counts,
            "modules": [_json_check(check) for check in checks],
        }
        print(json.dumps(data, indent=2))
        return 1 if failed else 0
    if args.format == "csv":
        header = ("module", "status", "matched", "total", "max_abs_diff", "max_rel_diff", "reason")
        rows = [
            (c.tag, c.status, c.matched, c.total, c.max_abs_diff, c.max_rel_diff, c.reason)
            for c in checks
        ]
        emit(header, rows, "csv")
        return 1 if failed else 0
    rows = [
        (
            check.tag,
            f"{check.matched}/{check.total}" if check.calls else "-",
            _diff_text(check.max_abs_diff),
            _diff_text(check.max_rel_diff),
            check.status_text(),
        )
        for check in checks
    ]
    header = ("module", "outputs matched", "max abs diff", "max rel diff", "status")
    emit(header, rows, "table")
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    elapsed = time.perf_counter() - started
    print(f"\n{len(checks)} modules: {summary} (rtol {rtol:g}, atol {atol:g}; {elapsed:.1f} s)")
    for check in checks:
        if check.status == "MISMATCH":
            print(f"{check.tag}: {check.reason}")
    return 1 if failed else 0


def _json_check(check) -> dict:
    data = dataclasses.asdict(check)
    for key in ("max_abs_diff", "max_rel_diff"):
        diff = data[key]
        if diff is not None and not math.isfinite(diff):
            data[key] = str(diff)  # JSON has no infinity
    return data


def _diff_text(diff: float | None) -> str:
    return "-" if diff is None else f"{diff:.2e}"
