"""Every string field of a model is text that can be saved (valid UTF-8).

onnx.proto is proto2, so protobuf reads a ``string`` field holding invalid UTF-8
without complaint (onnx_ir then holds ``bytes`` where it expects ``str``) and the ONNX
checker accepts it, but writing the model fails. :func:`invalid_strings` finds every such
field: names, domains, op types, doc strings, metadata keys and values, symbolic
dimensions and string attributes, in the model, its graphs (subgraphs included), values,
nodes and functions. One pass over the model: linear in its size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import onnx_ir as ir

from graphtag.core.graphs import iter_graphs, subgraphs_of

__all__ = ["invalid_strings"]

_STRING = ir.AttributeType.STRING
_STRINGS = ir.AttributeType.STRINGS


def _bad(text: object) -> bool:
    if text is None:
        return False
    if not isinstance(text, str):
        return True  # protobuf handed over the raw bytes of invalid UTF-8
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return True
    return False


def _show(text: object) -> str:
    """The text quoted, bytes that are not UTF-8 as ``\\xNN`` escapes."""
    if isinstance(text, bytes):
        return f"'{text.decode('utf-8', 'backslashreplace')}'"
    if isinstance(text, str):
        return f"'{text.encode('utf-8', 'backslashreplace').decode('utf-8')}'"
    return repr(text)


def _props(where: str, props: dict) -> Iterator[str]:
    for key, value in props.items():
        if _bad(key):
            yield f"{where}: metadata key {_show(key)}"
        elif _bad(value):
            yield f"{where}: metadata {_show(key)} = {_show(value)}"


def _fields(where: str, **fields: object) -> Iterator[str]:
    for field, text in fields.items():
        if _bad(text):
            yield f"{where}: {field} {_show(text)}"


def _value(where: str, value: ir.Value) -> Iterator[str]:
    label = f"{where} value {_show(value.name)}"
    yield from _fields(label, name=value.name, doc_string=value.doc_string)
    yield from _props(label, value.metadata_props)
    shape = value.shape
    if shape is not None:
        for dim in shape.dims:
            if isinstance(dim, ir.SymbolicDim) and _bad(dim.value):
                yield f"{label}: dimension {_show(dim.value)}"
    tensor = value.const_value
    if tensor is not None and not isinstance(tensor, ir.ExternalTensor):
        yield from _fields(label, tensor_name=tensor.name, tensor_doc_string=tensor.doc_string)
        yield from _props(f"{label} tensor", tensor.metadata_props)


def _attributes(where: str, attributes: Iterable[ir.Attr]) -> Iterator[str]:
    for attr in attributes:
        label = f"{where} attribute {_show(attr.name)}"
        yield from _fields(label, name=attr.name, doc_string=attr.doc_string)
        if attr.is_ref():
            yield from _fields(label, ref_attr_name=attr.ref_attr_name)
            continue
        if attr.type == _STRING:
            yield from _fields(label, value=attr.value)
        elif attr.type == _STRINGS:
            for text in attr.value:
                yield from _fields(label, value=text)


def _node(node: ir.Node) -> Iterator[str]:
    label = f"node {_show(node.name)}"
    yield from _fields(
        label,
        name=node.name,
        domain=node.domain,
        op_type=node.op_type,
        overload=node.overload,
        doc_string=node.doc_string,
    )
    yield from _props(label, node.metadata_props)
    # Bodies are walked as graphs of their own (iter_graphs); only their names here.
    yield from _attributes(label, (a for a in node.attributes.values()))
    for graph in subgraphs_of(node):
        yield from _fields(f"{label} body", name=graph.name, doc_string=graph.doc_string)


def _container(container: ir.Graph | ir.Function) -> Iterator[str]:
    if isinstance(container, ir.Function):
        label = f"function {_show(container.domain)}::{_show(container.name)}"
        yield from _fields(
            label,
            domain=container.domain,
            name=container.name,
            overload=container.overload,
            doc_string=container.doc_string,
        )
        yield from _props(label, container.metadata_props)
        yield from _attributes(label, container.attributes.values())
        values = [*container.inputs, *container.outputs]
    else:
        label = f"graph {_show(container.name)}"
        yield from _fields(label, name=container.name, doc_string=container.doc_string)
        yield from _props(label, container.metadata_props)
        values = [*container.inputs, *container.outputs, *container.initializers.values()]
    for domain in container.opset_imports:
        if _bad(domain):
            yield f"{label}: opset domain {_show(domain)}"
    for value in values:
        yield from _value(label, value)
    for node in container:
        yield from _node(node)
        for value in node.outputs:
            yield from _value(label, value)


def invalid_strings(model: ir.Model, limit: int | None = None) -> list[str]:
    """Where ``model`` holds a string that is not valid UTF-8 (at most ``limit`` places)."""
    found: list[str] = []

    def walk() -> Iterator[str]:
        yield from _fields(
            "model",
            producer_name=model.producer_name,
            producer_version=model.producer_version,
            domain=model.domain,
            doc_string=model.doc_string,
        )
        yield from _props("model", model.metadata_props)
        for container in iter_graphs(model):
            yield from _container(container)

    for problem in walk():
        found.append(problem)
        if limit is not None and len(found) >= limit:
            break
    return found
