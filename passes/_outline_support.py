"""Helpers shared by function outlining and inlining: records, order keys, selection.

An outlined module instance is one call node to a local function in the
``pkg.graphtag`` domain. The function body is a copy of the first instance seen with
that body (the *template*); every call node records, in ``pkg.graphtag.outlined``, how
its own instance differs from the template (node names, value names, node and value
metadata), so inlining restores every instance exactly. Every main-graph node carries
its original position in ``pkg.graphtag.order``; inlining sorts by it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import onnx_ir as ir

from graphtag.core import metadata
from graphtag.core.graphs import node_reads, subgraphs_of
from graphtag.core.patterns import tag_pattern  # noqa: F401  (re-exported for old callers)

DOMAIN = metadata.FUNCTION_DOMAIN  # of every function graphtag creates


def deep_walk(nodes: Iterable[ir.Node]) -> tuple[list[ir.Node], list[ir.Value]]:
    """Nodes (pre-order through subgraphs) and the values they define, in a fixed order."""
    out_nodes: list[ir.Node] = []
    out_values: list[ir.Value] = []

    def walk(items: Iterable[ir.Node]) -> None:
        for node in items:
            out_nodes.append(node)
            out_values.extend(node.outputs)
            for graph in subgraphs_of(node):
                out_values.extend(graph.inputs)
                walk(graph)

    walk(nodes)
    return out_nodes, out_values


def function_name(class_name: str) -> str:
    """A valid identifier from a class name: its last dotted part, sanitized."""
    short = class_name.rsplit(".", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9_]", "_", short) or "Module"
    return f"_{name}" if name[0].isdigit() else name


# -- per-instance records ------------------------------------------------------------------


def _meta_diff(mine: dict[str, str], base: dict[str, str]) -> dict[str, str | None]:
    diff: dict[str, str | None] = {k: v for k, v in mine.items() if base.get(k) != v}
    diff.update({k: None for k in base if k not in mine})
    return diff


def record_diff(instance: list[ir.Node], body: list[ir.Node]) -> dict:
    """What differs between an instance's nodes and the body's (same structure).

    Keys (each present only when non-empty) map positions in :func:`deep_walk` order to:
    ``n`` node names, ``v`` value names, ``m`` node metadata changes and ``vm`` value
    metadata changes (``null`` deletes a key).
    """
    nodes_a, values_a = deep_walk(instance)
    nodes_b, values_b = deep_walk(body)
    record: dict[str, dict[str, object]] = {"n": {}, "v": {}, "m": {}, "vm": {}}
    pairs = (("n", "m", zip(nodes_a, nodes_b)), ("v", "vm", zip(values_a, values_b)))
    for name_key, meta_key, items in pairs:
        for i, (a, b) in enumerate(items):
            if a.name != b.name:
                record[name_key][str(i)] = a.name
            diff = _meta_diff(a.metadata_props, b.metadata_props)
            if diff:
                record[meta_key][str(i)] = diff
    return {k: v for k, v in record.items() if v}


def _apply_meta(target: dict[str, str], diff: dict[str, str | None]) -> None:
    for key, value in diff.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value


def apply_record(nodes: list[ir.Node], record: dict) -> None:
    """Turn copies of a function body into the instance described by ``record``."""
    if not record:
        return
    deep_nodes, deep_values = deep_walk(nodes)
    for i, name in record.get("n", {}).items():
        deep_nodes[int(i)].name = name
    for i, diff in record.get("m", {}).items():
        _apply_meta(deep_nodes[int(i)].metadata_props, diff)
    for i, name in record.get("v", {}).items():
        deep_values[int(i)].name = name
    for i, diff in record.get("vm", {}).items():
        _apply_meta(deep_values[int(i)].metadata_props, diff)


# -- order keys ----------------------------------------------------------------------------


def stamp_order(graph: ir.Graph) -> list[ir.Node]:
    """Give every main-graph node without one an order key; return the nodes stamped.

    On a graph never stamped the key is the position; otherwise a node added since
    takes its predecessor's key (stable sorting keeps it after that node).
    """
    nodes = list(graph)
    fresh = all(metadata.order(n) is None for n in nodes)
    stamped: list[ir.Node] = []
    last = 0
    for index, node in enumerate(nodes):
        key = metadata.order(node)
        if key is None:
            key = index if fresh else last
            metadata.set_order(node, key)
            stamped.append(node)
        last = key
    return stamped


def sorted_by_order(nodes: list[ir.Node]) -> list[ir.Node]:
    """Stable sort by order key; a node without a key follows its predecessor."""
    keyed = []
    last = -1
    for position, node in enumerate(nodes):
        key = metadata.order(node)
        last = last if key is None else key
        keyed.append((last, position, node))
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [node for _, _, node in keyed]


def iter_graphtag_calls(nodes: Iterable[ir.Node], functions) -> Iterator[ir.Node]:
    for node in nodes:
        if node.op_identifier() in functions:
            yield node


# -- selection and hoisting ----------------------------------------------------------------


def hoist_shared(boundary, owner: dict[ir.Node, str]) -> None:
    """Leave out of ``boundary`` the part computing values it hands to other modules.

    A value the module uses itself and that another selected module (``owner`` maps
    the nodes of the selected modules at this level to their tags) also reads — a
    value computed once by the first instance and reused by the next ones — is
    computed, with its producers inside the module, in the main graph instead: the
    module then reads it like the other instances do. O(module nodes + edges).
    """
    tag = boundary.tag
    members = set(boundary.nodes)
    seeds = []
    for value in boundary.outputs:
        users = [use.node for use in value.uses()]
        inside = any(u in members for u in users)
        shared = any(owner.get(u, tag) != tag for u in users)
        if inside and shared:
            seeds.append(value.producer())
    hoisted: set[ir.Node] = set(seeds)
    stack = list(seeds)
    while stack:
        node = stack.pop()
        for value in node_reads(node):
            producer = value.producer()
            if producer in members and producer not in hoisted:
                hoisted.add(producer)
                stack.append(producer)
    if not hoisted:
        return
    boundary.nodes = [n for n in boundary.nodes if n not in hoisted]
    exported = set(boundary.outputs)
    outputs = [v for n in boundary.nodes for v in n.outputs if v in exported]
    boundary.outputs = outputs
