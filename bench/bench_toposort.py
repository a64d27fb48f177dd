"""Benchmark graphtag's TopologicalSortPass against onnx_ir's and onnx-graphsurgeon's sorts.

Usage::

    python bench/bench_toposort.py [--sizes 3000 30000 300000] [--kinds chain diamond transformer]
                                   [--repeat N] [--tools ...] [--json OUT]

Every run sorts a fresh copy of a shuffled synthetic model (see ``bench/synthetic.py``)
and times the sort only: ``graphtag`` and ``onnx_ir`` sort the onnx_ir model in place;
``gs`` is ``onnx_graphsurgeon.Graph.toposort()`` on a graph freshly imported with
``gs.import_onnx`` (import time is reported separately, not in the ratio). The model is
built with the garbage collector off and then frozen (``gc.freeze``), so collections
during the timed region only scan what the tool itself allocates. Medians of ``--repeat``
runs (default 5, or 3 from 100k nodes up).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import onnx_ir as ir
import onnx_ir.passes.common as ir_common

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import KINDS, frozen_model, release

from graphtag.passes.toposort import TopologicalSortPass

TOOLS = ("graphtag", "onnx_ir", "gs")


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _run_gs(proto, gs) -> tuple[float, float]:
    """(import seconds, toposort seconds) for one fresh gs graph."""
    gc.disable()
    start = time.perf_counter()
    graph = gs.import_onnx(proto)
    imported = time.perf_counter() - start
    gc.enable()
    gc.freeze()
    # gs recurses once per node along the longest path: deep graphs need a big stack.
    seconds: list[float] = []
    errors: list[BaseException] = []

    def target(sort: Callable[[], object] = graph.toposort) -> None:
        try:
            seconds.append(_time(sort))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    del graph
    release()
    if errors:
        raise errors[0]
    return imported, seconds[0]


def _run_in_place(tool: str, n: int, kind: str) -> tuple[int, float]:
    """(node count, sort seconds) for one fresh model sorted in place by ``tool``."""
    model = frozen_model(n, kind)
    nodes = len(model.graph)
    sort = TopologicalSortPass() if tool == "graphtag" else ir_common.TopologicalSortPass()
    seconds = _time(lambda m=model: sort(m))
    del model
    release()
    return nodes, seconds


def bench(
    sizes: list[int], kinds: list[str], repeat: int | None, tools: Sequence[str] = TOOLS
) -> list[dict]:
    rows = []
    for n in sizes:
        runs = repeat or (3 if n >= 100_000 else 5)
        for kind in kinds:
            times: dict[str, list[float]] = {tool: [] for tool in TOOLS}
            gs_import: list[float] = []
            gs_error = ""
            nodes = 0
            for _ in range(runs):
                for tool in ("graphtag", "onnx_ir"):
                    if tool in tools:
                        nodes, seconds = _run_in_place(tool, n, kind)
                        times[tool].append(seconds)
            if "gs" in tools:
                import onnx_graphsurgeon as gs

                proto = ir.serde.serialize_model(frozen_model(n, kind))
                release()
                for _ in range(runs):
                    try:
                        imported, sorted_ = _run_gs(proto, gs)
                    except Exception as exc:  # e.g. RecursionError on deep graphs
                        gs_error = type(exc).__name__
                        break
                    gs_import.append(imported)
                    times["gs"].append(sorted_)
                del proto
                release()
            row = {
                "kind": kind,
                "size": n,
                "nodes": nodes,
                "runs": runs,
                **{tool: statistics.median(ts) if ts else None for tool, ts in times.items()},
                "gs_import": statistics.median(gs_import) if gs_import else None,
                "gs_error": gs_error,
            }
            rows.append(row)
            print(_format_row(row), file=sys.stderr, flush=True)
    return rows


def _format_row(row: dict) -> str:
    def sec(value: float | None) -> str:
        return f"{value:.4f}" if value is not None else "n/a"

    def ratio(other: float | None) -> str:
        return f"{row['graphtag'] / other:.2f}" if other else "n/a"

    gs_text = sec(row["gs"]) if not row["gs_error"] else f"failed ({row['gs_error']})"
    return (
        f"| {row['kind']} | {row['nodes']} | {row['runs']} | {sec(row['graphtag'])} | "
        f"{sec(row['onnx_ir'])} | {gs_text} | {sec(row['gs_import'])} | "
        f"{ratio(row['onnx_ir'])} | {ratio(row['gs'])} |"
    )


def markdown(rows: list[dict]) -> str:
    lines = [
        "| shape | nodes | runs | graphtag s | onnx_ir s | gs toposort s | gs import s "
        "| graphtag/onnx_ir | graphtag/gs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [_format_row(row) for row in rows]
    by_key = {(row["kind"], row["size"]): row for row in rows}
    scaling = []
    for kind in dict.fromkeys(row["kind"] for row in rows):
        small, large = by_key.get((kind, 30_000)), by_key.get((kind, 300_000))
        if small and large:
            parts = [
                f"{tool} {large[tool] / small[tool]:.1f}"
                for tool in TOOLS
                if small[tool] and large[tool]
            ]
            scaling.append(f"- {kind}: t(300k)/t(30k): " + ", ".join(parts))
    if scaling:
        lines += ["", *scaling]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3_000, 30_000, 300_000])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--repeat", type=int, default=None, help="runs per cell (median)")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    sys.setrecursionlimit(2_000_000)
    threading.stack_size(1 << 30)
    rows = bench(args.sizes, args.kinds, args.repeat, args.tools)
    print(markdown(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
