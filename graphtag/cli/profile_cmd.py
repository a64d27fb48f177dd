"""``graphtag profile MODEL``: per-module latency from ONNX Runtime's profiler (and PyTorch's).

Only argparse at import time; ONNX Runtime (and torch, for a PyTorch MODEL) are imported
when the command runs.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import textwrap
from pathlib import Path

from graphtag.cli.model_args import MODEL_HELP, add_filter_options, add_loading_options
from graphtag.cli.tables import render_table
from graphtag.core.errors import GraphtagError

_FORMATS = ("table", "json", "csv")


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "profile",
        help="per-module latency: ONNX Runtime's profiler read through the module tags",
        description=textwrap.fill(
            "Run MODEL in ONNX Runtime with its profiler on, retag the graph ONNX Runtime "
            "optimized (its nodes are renamed, fused and untagged) against MODEL, and add "
            "every kernel's time to its module: the module tree with self time, total time "
            "(self plus descendants), share of the run's kernel time, kernel calls, nodes "
            "and top op types, then the modules with the most self time. Figures are those "
            "of the median run (by kernel time), so they add up exactly; each module's "
            "spread over all runs is shown. MODEL is a tagged ONNX file (graphtag export), "
            "or a PyTorch model, exported first; --torch then also times every module in "
            "eager PyTorch (forward hooks, same inputs and run counts) beside ONNX "
            "Runtime's figures. As a PyTorch model, " + MODEL_HELP
        ),
        epilog=(
            "examples:\n"
            "  graphtag profile bert.onnx --runs 20 --depth 3 -o bert.profile.json\n"
            "  graphtag report bert.onnx -o bert.html --profile bert.profile.json\n"
            "  graphtag profile graphtag.exporter.examples:tiny_bert --torch\n"
            "  graphtag profile --compare threads1.json threads2.json\n"
            "-o writes the full profile (schema graphtag.profile/1) whatever --depth says."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "model", nargs="?", metavar="MODEL", help="tagged ONNX file, or a PyTorch model source"
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("A.json", "B.json"),
        help="compare two saved profiles module by module (no model is run)",
    )
    parser.add_argument(
        "--providers",
        default="CPUExecutionProvider",
        metavar="LIST",
        help="execution providers in priority order, comma-separated (default CPU; "
        "'cuda' names CUDAExecutionProvider)",
    )
    parser.add_argument("--warmup", type=int, default=3, metavar="N", help="warm-up runs (3)")
    parser.add_argument("--runs", type=int, default=10, metavar="M", help="measured runs (10)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        metavar="T",
        help="intra-op threads for ONNX Runtime (and PyTorch); 0: their default",
    )
    parser.add_argument(
        "--optimization",
        choices=("disable", "basic", "extended", "layout", "all"),
        default="all",
        help="ONNX Runtime's graph optimization level (default all)",
    )
    parser.add_argument(
        "--torch",
        action="store_true",
        help="MODEL is a PyTorch model: also time each module in eager PyTorch",
    )
    parser.add_argument(
        "--depth", type=int, default=None, metavar="K", help="fold modules deeper than K"
    )
    parser.add_argument(
        "--top", type=int, default=10, metavar="N", help="rows of the top-modules table (10)"
    )
    parser.add_argument("--format", choices=_FORMATS, default="table")
    parser.add_argument(
        "-o", "--output", metavar="PROFILE.json", help="write the profile (graphtag.profile/1)"
    )
    parser.add_argument(
        "--save-optimized",
        metavar="OUT.onnx",
        help="also write ONNX Runtime's optimized graph, retagged",
    )
    parser.add_argument(
        "--save-trace", metavar="TRACE.json", help="also keep ONNX Runtime's own profile file"
    )
    add_loading_options(parser)
    add_filter_options(parser)
    parser.set_defaults(func=run)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    if args.depth is not None and args.depth < 0:
        raise GraphtagError(f"--depth must be 0 or more, got {args.depth}")
    if args.top < 0:
        raise GraphtagError(f"--top must be 0 or more, got {args.top}")
    if args.compare:
        if args.model is not None:
            raise GraphtagError("--compare takes two profiles and no MODEL")
        return _compare(args)
    if args.model is None:
        raise GraphtagError("give a MODEL to profile, or --compare A.json B.json")
    from graphtag.core.io import check_writable

    for target in (args.output, args.save_optimized, args.save_trace):
        if target is not None:
            check_writable(Path(target))  # fail before the runs, not after
    from graphtag.tools.profile import RunSettings, resolve_providers

    settings = RunSettings(
        providers=resolve_providers([p for p in args.providers.split(",") if p.strip()]),
        warmup=args.warmup,
        runs=args.runs,
        threads=args.threads,
        optimization=args.optimization,
    )
    if _is_onnx(args.model):
        profile = _profile_onnx(args, settings)
    else:
        profile = _profile_source(args, settings)
    if args.output:
        from graphtag.core.io import write_text_atomic

        write_text_atomic(args.output, json.dumps(profile.to_json(), indent=1) + "\n")
        _say(f"wrote {args.output}")
    for note in profile.all_notes:
        print(f"graphtag: note: {note}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(profile.to_json(args.depth), indent=1))
    elif args.format == "csv":
        print(_csv(profile, args.depth), end="")
    else:
        print(_table(profile, args))
    return 0


def _is_onnx(model: str) -> bool:
    """An ONNX file: named *.onnx, or any existing file but Python source (a factory)."""
    path = Path(model)
    return path.suffix.lower() == ".onnx" or (path.is_file() and path.suffix != ".py")


def _profile_onnx(args, settings):
    if args.torch:
        raise GraphtagError(
            "--torch needs a PyTorch MODEL (the forms graphtag export takes), not an ONNX file"
        )
    from graphtag.core.input_specs import load_input_specs
    from graphtag.tools.profile import ModuleProfile, collect_ort

    specs = load_input_specs(args.input_specs) if args.input_specs else None
    measured = collect_ort(
        args.model,
        settings,
        input_specs=specs,
        progress=_say,
        save_optimized=args.save_optimized,
        save_trace=args.save_trace,
    )
    return ModuleProfile(measured)


def _profile_source(args, settings):
    from graphtag.cli.model_args import filter_config_from_args, inputs_from_args, load_from_args
    from graphtag.exporter.module_timing import profile_source

    _say(f"loading {args.model}")
    loaded = load_from_args(args)
    inputs = inputs_from_args(args, loaded)
    return profile_source(
        loaded.module,
        inputs,
        settings,
        with_torch=args.torch,
        filter_config=filter_config_from_args(args),
        progress=_say,
        save_optimized=args.save_optimized,
        save_trace=args.save_trace,
    )


# ------------------------------------------------------------------------------ output


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.3f}"


def _range(t) -> str:
    return f"{_ms(t.self_min_ns)}-{_ms(t.self_max_ns)}"


def _percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}" if whole else "-"


def _header(profile, view) -> str:
    from graphtag.tools.profile.collect import UNMATCHED

    m, ort = profile.ort, view.ort
    threads = m.settings.threads or "default"
    lines = [
        f"{m.model}: ONNX Runtime {m.ort_version}, {', '.join(m.providers)}, optimization "
        f"{m.settings.optimization}, threads {threads}; median of {len(ort.wall_ns)} runs "
        f"({m.settings.warmup} warm-up)",
        f"inference {_ms(ort.run_wall_ns)} ms (runs {_ms(min(ort.wall_ns))}-"
        f"{_ms(max(ort.wall_ns))}), kernels {_ms(ort.run_busy_ns)} ms "
        f"({_percent(ort.run_busy_ns, ort.run_wall_ns)}% of it); "
        f"{m.kernel_events // max(len(ort.wall_ns), 1)} kernels per run, "
        f"{_percent(m.mapped_events, m.kernel_events)}% on a tagged node",
    ]
    if m.tagged and m.match_ns:
        total = sum(m.match_ns.values())
        parts = [
            f"{_percent(ns, total)}% {kind.removeprefix('retag:')}"
            for kind, ns in sorted(m.match_ns.items(), key=lambda kv: -kv[1])
            if ns and kind != UNMATCHED
        ]
        if parts:
            lines.append("kernel time by how retag found the node: " + ", ".join(parts))
    if view.torch is not None:
        torch = view.torch
        lines.append(
            f"PyTorch eager: forward {_ms(torch.run_wall_ns)} ms (runs "
            f"{_ms(min(torch.wall_ns))}-{_ms(max(torch.wall_ns))}); ONNX Runtime / PyTorch "
            f"= {_ratio(ort.run_wall_ns, torch.run_wall_ns)}"
        )
    return "\n".join(lines)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def _table(profile, args) -> str:
    from graphtag.tools.profile import top_ops

    view = profile.view(args.depth)
    busy = view.ort.run_busy_ns
    torch = view.torch is not None
    headers = ["module", "self ms", "self range", "total ms", "%", "calls", "nodes"]
    align = "lrrrrrr"
    if torch:
        headers += ["torch self", "torch total", "ort/torch"]
        align += "rrr"
    headers.append("top ops (self)")
    rows = []
    for row in view.rows:
        t = row.ort
        cells = [
            "  " * row.depth + row.label,
            _ms(t.self_ns),
            _range(t),
            _ms(t.total_ns),
            _percent(t.total_ns, busy),
            t.calls,
            row.nodes,
        ]
        if torch:
            p = row.torch
            cells += [_ms(p.self_ns), _ms(p.total_ns), _ratio(t.total_ns, p.total_ns)]
        cells.append(top_ops(row))
        rows.append(cells)
    parts = [_header(profile, view), "", render_table(headers, rows, align=align)]
    top = sorted(view.rows, key=lambda r: (-r.ort.self_ns, r.tag))[: args.top]
    if top:
        flat_headers = ["module", "self ms", "% of kernels", "calls"]
        flat_align = "lrrr"
        if torch:
            flat_headers += ["torch self"]
            flat_align += "r"
        flat_headers.append("top ops")
        flat = []
        for row in top:
            cells = [
                row.tag or "(model)",
                _ms(row.ort.self_ns),
                _percent(row.ort.self_ns, busy),
                row.ort.calls,
            ]
            if torch:
                cells.append(_ms(row.torch.self_ns))
            cells.append(top_ops(row))
            flat.append(cells)
        parts += [
            "",
            "top modules by self time",
            render_table(flat_headers, flat, align=flat_align),
        ]
    return "\n".join(parts)


def _csv(profile, depth) -> str:
    from graphtag.tools.profile import top_ops

    view = profile.view(depth)
    busy = view.ort.run_busy_ns
    torch = view.torch is not None
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = [
        "tag",
        "depth",
        "self_ms",
        "self_ms_min",
        "self_ms_median",
        "self_ms_max",
        "total_ms",
        "percent",
        "calls",
        "nodes",
        "top_ops",
    ]
    if torch:
        header += ["torch_self_ms", "torch_total_ms", "torch_calls"]
    writer.writerow(header)
    for row in view.rows:
        t = row.ort
        cells = [
            row.tag,
            row.depth,
            _ms(t.self_ns),
            _ms(t.self_min_ns),
            _ms(t.self_median_ns),
            _ms(t.self_max_ns),
            _ms(t.total_ns),
            _percent(t.total_ns, busy),
            t.calls,
            row.nodes,
            top_ops(row),
        ]
        if torch:
            p = row.torch
            cells += [_ms(p.self_ns), _ms(p.total_ns), p.calls]
        writer.writerow(cells)
    return out.getvalue()


# ------------------------------------------------------------------------------ compare


def _compare(args) -> int:
    from graphtag.tools.profile import compare_profiles
    from graphtag.tools.report.profile import load_profile

    if args.output:
        raise GraphtagError("-o writes a profile; with --compare use --format json > FILE")
    path_a, path_b = args.compare
    comparison = compare_profiles(load_profile(path_a), load_profile(path_b), depth=args.depth)
    if args.format == "json":
        print(json.dumps(_compare_json(comparison, path_a, path_b), indent=1))
    elif args.format == "csv":
        print(_compare_csv(comparison), end="")
    else:
        print(_compare_table(comparison, path_a, path_b, args.top))
    return 0


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _change(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "-"
    if not a:
        return "-" if not b else "new"
    return f"{100 * (b - a) / a:+.1f}%"


def _compare_table(comparison, path_a: str, path_b: str, top: int) -> str:
    header = (
        f"A = {path_a}: {comparison.total_a:.3f} ms per inference\n"
        f"B = {path_b}: {comparison.total_b:.3f} ms per inference "
        f"({_change(comparison.total_a, comparison.total_b)})"
    )
    headers = ["module", "A total", "B total", "delta", "change", "A self", "B self", "delta"]
    rows = [
        [
            "  " * r.depth + r.label,
            _num(r.total_a),
            _num(r.total_b),
            _num(r.total_delta, signed=True),
            _change(r.total_a, r.total_b),
            _num(r.self_a),
            _num(r.self_b),
            _num(r.self_delta, signed=True),
        ]
        for r in comparison.rows
    ]
    parts = [header, "", render_table(headers, rows, align="lrrrrrrr")]
    # A module only one profile has moved by all of its time.
    moved = [(r, (r.self_b or 0.0) - (r.self_a or 0.0)) for r in comparison.rows]
    moved = [(r, d) for r, d in moved if d]
    moved.sort(key=lambda item: (-abs(item[1]), item[0].tag))
    if moved and top:
        flat = [
            [r.tag or "(model)", _num(r.self_a), _num(r.self_b), _num(delta, True)]
            for r, delta in moved[:top]
        ]
        parts += [
            "",
            "largest changes in self time (ms)",
            render_table(["module", "A self", "B self", "delta"], flat, align="lrrr"),
        ]
    return "\n".join(parts)


def _compare_json(comparison, path_a: str, path_b: str) -> dict:
    return {
        "a": path_a,
        "b": path_b,
        "total_ms": {"a": comparison.total_a, "b": comparison.total_b},
        "modules": {
            r.tag: {
                "self_ms": {"a": r.self_a, "b": r.self_b, "delta": r.self_delta},
                "total_ms": {"a": r.total_a, "b": r.total_b, "delta": r.total_delta},
            }
            for r in comparison.rows
        },
    }


def _compare_csv(comparison) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "tag",
            "depth",
            "total_a_ms",
            "total_b_ms",
            "total_delta_ms",
            "self_a_ms",
            "self_b_ms",
            "self_delta_ms",
        ]
    )
    for r in comparison.rows:
        writer.writerow(
            [
                r.tag,
                r.depth,
                *("" if v is None else round(v, 6) for v in (r.total_a, r.total_b, r.total_delta)),
                *("" if v is None else round(v, 6) for v in (r.self_a, r.self_b, r.self_delta)),
            ]
        )
    return out.getvalue()
