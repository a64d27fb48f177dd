"""Structural signatures of nodes and graphs: ops, attributes and wiring, not metadata.

One signer serves ``graphtag compare --topology`` and function outlining; they differ
only in how a value is named:

* ``by_name=True`` (comparing two models): a value is its name, so equal signatures
  mean the same wiring under the same names; the types of intermediate values are not
  part of it (graph inputs and outputs carry theirs).
* ``by_name=False`` (outlining: are two module instances one function body?): a value is
  its position in definition order plus its type, so names may differ but the wiring
  and the types computed must not.

Attributes are compared by value; tensors (string tensors included) by dtype, shape and
a digest of their contents, subgraphs by their own signature. Metadata and doc strings
never count.
"""

from __future__ import annotations

__all__ = ["Signer", "body_signature", "tensor_digest"]

import hashlib

import numpy as np
import onnx_ir as ir


def tensor_digest(tensor: ir.TensorProtocol) -> tuple[str, tuple, str]:
    """``(dtype, shape, sha256 of the contents)`` of any tensor, string tensors included."""
    h = hashlib.sha256()
    if tensor.dtype == ir.DataType.STRING:
        # No fixed-width bytes: digest each string with its length, so ["ab"] != ["a", "b"].
        strings = getattr(tensor, "string_data", None)
        for item in strings() if strings else tensor.numpy().ravel().tolist():
            data = item if isinstance(item, bytes) else str(item).encode()
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
    else:
        h.update(tensor.tobytes())
    return (tensor.dtype.name, tuple(tensor.shape), h.hexdigest())


def value_type(value: ir.Value) -> tuple:
    shape = None if value.shape is None else tuple(str(d) for d in value.shape)
    return (str(value.type), shape)


class Signer:
    """Builds signatures; with ``by_name=False`` it numbers values as it meets them, so one
    signer must see a body in order (inputs, then nodes)."""

    def __init__(self, *, by_name: bool) -> None:
        self.by_name = by_name
        self._ids: dict[ir.Value, int] = {}

    def define(self, value: ir.Value, *, typed: bool = True) -> object:
        """A value defined here (graph input, initializer, node output)."""
        if self.by_name:
            return value.name or ""
        self._ids[value] = len(self._ids)
        return (self._ids[value], value_type(value)) if typed else self._ids[value]

    def ref(self, value: ir.Value | None) -> object:
        """A value used here (node input, graph output)."""
        if value is None:
            return None if not self.by_name else ""
        if self.by_name:
            return value.name or ""
        return self._ids.get(value, ("free", value.name))

    def attr(self, attr: ir.Attr) -> object:
        if attr.is_ref():
            return ("ref", attr.ref_attr_name, attr.type.name)
        kind, value = attr.type, attr.value
        if kind == ir.AttributeType.GRAPH:
            return ("graph", self.graph(value))
        if kind == ir.AttributeType.GRAPHS:
            return ("graphs", tuple(self.graph(g) for g in value))
        if kind == ir.AttributeType.TENSOR:
            return ("tensor", tensor_digest(value))
        if kind == ir.AttributeType.TENSORS:
            return ("tensors", tuple(tensor_digest(t) for t in value))
        if kind == ir.AttributeType.FLOAT:  # as ONNX stores it: 0.1 in memory == 0.1 read back
            return (kind.name, float(np.float32(value)))
        if kind == ir.AttributeType.FLOATS:
            return (kind.name, tuple(float(v) for v in np.asarray(value, dtype=np.float32)))
        return (kind.name, tuple(value) if isinstance(value, list | tuple) else value)

    def node(self, node: ir.Node) -> tuple:
        """``(domain, op_type, overload, inputs, outputs, attributes)``."""
        inputs = tuple(self.ref(v) for v in node.inputs)
        attrs = tuple(sorted((k, repr(self.attr(a))) for k, a in node.attributes.items()))
        outputs = tuple(self.define(v) for v in node.outputs)
        return (node.domain, node.op_type, node.overload, inputs, outputs, attrs)

    def io(self, values: list[ir.Value], *, define: bool) -> tuple:
        """Graph inputs (``define``) or outputs, with their types."""
        if not self.by_name:
            return tuple(self.define(v) if define else self.ref(v) for v in values)
        return tuple((v.name, *value_type(v)) for v in values)

    def graph(self, graph: ir.Graph | ir.Function) -> str:
        """Digest of a (sub)graph: inputs, initializers, nodes and outputs."""
        h = hashlib.sha256()
        h.update(repr(self.io(list(graph.inputs), define=True)).encode())
        if isinstance(graph, ir.Graph):
            for value in graph.initializers.values():
                tensor = value.const_value
                digest = None if tensor is None else tensor_digest(tensor)
                h.update(repr((self.define(value), digest)).encode())
        for node in graph:
            h.update(repr(self.node(node)).encode())
        h.update(repr(self.io(list(graph.outputs), define=False)).encode())
        return h.hexdigest()


def body_signature(inputs: list[ir.Value], nodes: list[ir.Node], outputs: list[ir.Value]) -> str:
    """Digest of a body's ops, attributes, wiring and the types of the values it computes.

    Names, metadata and the types of its inputs (weights, activations) may differ.
    """
    signer = Signer(by_name=False)
    h = hashlib.sha256()
    h.update(repr(tuple(signer.define(v, typed=False) for v in inputs)).encode())
    for node in nodes:
        h.update(repr(signer.node(node)).encode())
    h.update(repr(tuple(signer.ref(v) for v in outputs)).encode())
    return h.hexdigest()
