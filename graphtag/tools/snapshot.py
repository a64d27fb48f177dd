"""Canonical, deterministic JSON snapshot of a tagged export (torch-free).

What matters about an export and nothing volatile: module tags with their node counts
and op histograms, boundary counts, tag sources, multi-context nodes, shared parameters,
local functions, opsets, graph inputs/outputs with types and shapes, and the export
route. No timestamps, paths or versions. ``schema`` changes when the layout does.

Schema (version 1)::

    {"schema": 1,
     "export_route": str | null,  # pkg.graphtag.export_route: how the graph was exported
     "graph": {"nodes": int, "untagged": int, "opsets": {domain: version},
               "inputs": [{"name", "type", "shape"}], "outputs": [...]},
     "modules": {tag: {"class": str | null, "nodes": int, "ops": {op: count},
                       "inputs": int, "outputs": int}},
     "tag_sources": {source: count}, "multi_context_nodes": int,
     "shared_parameters": {parameter: [tags]},
     "functions": {"domain::name": {"calls": int, "nodes": int}}}
"""

from __future__ import annotations

import json

import onnx_ir as ir

from graphtag.analysis.boundaries import module_boundaries
from graphtag.analysis.manager import analysis_scope
from graphtag.analysis.summary import analyze, function_key
from graphtag.core import metadata
from graphtag.core.errors import clip

SCHEMA_VERSION = 1


def _value_entry(value: ir.Value) -> dict:
    shape = (
        None
        if value.shape is None
        else [str(d) if not isinstance(d, int) else d for d in value.shape]
    )
    return {"name": value.name, "type": str(value.type) if value.type else None, "shape": shape}


def snapshot(model: ir.Model) -> dict:
    """The canonical snapshot of ``model`` as a JSON-ready dict (sorted keys)."""
    with analysis_scope(model):
        analysis = analyze(model)
        boundaries = module_boundaries(model)
    modules = {}
    for stats in sorted(analysis.modules, key=lambda m: m.tag):
        boundary = boundaries.get(stats.tag)
        modules[stats.tag] = {
            "class": stats.class_name.rsplit(".", 1)[-1] if stats.class_name else None,
            "nodes": stats.nodes,
            "ops": dict(sorted(stats.ops.items())),
            "inputs": len(boundary.inputs) if boundary else 0,
            "outputs": len(boundary.outputs) if boundary else 0,
        }
    functions = {}
    for function in model.functions.values():
        key = function_key(function.identifier())
        functions[key] = {"calls": analysis.functions[key], "nodes": len(function)}
    return {
        "schema": SCHEMA_VERSION,
        "export_route": model.metadata_props.get(metadata.EXPORT_ROUTE),
        "graph": {
            "nodes": analysis.nodes,
            "untagged": len(analysis.untagged),
            "opsets": dict(sorted(model.opset_imports.items())),
            "inputs": [_value_entry(v) for v in model.graph.inputs],
            "outputs": [_value_entry(v) for v in model.graph.outputs],
        },
        "modules": modules,
        "tag_sources": dict(sorted(analysis.tag_sources.items())),
        "multi_context_nodes": analysis.multi_context_nodes,
        "shared_parameters": {u.name: u.tags for u in analysis.shared_parameters},
        "functions": dict(sorted(functions.items())),
    }


def dumps(data: dict) -> str:
    """Canonical text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def diff_snapshots(old: dict, new: dict) -> list[str]:
    """Readable differences: modules gained/lost, op count changes, graph-level changes."""
    lines: list[str] = []
    if old.get("schema") != new.get("schema"):
        return [f"schema changed: {old.get('schema')} -> {new.get('schema')}"]
    old_mods, new_mods = old.get("modules", {}), new.get("modules", {})
    for tag in sorted(set(new_mods) - set(old_mods)):
        lines.append(f"+ module {tag} ({new_mods[tag]['nodes']} nodes)")
    for tag in sorted(set(old_mods) - set(new_mods)):
        lines.append(f"- module {tag} ({old_mods[tag]['nodes']} nodes)")
    for tag in sorted(set(old_mods) & set(new_mods)):
        a, b = old_mods[tag], new_mods[tag]
        if a == b:
            continue
        changes = []
        for op in sorted(set(a["ops"]) | set(b["ops"])):
            before, after = a["ops"].get(op, 0), b["ops"].get(op, 0)
            if before != after:
                changes.append(f"{op} {before}->{after}")
        for key in ("class", "inputs", "outputs"):
            if a.get(key) != b.get(key):
                changes.append(f"{key} {a.get(key)}->{b.get(key)}")
        lines.append(f"~ module {tag}: {', '.join(changes)}")
    for key in (
        "export_route",
        "graph",
        "tag_sources",
        "multi_context_nodes",
        "shared_parameters",
        "functions",
    ):
        if old.get(key) != new.get(key):
            lines.append(f"~ {key}: {_short(old.get(key))} -> {_short(new.get(key))}")
    return lines


def _short(value: object, limit: int = 200) -> str:
    return clip(json.dumps(value, sort_keys=True), limit)
