"""Write an ONNX model file without holding its whole serialization in memory.

``onnx.save`` serializes the ModelProto into one bytes object before writing it: for a
100k-node graph that is a second copy of a ~200 MB message at the moment memory peaks
(the IR, its proto and the bytes all alive). Protobuf's encoding of a message is the
concatenation of its fields' encodings, in field-number order, so the graph can go out
one node (one repeated element) at a time; only the graph's length must be known first,
and it is the sum of its elements' lengths. The bytes written are exactly
``proto.SerializeToString()`` (tested), so every reader sees the same file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, BinaryIO

import onnx_ir as ir

# protobuf refuses to encode or parse a message of 2 GiB or more.
MAX_MESSAGE_BYTES = 2**31 - 1

# Singular message fields streamed element by element (ModelProto.graph); any other
# field is small or a repeated field whose elements are written one at a time.
_STREAMED_FIELDS = frozenset({"graph"})
_WRITE_BUFFER = 1 << 20


def write_model(model: ir.Model, path: str | os.PathLike) -> None:
    """Serialize ``model`` (its tensors as they are: embedded or external references)
    and write it to ``path`` in the ONNX protobuf format."""
    write_proto(ir.serde.serialize_model(model), path)


def write_proto(proto: Any, path: str | os.PathLike) -> None:
    """Write a protobuf message to ``path``, streaming :data:`_STREAMED_FIELDS`.

    A message over protobuf's 2 GiB limit is refused before anything is written,
    with the error ``SerializeToString`` gives (ValueError).
    """
    sizes: dict[tuple[int, ...], int] = {}  # streamed field path -> its length
    size = _size(proto, (), sizes)
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(
            f"Message {proto.DESCRIPTOR.full_name} exceeds maximum protobuf size of 2GB: {size}"
        )
    with open(path, "wb", buffering=_WRITE_BUFFER) as out:
        _write(proto, out, (), sizes)


def _pieces(message: Any) -> Iterator[tuple[str, Any, Any]]:
    """The message's set fields in encoding order: ("stream", number, submessage) for a
    streamed field, ("item", number, element) per repeated message element, and
    ("rest", None, message holding only that field) for anything else."""
    from google.protobuf.descriptor import FieldDescriptor

    for field, value in message.ListFields():
        is_message = field.type == FieldDescriptor.TYPE_MESSAGE
        repeated = _is_repeated(field)
        if is_message and not repeated and field.name in _STREAMED_FIELDS:
            yield "stream", field.number, value
        elif is_message and repeated:
            for item in value:
                yield "item", field.number, item
        else:
            single = type(message)()
            if repeated:
                getattr(single, field.name).extend(value)
            elif is_message:
                getattr(single, field.name).CopyFrom(value)
            else:
                setattr(single, field.name, value)
            yield "rest", None, single


def _is_repeated(field: Any) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 5.28; label is deprecated
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED


def _size(message: Any, path: tuple[int, ...], sizes: dict[tuple[int, ...], int]) -> int:
    """The message's encoded length; streamed fields' lengths are recorded in ``sizes``."""
    total = 0
    for kind, number, part in _pieces(message):
        if kind == "rest":
            total += part.ByteSize()
            continue
        if kind == "stream":
            length = sizes[(*path, number)] = _size(part, (*path, number), sizes)
        else:
            length = part.ByteSize()
        total += len(_key(number)) + len(_varint(length)) + length
    return total


def _write(message: Any, out: BinaryIO, path: tuple[int, ...], sizes: dict) -> None:
    for kind, number, part in _pieces(message):
        if kind == "rest":
            out.write(part.SerializeToString())
        elif kind == "stream":
            out.write(_key(number) + _varint(sizes[(*path, number)]))
            _write(part, out, (*path, number), sizes)
        else:
            data = part.SerializeToString()
            out.write(_key(number) + _varint(len(data)))
            out.write(data)


def _key(number: int) -> bytes:
    return _varint(number << 3 | 2)  # wire type 2: length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
