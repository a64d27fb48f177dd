"""Per-module DAGs and per-operation metadata of a tagged model (torch-free).

``module_dags`` gives, for every module, its *own* nodes (the main-graph nodes tagged
exactly with its tag, not those of its descendants) and the edges among them: ``[src,
dst]`` when ``src`` produces a value ``dst`` consumes (directly, or from inside one of
``dst``'s control-flow bodies). A parent's DAG therefore shows only the glue it runs
itself; the union over all modules covers every tagged node exactly once. Every module
of the stored hierarchy appears (with empty lists when it owns no node), then any other
tag seen on nodes. Untagged nodes belong to no module.

``operation_metadata`` describes every main-graph node by name (``op_type``, ``domain``
when not the default one, ``inputs`` and ``outputs`` by value name, ``""`` for an omitted
optional input, and ``tags``: the node's tag followed by the modules of its
``pkg.graphtag.contexts``) and every initializer (``op_type`` ``"Initializer"``, tags of
all modules whose nodes consume it, in graph order). Nodes inside control-flow bodies
are not listed: they belong to their enclosing node.

Names: nodes are keyed by their name; a node with no name or a name used before gets
``<name or op_type>#<position>``. An initializer whose name is a node's name is keyed
``initializer:<name>``. Both documents are deterministic (graph order).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import onnx_ir as ir

from graphtag.analysis.manager import hierarchy
from graphtag.core import metadata
from graphtag.core.graphs import node_reads
from graphtag.core.io import write_text_atomic

INITIALIZER_OP = "Initializer"


def node_keys(model: ir.Model) -> dict[int, str]:
    """id(main-graph node) -> a unique, deterministic name for it."""
    keys: dict[int, str] = {}
    used: set[str] = set()
    for position, node in enumerate(model.graph):
        key = node.name or ""
        if not key or key in used:
            key = f"{node.name or node.op_type}#{position}"
        used.add(key)
        keys[id(node)] = key
    return keys


def _module_order(model: ir.Model) -> list[str]:
    tree = hierarchy(model)
    order = list(tree.modules) if tree else []
    known = set(order)
    extra = {metadata.node_tag(n) for n in model.graph} - known - {None}
    return order + sorted(extra)


def module_dags(model: ir.Model) -> dict[str, dict[str, list]]:
    """Module tag -> ``{"nodes": [...], "edges": [[src, dst], ...]}`` of its own nodes."""
    keys = node_keys(model)
    result: dict[str, dict[str, list]] = {
        tag: {"nodes": [], "edges": []} for tag in _module_order(model)
    }
    for node in model.graph:
        tag = metadata.node_tag(node)
        if tag is None:
            continue
        entry = result[tag]
        entry["nodes"].append(keys[id(node)])
        seen: set[str] = set()
        for value in node_reads(node):
            producer = value.producer()
            if producer is None or id(producer) not in keys:
                continue  # graph input, initializer or a value from another scope
            if metadata.node_tag(producer) != tag or producer is node:
                continue
            src = keys[id(producer)]
            if src not in seen:
                seen.add(src)
                entry["edges"].append([src, keys[id(node)]])
    return result


def _node_tags(node: ir.Node) -> list[str]:
    own = metadata.node_tag(node)
    tags = [own] if own else []
    tags += [c["module"] for c in metadata.contexts(node)]
    return list(dict.fromkeys(tags))


def operation_metadata(model: ir.Model) -> dict[str, dict]:
    """Node or initializer name -> ``op_type``, ``inputs``, ``outputs``, ``tags``."""
    keys = node_keys(model)
    ops: dict[str, dict] = {}
    users: dict[int, list[str]] = {}  # id(initializer) -> consumer tags, first-use order
    initializer_ids = {id(v) for v in model.graph.initializers.values()}
    for node in model.graph:
        entry: dict = {"op_type": node.op_type}
        if node.domain:
            entry["domain"] = node.domain
        entry["inputs"] = [v.name if v is not None else "" for v in node.inputs]
        entry["outputs"] = [v.name for v in node.outputs]
        entry["tags"] = _node_tags(node)
        ops[keys[id(node)]] = entry
        tag = metadata.node_tag(node)
        for value in node_reads(node):
            if id(value) in initializer_ids and tag is not None:
                tags = users.setdefault(id(value), [])
                if tag not in tags:
                    tags.append(tag)
    for name, value in model.graph.initializers.items():
        key = name if name not in ops else f"initializer:{name}"
        ops[key] = {
            "op_type": INITIALIZER_OP,
            "inputs": [],
            "outputs": [name],
            "tags": users.get(id(value), []),
        }
    return ops


def write_json(data: object, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON, atomically (a temporary file replaces ``path``)."""
    return write_text_atomic(path, json.dumps(data, indent=1) + "\n")
