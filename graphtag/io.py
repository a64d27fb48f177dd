"""ONNX file <-> onnx_ir.Model, with atomic writes and automatic external data."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import onnx_ir as ir

from graphtag.errors import GraphtagError

# protobuf refuses messages of 2 GiB; leave room for the graph itself.
EXTERNAL_DATA_THRESHOLD_BYTES = 1_800_000_000


def load(path: str | os.PathLike) -> ir.Model:
    """Load an ONNX file. External weights stay on disk until a pass reads their values."""
    path = Path(path)
    if not path.exists():
        raise GraphtagError(f"{path}: no such file")
    if path.is_dir():
        raise GraphtagError(f"{path}: is a directory, expected an .onnx file")
    try:
        return ir.load(path)
    except Exception as exc:  # protobuf raises several unrelated types on bad bytes
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GraphtagError(f"{path}: not a readable ONNX model ({reason})") from exc


def initializer_bytes(model: ir.Model) -> int:
    """Total size of the tensors the model carries (without reading external data)."""
    total = 0
    graphs = [model.graph, *model.graph.subgraphs()]
    for graph in graphs:
        for value in graph.initializers.values():
            tensor = value.const_value
            if tensor is not None:
                total += tensor.nbytes
    return total


def save(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    external_data: bool | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically.

    The model goes to a temporary file in the destination folder that replaces
    ``path`` only once complete, so a failed save never leaves a partial file and
    an existing output survives. ``external_data=None`` switches to a
    ``<name>.data`` file beside the model when the weights would not fit in a
    protobuf message; True or False forces the choice.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise GraphtagError(f"{path}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise GraphtagError(f"{path}: output folder {folder} is not writable")
    if path.is_dir():
        raise GraphtagError(f"{path}: is a directory, expected a file name")
    if external_data is None:
        external_data = initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD_BYTES
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        if external_data:
            # The data file is referenced by its final name; onnx_ir writes it atomically.
            ir.save(model, tmp_name, external_data=f"{path.name}.data")
        else:
            ir.save(model, tmp_name)
        os.replace(tmp_name, path)
    except Exception as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(exc, GraphtagError):
            raise
        raise GraphtagError(f"{path}: could not write the model ({exc})") from exc
    return path
