"""``graphtag snapshot`` and ``graphtag zoo check``: golden regression checks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from graphtag.cli.tables import add_format_option, emit


def add_parser(commands: argparse._SubParsersAction) -> None:
    snap = commands.add_parser(
        "snapshot",
        help="canonical JSON snapshot of a tagged export",
        description="Print (or write with -o) the canonical, deterministic JSON snapshot of "
        "MODEL: module tags, per-module ops and boundary counts, tag sources, contexts, "
        "shared parameters, functions, opsets and graph inputs/outputs.",
    )
    snap.add_argument("model", metavar="MODEL.onnx")
    snap.add_argument("-o", "--output", metavar="FILE.json")
    snap.set_defaults(func=run_snapshot)

    zoo = commands.add_parser(
        "zoo",
        help="export a zoo of models and compare with golden snapshots",
        description="Golden regression checks over a zoo of models (see graphtag.exporter.zoo): "
        "each model is loaded and exported by the library in its own worker process.",
    )
    sub = zoo.add_subparsers(dest="zoo_command", metavar="SUBCOMMAND")
    sub.required = True
    check = sub.add_parser("check", help="export each model and compare with DIR/<name>.json")
    check.add_argument("zoo_file", metavar="ZOO.toml")
    check.add_argument("--golden", required=True, metavar="DIR", help="golden snapshot folder")
    check.add_argument("--update", action="store_true", help="rewrite the golden files")
    check.add_argument(
        "-j", "--jobs", type=int, default=1, help="models exported at once (one process each)"
    )
    check.add_argument(
        "--shard",
        metavar="K/N",
        help="check only shard K of N: the models at positions K, K+N, K+2N, ... of the zoo "
        "file (1-based); the N shards are disjoint and together cover the zoo",
    )
    add_format_option(check)
    check.set_defaults(func=run_zoo_check)


def run_snapshot(args: argparse.Namespace) -> int:
    from graphtag.cli.outputs import guard

    guard({"-o": args.output}, [args.model])

    from graphtag.cli.outputs import load_input
    from graphtag.core.io import write_text_atomic
    from graphtag.tools.snapshot import dumps, snapshot

    model = load_input(args.model, {"-o": args.output})
    text = dumps(snapshot(model))
    if args.output:
        write_text_atomic(Path(args.output), text)
    else:
        sys.stdout.write(text)
    return 0


def run_zoo_check(args: argparse.Namespace) -> int:
    from graphtag.exporter.zoo import check_zoo, parse_shard

    def progress(done: int, total: int, result) -> None:
        print(
            f"[{done}/{total}] {result.name}: {result.status} ({result.seconds:.1f} s)",
            file=sys.stderr,
            flush=True,
        )

    shard = parse_shard(args.shard) if args.shard is not None else None
    results = check_zoo(
        args.zoo_file,
        args.golden,
        update=args.update,
        jobs=args.jobs,
        shard=shard,
        on_result=progress,
    )
    if not results:
        print(f"no models in shard {args.shard}", file=sys.stderr)
        return 0
    headers = ("model", "status", "s", "route", "detail")
    if args.format == "table":
        for result in results:
            if result.diff:
                print(f"{result.name}:")
                print("\n".join(f"  {line}" for line in result.diff))
        rows = [(r.name, r.status, f"{r.seconds:.1f}", r.route or "-", r.error) for r in results]
        emit(headers, rows, "table", align="llrl")
    else:
        rows = [(r.name, r.status, round(r.seconds, 3), r.route, r.error) for r in results]
        data = [{**dict(zip(headers, row)), "diff": r.diff} for row, r in zip(rows, results)]
        emit(headers, rows, args.format, json_data=data)
    bad = [
        r
        for r in results
        if r.status in ("CHANGED", "FAILED") or (r.status == "NEW" and not args.update)
    ]
    return 1 if bad else 0
