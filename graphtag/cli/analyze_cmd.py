"""``graphtag analyze``: nodes, ops and shared parameters per module of a tagged model."""

from __future__ import annotations

import argparse
import csv
import difflib
import io

from graphtag.cli.tables import render_table
from graphtag.core.errors import GraphtagError

_TOP_MODULES = 10
_TOP_OPS = 4


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "analyze",
        help="summarize a tagged model per module (nodes, ops, shared parameters)",
        description=(
            "Read MODEL and report, per module tag, the nodes tagged with it, the nodes of "
            "it and its descendants, and its op histogram; plus untagged nodes, inferred "
            "tags by rule, nodes with residual contexts, parameters consumed by several "
            "modules and local functions with their call counts. MODEL is never modified."
        ),
        epilog=(
            "formats:\n"
            "  summary   totals and the modules with the most nodes (default)\n"
            "  detailed  one line per module with its op histogram, then shared parameters\n"
            "  json      the full analysis (deterministic)\n"
            "  csv       one row per module: tag,class,executed,nodes,nodes_inclusive,"
            "parameters,ops\n"
            "example:\n"
            "  graphtag analyze model.onnx --format detailed --filter /Model/Encoder"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL.onnx", help="input ONNX file")
    parser.add_argument(
        "--format", choices=("summary", "detailed", "json", "csv"), default="summary"
    )
    parser.add_argument(
        "--filter",
        metavar="TAG-PREFIX",
        help="keep only the modules whose tag starts with TAG-PREFIX",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graphtag.analysis.summary import analyze
    from graphtag.cli.outputs import load_input

    analysis = analyze(load_input(args.model))
    if args.filter is not None:
        analysis = _apply_filter(analysis, args.filter)
    render = {"summary": _summary, "detailed": _detailed, "json": _json, "csv": _csv}
    print(render[args.format](analysis, args.model))
    return 0


def _apply_filter(analysis, prefix: str):
    filtered = analysis.filtered(prefix)
    if filtered.modules:
        return filtered
    tags = [m.tag for m in analysis.modules]
    if not tags:
        raise GraphtagError(f"--filter {prefix!r}: the model has no module tags")
    # Also compare with the tags cut to the prefix's depth, so a typo in a segment is found.
    depth = prefix.rstrip("/").count("/")
    candidates = list(dict.fromkeys(["/".join(t.split("/")[: depth + 1]) for t in tags] + tags))
    close = difflib.get_close_matches(prefix, candidates, n=3, cutoff=0.5)
    hint = f"close tags: {', '.join(close)}" if close else f"tags include: {', '.join(tags[:3])}"
    raise GraphtagError(f"--filter {prefix!r} matches no module tag; {hint}")


def _ops_text(ops: dict[str, int], limit: int | None = None) -> str:
    items = list(ops.items())
    shown = items if limit is None else items[:limit]
    text = " ".join(f"{op}:{n}" for op, n in shown)
    return text + (f" +{len(items) - len(shown)} more" if len(shown) < len(items) else "")


def _short_class(name: str | None) -> str:
    return name.rsplit(".", 1)[-1] if name else "(not in hierarchy)"


def _totals(analysis, path: str) -> str:
    with_nodes = sum(1 for m in analysis.modules if m.nodes)
    lines = [
        f"model: {path}",
        f"nodes: {analysis.nodes} ({analysis.tagged} tagged, {len(analysis.untagged)} untagged)",
        f"modules: {len(analysis.modules)} ({with_nodes} with own nodes)"
        + (f", filter {analysis.filter!r}" if analysis.filter is not None else "")
        + ("" if analysis.has_hierarchy else ", no hierarchy stored"),
    ]
    if analysis.inferred:
        rules = ", ".join(f"{r}:{n}" for r, n in sorted(analysis.inferred.items()))
        lines.append(f"inferred tags: {sum(analysis.inferred.values())} ({rules})")
    lines.append(f"nodes with contexts: {analysis.multi_context_nodes}")
    lines.append(f"shared parameters: {len(analysis.shared_parameters)}")
    if analysis.functions:
        calls = sum(analysis.functions.values())
        lines.append(f"functions: {len(analysis.functions)} ({calls} calls)")
    return "\n".join(lines)


def _summary(analysis, path: str) -> str:
    top = sorted(analysis.modules, key=lambda m: (-m.nodes, m.tag))[:_TOP_MODULES]
    rows = [
        (m.tag, _short_class(m.class_name), m.nodes, m.nodes_inclusive, _ops_text(m.ops, _TOP_OPS))
        for m in top
        if m.nodes
    ]
    parts = [_totals(analysis, path)]
    if rows:
        title = f"top {len(rows)} modules by own nodes:"
        headers = ("module", "class", "nodes", "incl.", "ops")
        parts.append(title + "\n" + render_table(headers, rows, align="llrrl"))
    return "\n\n".join(parts)


def _detailed(analysis, path: str) -> str:
    rows = [
        (
            m.tag,
            _short_class(m.class_name),
            {True: "yes", False: "no", None: "?"}[m.executed],
            m.parameters,
            m.nodes,
            m.nodes_inclusive,
            _ops_text(m.ops) or "-",
        )
        for m in analysis.modules
    ]
    headers = ("module", "class", "ran", "params", "nodes", "incl.", "ops")
    parts = [_totals(analysis, path), render_table(headers, rows, align="lllrrrl")]
    if analysis.shared_parameters:
        shared = [
            (
                s.name,
                ", ".join(s.initializers),
                "; ".join(f"{tag} ({n} ops)" for tag, n in s.uses.items()),
            )
            for s in analysis.shared_parameters
        ]
        parts.append(
            "shared parameters (used by several modules, or several times by one):\n"
            + render_table(("parameter", "initializers", "used by"), shared)
        )
    if analysis.functions:
        class_of = {k: c for c, keys in analysis.function_classes.items() for k in keys}
        calls = [(key, class_of.get(key, "-"), n) for key, n in sorted(analysis.functions.items())]
        parts.append(
            "functions:\n" + render_table(("function", "class", "calls"), calls, align="llr")
        )
    if analysis.untagged:
        shown = ", ".join(analysis.untagged[:10])
        more = f" (+{len(analysis.untagged) - 10} more)" if len(analysis.untagged) > 10 else ""
        parts.append(f"untagged nodes: {shown}{more}")
    return "\n\n".join(parts)


def _json(analysis, path: str) -> str:
    return analysis.to_json()


def _csv(analysis, path: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("tag", "class", "executed", "nodes", "nodes_inclusive", "parameters", "ops"))
    for m in analysis.modules:
        executed = "" if m.executed is None else str(m.executed).lower()
        ops = ";".join(f"{op}:{n}" for op, n in m.ops.items())
        writer.writerow(
            (m.tag, m.class_name or "", executed, m.nodes, m.nodes_inclusive, m.parameters, ops)
        )
    return out.getvalue().rstrip("\n")
