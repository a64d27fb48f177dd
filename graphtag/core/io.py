"""ONNX file <-> onnx_ir.Model, with atomic writes and automatic external data."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx_ir as ir

from graphtag.core.errors import GraphtagError
from graphtag.core.external_data import check_external_data, save_external
from graphtag.core.graphs import iter_initializers

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
    try:
        model = ir.load(path)
    except Exception as exc:  # protobuf raises several unrelated types on bad bytes
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GraphtagError(f"{path}: not a readable ONNX model ({reason})") from exc
    check_external_data(model, path)
    return model


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
    if use_external_data(model, external_data):
        save_external(model, path, commit=lambda write: _commit(path, write))
        return path
    if has_external_tensors(model):
        # Embedding needs the values; references would point next to the old file.
        ir.external_data.load_to_model(model)
    with atomic_output(path) as tmp_name:
        ir.save(model, tmp_name)
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
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise GraphtagError(f"{path}: is a directory, expected a file name")
    if not folder.is_dir():
        raise GraphtagError(f"{path}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise GraphtagError(f"{path}: output folder {folder} is not writable")


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
