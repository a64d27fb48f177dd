"""Topology comparison of two ONNX models: everything except metadata.

Two models have the same topology when their graphs list the same nodes in the same
order with the same op types, domains, inputs, outputs and attributes, and the same
graph inputs, outputs, initializers (name, type, shape, bytes), opsets and functions.
Node/value metadata and doc strings are ignored: that is what graphtag adds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

from graphtag.analysis.signature import Signer, tensor_digest

_MAX_REPORTED = 20


@dataclasses.dataclass
class TopologyDiff:
    differences: list[str]
    total: int

    @property
    def identical(self) -> bool:
        return self.total == 0

    def report(self) -> str:
        if self.identical:
            return "topology identical"
        lines = [f"{self.total} topology difference(s):"]
        lines += [f"  {d}" for d in self.differences]
        if self.total > len(self.differences):
            lines.append(f"  ... and {self.total - len(self.differences)} more")
        return "\n".join(lines)


def _graph_items(graph: ir.Graph | ir.Function) -> Iterator[tuple]:
    """("inputs", sig), ("outputs", sig), then ("node", sig, node) per node."""
    signer = Signer(by_name=True)
    yield ("inputs", signer.io(list(graph.inputs), define=True))
    yield ("outputs", signer.io(list(graph.outputs), define=False))
    for node in graph:
        yield ("node", signer.node(node), node)


def _describe_node(sig: tuple) -> str:
    domain, op, _, inputs, outputs, attrs = sig  # see Signer.node
    op_name = f"{domain}::{op}" if domain else op
    return f"{op_name}({', '.join(inputs)}) -> {', '.join(outputs)} attrs={[a[0] for a in attrs]}"


def _show(attr: ir.Attr) -> str:
    """An attribute's value for the diff (tensors by digest, graphs not at all)."""
    if attr.is_ref():
        return f"@{attr.ref_attr_name}"
    if attr.type == ir.AttributeType.TENSOR:
        return _short(tensor_digest(attr.value))
    if attr.type == ir.AttributeType.TENSORS:
        return str([_short(tensor_digest(t)) for t in attr.value])
    if attr.type == ir.AttributeType.FLOAT:
        return str(np.float32(attr.value))
    if attr.type == ir.AttributeType.FLOATS:
        return "[" + ", ".join(str(np.float32(v)) for v in attr.value) + "]"
    text = repr(Signer(by_name=True).attr(attr)[1])
    return text if len(text) <= 80 else text[:77] + "..."


def compare_topology(a: ir.Model, b: ir.Model) -> TopologyDiff:
    """Compare two models structurally, ignoring all metadata."""
    diffs: list[str] = []
    total = 0

    def add(text: str) -> None:
        nonlocal total
        total += 1
        if len(diffs) < _MAX_REPORTED:
            diffs.append(text)

    if dict(a.opset_imports) != dict(b.opset_imports):
        add(f"opset imports: {dict(a.opset_imports)} != {dict(b.opset_imports)}")
    _compare_graph("graph", a.graph, b.graph, add)
    _compare_initializers(a.graph, b.graph, add)
    fa, fb = set(a.functions), set(b.functions)
    for key in sorted(fa ^ fb):
        add(f"function {'::'.join(k for k in key if k)} only in {'A' if key in fa else 'B'}")
    for key in sorted(fa & fb):
        _compare_graph(f"function {key[1]}", a.functions[key], b.functions[key], add)
    return TopologyDiff(diffs, total)


def _compare_graph(where: str, ga, gb, add) -> None:
    items_a, items_b = list(_graph_items(ga)), list(_graph_items(gb))
    if len(items_a) != len(items_b):
        add(f"{where}: {len(items_a) - 2} nodes in A, {len(items_b) - 2} nodes in B")
    for index, (ia, ib) in enumerate(zip(items_a, items_b)):
        if ia[:2] == ib[:2]:
            continue
        if ia[0] == "node" and ib[0] == "node":
            _compare_nodes(f"{where}: node #{index - 2}", ia, ib, add)
        else:
            add(f"{where}: graph {ia[0]} differ: A {ia[1]} | B {ib[1]}")


def _compare_nodes(where: str, ia: tuple, ib: tuple, add) -> None:
    """Name what differs: the node itself, or (same op and wiring) each attribute, going
    into subgraph attributes to the node that differs there."""
    (_, sa, na), (_, sb, nb) = ia, ib
    if sa[:5] != sb[:5]:
        add(f"{where} differs: A {_describe_node(sa)} | B {_describe_node(sb)}")
        return
    op = f"{sa[0]}::{sa[1]}" if sa[0] else sa[1]
    for name in sorted(set(na.attributes) | set(nb.attributes)):
        aa, ab = na.attributes.get(name), nb.attributes.get(name)
        if aa is None or ab is None:
            add(f"{where} {op}: attribute {name} only in {'A' if ab is None else 'B'}")
        elif aa.type != ab.type or aa.is_ref() != ab.is_ref():
            add(f"{where} {op}: attribute {name}: {aa.type.name} != {ab.type.name}")
        elif not aa.is_ref() and aa.type == ir.AttributeType.GRAPH:
            _compare_graph(f"{where} {op} {name}", aa.value, ab.value, add)
        elif not aa.is_ref() and aa.type == ir.AttributeType.GRAPHS:
            if len(aa.value) != len(ab.value):
                add(f"{where} {op}: attribute {name}: {len(aa.value)} != {len(ab.value)} graphs")
            for k, (ga, gb) in enumerate(zip(aa.value, ab.value)):
                _compare_graph(f"{where} {op} {name}[{k}]", ga, gb, add)
        elif (sig := Signer(by_name=True)).attr(aa) != sig.attr(ab):
            add(f"{where} {op}: attribute {name}: {_show(aa)} != {_show(ab)}")


def _compare_initializers(ga: ir.Graph, gb: ir.Graph, add) -> None:
    ia, ib = ga.initializers, gb.initializers
    if list(ia) != list(ib):
        only_a = [n for n in ia if n not in ib]
        only_b = [n for n in ib if n not in ia]
        if only_a or only_b:
            add(f"initializers only in A: {only_a[:5]}, only in B: {only_b[:5]}")
        else:
            add("initializers listed in a different order")
    for name in ia:
        if name not in ib:
            continue
        ta, tb = ia[name].const_value, ib[name].const_value
        if (ta is None) != (tb is None):
            add(f"initializer {name}: value present in only one model")
        elif ta is not None and (da := tensor_digest(ta)) != (db := tensor_digest(tb)):
            add(f"initializer {name}: {_short(da)} != {_short(db)}")


def _short(digest: tuple[str, tuple, str]) -> str:
    dtype, shape, data = digest
    return f"{dtype}{list(shape)} sha256 {data[:16]}"
