"""ONNX file <-> onnx_ir.Model, with atomic writes and automatic external data."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx_ir as ir

from graphtag.core import outputs
from graphtag.core.errors import GraphtagError, first_line
from graphtag.core.external_data import check_external_data, save_external
from graphtag.core.graphs import iter_initializers
from graphtag.core.proto_file import write_model
from graphtag.core.strings import invalid_strings

# protobuf refuses messages of 2 GiB; leave room for the graph itself.
EXTERNAL_DATA_THRESHOLD_BYTES = 1_800_000_000


def load(path: str | os.PathLike) -> ir.Model:
    """Load an ONNX file. External weights stay on disk until a pass reads their values.

    Their locations are checked first (inside the model's folder, files present and long
    enough: :func:`graphtag.core.external_data.check_external_data`).
    """
    path = Path(path)
    if not path.exists():
        raise GraphtagError(f"{path}: no such file")
    if path.is_dir():
        raise GraphtagError(f"{path}: is a directory, expected an .onnx file")
    reject_empty_file(path)
    try:
        model = ir.load(path)
    except Exception as exc:  # protobuf raises several unrelated types on bad bytes
        reason = first_line(exc)
        raise GraphtagError(f"{path}: not a readable ONNX model ({reason})") from exc
    reject_graphless(path, model)
    check_external_data(model, path)
    return model


def reject_empty_file(path: Path) -> None:
    """An empty file parses as an empty ModelProto: refuse it as what it is."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise GraphtagError(f"{path}: cannot read ({exc.strerror})") from exc
    if size == 0:
        raise GraphtagError(f"{path}: empty file, not an ONNX model")


def reject_graphless(path: str | os.PathLike, model: ir.Model) -> None:
    """Refuse a ModelProto without a graph (protobuf reads many byte strings as one).

    onnx_ir gives a missing graph as an empty one: no node, no output. A model
    without outputs computes nothing, so nothing is lost by refusing it.
    """
    graph = model.graph
    if len(graph) == 0 and not graph.outputs:
        what = "no graph" if not graph.inputs and not graph.initializers else "an empty graph"
        raise GraphtagError(f"{path}: not an ONNX model: it has {what} (no nodes, no outputs)")


def require_serializable(model: ir.Model, path: str | os.PathLike) -> None:
    """Refuse a model that could not be saved (strings that are not valid UTF-8), before
    a command works on it; ``path`` is the file it came from. ``graphtag validate``
    lists every such field (its ``strings`` rule)."""
    problems = invalid_strings(model, limit=2)
    if problems:
        more = " (and more)" if len(problems) > 1 else ""
        raise GraphtagError(
            f"{path}: corrupt model, a string is not valid UTF-8: {problems[0]}{more}"
        )


def initializer_bytes(model: ir.Model) -> int:
    """Total size of the tensors the model carries (without reading external data)."""
    return sum(v.const_value.nbytes for v in iter_initializers(model) if v.const_value is not None)


def save(
    model: ir.Model,
    path: str | os.PathLike,
    *,
    external_data: bool | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically.

    The model goes to a temporary file in the destination folder that replaces
    ``path`` only once complete, so a failed save never leaves a partial file and
    an existing output survives. ``external_data=None`` keeps the weights in data
    files when they came from one and switches to them when the weights would not
    fit in a protobuf message; True forces data files, False embeds the weights
    unless they are too large for protobuf. With data files (see
    :func:`graphtag.core.external_data.save_external`) weights already in a data file
    in the destination folder are referenced, not rewritten, and no existing file
    changes before the model file is replaced.
    """
    path = Path(path)
    try:
        if use_external_data(model, external_data):
            save_external(model, path, commit=lambda write: _commit(path, write))
            return path
        if has_external_tensors(model):
            # Embedding needs the values; references would point next to the old file.
            ir.external_data.load_to_model(model)
        with atomic_output(path) as tmp_name:
            write_model(model, tmp_name)
    except GraphtagError as exc:
        if isinstance(exc.__cause__, ir.serde.SerdeError):
            raise unserializable_error(model, path, exc.__cause__) from exc.__cause__
        raise
    return path


def use_external_data(model: ir.Model, requested: bool | None) -> bool:
    """Whether :func:`save` writes data files (weights over the protobuf limit always do)."""
    too_large = initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD_BYTES
    if requested is None:
        return too_large or has_external_tensors(model)
    return requested or too_large


def _commit(path: Path, write) -> None:
    with atomic_output(path) as tmp_name:
        write(tmp_name)


def has_external_tensors(model: ir.Model) -> bool:
    """Whether some initializer still lives in an external data file."""
    return any(isinstance(v.const_value, ir.ExternalTensor) for v in iter_initializers(model))


def check_writable(path: Path) -> None:
    """Fail early, with one line, when ``path`` cannot be written as a file."""
    outputs.check_writable(path)


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[str]:
    """Yield a temporary file name beside ``path``; it replaces ``path`` on success only."""
    check_writable(path)
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp_name
        # mkstemp creates 0600 files; give the output the usual umask-based mode.
        os.chmod(tmp_name, 0o666 & ~current_umask())
        os.replace(tmp_name, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(exc, GraphtagError) or not isinstance(exc, Exception):
            raise
        raise GraphtagError(f"{path}: could not write ({exc})") from exc


def unserializable_error(model: ir.Model, path: Path, exc: BaseException) -> GraphtagError:
    """Why ``model`` could not be serialized, said about the model, not the output path."""
    problems = invalid_strings(model, limit=1)
    if problems:
        return GraphtagError(f"{path}: not written: a string is not valid UTF-8: {problems[0]}")
    reason = first_line(exc)
    return GraphtagError(f"{path}: not written: the model cannot be serialized ({reason})")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically (same guarantees as :func:`save`)."""
    path = Path(path)
    with atomic_output(path) as tmp_name:
        Path(tmp_name).write_text(text, encoding="utf-8")
    return path


def current_umask() -> int:
    """The process's file-creation mask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
