"""Weights in external data files: checked on load, kept on disk, saved atomically.

A model's large tensors may live in data files beside it (``TensorProto.external_data``:
a location relative to the model's folder, an offset and a length). onnx_ir maps them
lazily, so a command that reads no weight value never reads them. This module adds:

* :func:`check_external_data`, run on load: every location stays inside the model's
  folder (absolute paths, ``..`` and symlinks leading out are refused), every data file
  exists and holds the bytes its tensors need. Errors name the tensor and the file.
* :func:`save_external`: the model file plus its data, atomically. Weights already in a
  data file inside the destination folder are referenced, not rewritten, when the model
  still uses at least half of that file (``REUSE_MIN_SHARE``: a model saved next to the
  one it was loaded from writes its graph only; an extracted layer gets a data file
  holding its own tensors). Other tensors over ``INLINE_MAX_BYTES`` go to one new data
  file, ``<model file name>.data`` or, when that name is taken, ``<name>.<k>.data`` with
  the first free ``k``. Nothing existing is modified before the model file is replaced
  (the single commit point): a crash or a full disk leaves the old model and its data
  as they were. After the commit, data files named after the model (``<name>.data``,
  ``<name>.<k>.data``) that the new model does not use are removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import onnx_ir as ir

from graphtag.core.errors import GraphtagError
from graphtag.core.graphs import iter_all_nodes, iter_initializers
from graphtag.core.proto_file import write_model

logger = logging.getLogger(__name__)

# Tensors up to this size stay inside the model file (onnx_ir's own default).
INLINE_MAX_BYTES = 256
# A data file in the destination folder is referenced when the model uses this share of it.
REUSE_MIN_SHARE = 0.5
# Free space kept in reserve beyond the data to write (the model file, file system slack).
_SPACE_MARGIN_BYTES = 16 * 1024 * 1024


def external_tensors(model: ir.Model) -> Iterator[tuple[str, ir.ExternalTensor]]:
    """``(name, tensor)`` for every tensor stored in an external data file: initializers of
    every graph, then tensor attributes (a Constant's value may be external too)."""
    for value in iter_initializers(model):
        if isinstance(value.const_value, ir.ExternalTensor):
            yield value.name or value.const_value.name or "?", value.const_value
    for node in iter_all_nodes(model):
        for attr in node.attributes.data.values():
            if attr.is_ref():
                continue
            if attr.type == ir.AttributeType.TENSOR:
                tensors = [attr.value]
            elif attr.type == ir.AttributeType.TENSORS:
                tensors = list(attr.value)
            else:
                continue
            for tensor in tensors:
                if isinstance(tensor, ir.ExternalTensor):
                    yield f"{node.name or node.op_type}.{attr.name}", tensor


# -- loading ---------------------------------------------------------------------------


def check_external_data(model: ir.Model, model_path: str | os.PathLike) -> None:
    """Refuse unsafe or broken external data before anything reads it (one stat per file).

    Raises GraphtagError naming the tensor and the file when a location is absolute or
    leads out of the model's folder, or when a data file is missing, shorter than the
    tensor's range, or has several hard links (onnx_ir refuses to map such files).
    """
    model_path = Path(model_path)
    folder = Path(os.path.realpath(model_path.parent if str(model_path.parent) else "."))
    sizes: dict[str, os.stat_result] = {}
    places: dict[str, str | None] = {}  # location -> real path: one realpath per file
    for name, tensor in external_tensors(model):
        location = os.fspath(tensor.location)
        if location not in places:
            places[location] = _resolve_inside(folder, location)
        real = places[location]
        if real is None:
            raise GraphtagError(
                f"{model_path}: tensor {name}: external data location {location!r} is outside "
                "the model's folder (absolute paths, '..' and symlinks leading out are refused)"
            )
        stat = sizes.get(real)
        if stat is None:
            try:
                stat = os.stat(real)
            except FileNotFoundError:
                raise GraphtagError(
                    f"{model_path}: tensor {name}: external data file {location} is missing"
                ) from None
            except OSError as exc:
                raise GraphtagError(
                    f"{model_path}: tensor {name}: external data file {location} is not "
                    f"readable ({exc.strerror})"
                ) from None
            sizes[real] = stat
        if stat.st_nlink > 1:
            raise GraphtagError(
                f"{model_path}: tensor {name}: external data file {location} has "
                f"{stat.st_nlink} hard links; onnx_ir refuses to read such a file (copy it)"
            )
        offset = tensor.offset or 0
        length = tensor.length if tensor.length is not None else tensor.nbytes
        if length != tensor.nbytes:
            raise GraphtagError(
                f"{model_path}: tensor {name}: external data length {length} does not match "
                f"its type and shape ({tensor.nbytes} bytes)"
            )
        if offset + length > stat.st_size:
            raise GraphtagError(
                f"{model_path}: tensor {name}: external data file {location} is truncated "
                f"(the tensor needs bytes {offset}..{offset + length}, the file holds "
                f"{stat.st_size})"
            )


def _resolve_inside(folder: Path, location: str) -> str | None:
    """The real path of ``location`` under ``folder``, or None when it leads outside."""
    if not location or os.path.isabs(location) or Path(location).drive:
        return None
    if ".." in Path(location.replace("\\", "/")).parts:
        return None
    real = os.path.realpath(folder / location)
    return real if _inside(real, folder) else None


def _inside(path: str, folder: Path) -> bool:
    root = os.fspath(folder)
    return path.startswith(root.rstrip(os.sep) + os.sep)


# -- saving ----------------------------------------------------------------------------


@dataclasses.dataclass
class SavedData:
    """Where a save put the weights (also logged at INFO)."""

    written_file: str | None  # the new data file's name, None when nothing was written
    written_bytes: int  # tensor bytes written to it
    reused_files: list[str]  # data files in the destination folder the model refers to
    reused_bytes: int  # tensor bytes referred to in them (not rewritten)
    removed_files: list[str]  # stale data files named after the model, removed after commit


@dataclasses.dataclass
class _Plan:
    reuse: dict[int, tuple[ir.Value, ir.ExternalTensor]]  # id(value) -> kept in place
    write: list[ir.Value]  # values whose tensor goes to the new data file
    inline: list[ir.Value]  # external values small enough to inline
    reused_files: dict[str, str]  # real path -> location relative to the destination


def save_external(model: ir.Model, path: Path, commit) -> SavedData:
    """Write ``model`` with its large tensors in external data (see the module docstring).

    ``commit(serialize)`` writes the model file atomically: it receives a function that
    writes the model proto to a given temporary file name. ``model`` is left unchanged,
    except that tensors whose data file this save removes are re-pointed to the new one.
    """
    folder = Path(os.path.realpath(path.parent if str(path.parent) else "."))
    plan = _plan(model, folder)
    taken = {os.path.basename(p) for p in plan.reused_files}
    data_name = _free_data_name(folder, path.name, taken) if plan.write else None
    tensors = [v.const_value for v in plan.write]
    size = sum(t.nbytes for t in tensors)
    _check_space(folder, path, size)
    new_tensors: list[ir.ExternalTensor] = []
    if data_name is not None:
        try:
            new_tensors = ir.external_data.convert_tensors_to_external(
                tensors, base_dir=folder, relative_path=data_name
            )
        except OSError as exc:
            raise _write_error(path, folder / data_name, exc) from exc
    swapped = _swap_in(model, plan, new_tensors, folder)
    try:
        commit(lambda tmp_name: _write_proto(model, tmp_name))
    except BaseException:
        if data_name is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / data_name)
        raise
    finally:
        for value, tensor in swapped:
            value.const_value = tensor
    referenced = set(taken) | ({data_name} if data_name else set())
    removed = _remove_stale(folder, path.name, referenced)
    _repoint(plan.write, new_tensors, {os.fspath(folder / name) for name in removed})
    saved = SavedData(
        written_file=data_name,
        written_bytes=size,
        reused_files=sorted(plan.reused_files.values()),
        reused_bytes=sum(t.nbytes for _, t in plan.reuse.values()),
        removed_files=removed,
    )
    logger.info(
        "saved %s: %d weight bytes written to %s, %d referred to in %s%s",
        path,
        saved.written_bytes,
        saved.written_file or "no data file",
        saved.reused_bytes,
        ", ".join(saved.reused_files) or "no existing file",
        f"; removed stale {', '.join(removed)}" if removed else "",
    )
    return saved


def _plan(model: ir.Model, folder: Path) -> _Plan:
    """Which tensors stay where they are, which are written, which are inlined."""
    candidates: dict[str, list[tuple[ir.Value, ir.ExternalTensor]]] = {}
    write: list[ir.Value] = []
    inline: list[ir.Value] = []
    for value in iter_initializers(model):
        tensor = value.const_value
        if tensor is None:
            continue
        if isinstance(tensor, ir.ExternalTensor):
            if not tensor.valid():
                raise GraphtagError(f"tensor {value.name}: its external data was invalidated")
            real = os.path.realpath(tensor.path)
            if _inside(real, folder) and os.path.isfile(real):
                candidates.setdefault(real, []).append((value, tensor))
                continue
        (write if tensor.nbytes > INLINE_MAX_BYTES else inline).append(value)
    reuse: dict[int, tuple[ir.Value, ir.ExternalTensor]] = {}
    reused_files: dict[str, str] = {}
    for real, found in candidates.items():
        ranges = {(t.offset or 0, t.nbytes) for _, t in found}
        used = sum(length for _, length in ranges)
        file_size = os.path.getsize(real)
        if file_size and used / file_size >= REUSE_MIN_SHARE:
            reused_files[real] = os.path.relpath(real, folder)
            reuse.update((id(value), (value, tensor)) for value, tensor in found)
        else:
            for value, tensor in found:
                (write if tensor.nbytes > INLINE_MAX_BYTES else inline).append(value)
    inline = [v for v in inline if isinstance(v.const_value, ir.ExternalTensor)]
    return _Plan(reuse, write, inline, reused_files)


def _swap_in(
    model: ir.Model, plan: _Plan, new_tensors: list[ir.ExternalTensor], folder: Path
) -> list[tuple[ir.Value, ir.TensorProtocol]]:
    """Point the initializers at their saved form; returns (value, original) to restore."""
    swapped: list[tuple[ir.Value, ir.TensorProtocol]] = []

    def swap(value: ir.Value, tensor: ir.TensorProtocol) -> None:
        swapped.append((value, value.const_value))
        value.const_value = tensor

    for value, tensor in zip(plan.write, new_tensors, strict=True):
        swap(value, tensor)
    for value, tensor in plan.reuse.values():
        location = plan.reused_files[os.path.realpath(tensor.path)]
        swap(value, _external_copy(tensor, location, folder))
    for value in plan.inline:
        tensor = value.const_value
        swap(value, ir.tensor(tensor.numpy(), name=tensor.name))
    _inline_attribute_tensors(model)
    return swapped


def _external_copy(tensor: ir.ExternalTensor, location: str, folder: Path) -> ir.ExternalTensor:
    return ir.ExternalTensor(
        location,
        tensor.offset,
        tensor.length,
        tensor.dtype,
        shape=tensor.shape,
        name=tensor.name,
        doc_string=tensor.doc_string,
        metadata_props=dict(tensor.metadata_props),
        base_dir=folder,
    )


def _inline_attribute_tensors(model: ir.Model) -> None:
    """Tensor attributes kept in a data file are read in: their location would not
    resolve beside another model file. Rare (Constant values), and small in practice."""
    for node in iter_all_nodes(model):
        for name, attr in list(node.attributes.data.items()):
            if attr.is_ref():
                continue
            if attr.type == ir.AttributeType.TENSOR and isinstance(attr.value, ir.ExternalTensor):
                node.attributes[name] = ir.AttrTensor(name, _in_memory(attr.value))
            elif attr.type == ir.AttributeType.TENSORS and any(
                isinstance(t, ir.ExternalTensor) for t in attr.value
            ):
                node.attributes[name] = ir.AttrTensors(name, [_in_memory(t) for t in attr.value])


def _in_memory(tensor: ir.TensorProtocol) -> ir.TensorProtocol:
    if isinstance(tensor, ir.ExternalTensor):
        return ir.tensor(tensor.numpy().copy(), name=tensor.name)
    return tensor


def _write_proto(model: ir.Model, tmp_name: str) -> None:
    # Every tensor is written as it is: the ExternalTensors swapped in keep their
    # locations, the others are embedded.
    write_model(model, tmp_name)


def _free_data_name(folder: Path, model_name: str, taken: set[str]) -> str:
    """``<model>.data``, else ``<model>.<k>.data``: a name no file has (nor a reused one)."""
    k = 0
    while True:
        name = f"{model_name}.data" if k == 0 else f"{model_name}.{k}.data"
        if name not in taken and not os.path.lexists(folder / name):
            return name
        k += 1


def _stale_pattern(model_name: str) -> re.Pattern[str]:
    return re.compile(re.escape(model_name) + r"(\.\d+)?\.data")


def _remove_stale(folder: Path, model_name: str, referenced: set[str]) -> list[str]:
    """Remove the data files named after the model that it no longer refers to."""
    pattern = _stale_pattern(model_name)
    removed = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if pattern.fullmatch(entry.name) and entry.name not in referenced:
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    os.unlink(entry.path)
                    removed.append(entry.name)
    return sorted(removed)


def _repoint(written: list[ir.Value], new_tensors: list, removed: set[str]) -> None:
    """Tensors of ``model`` whose data file was just removed now read the new file."""
    if not removed:
        return
    for value, new in zip(written, new_tensors, strict=True):
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor) and os.path.realpath(tensor.path) in removed:
            value.const_value = new


def _check_space(folder: Path, path: Path, size: int) -> None:
    if size == 0:
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # unknown: the write itself reports a full disk
    if free < size + _SPACE_MARGIN_BYTES:
        raise GraphtagError(
            f"{path}: not enough disk space in {folder}: the weights need {_mb(size)} "
            f"(and {_mb(_SPACE_MARGIN_BYTES)} are kept free for the model file), "
            f"{_mb(free)} free; nothing was written"
        )


def _write_error(path: Path, data_path: Path, exc: OSError) -> GraphtagError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return GraphtagError(
            f"{path}: disk full while writing {data_path.name} ({exc.strerror}); "
            f"{path.name} and its data are unchanged"
        )
    if exc.errno is None:
        # numpy's tofile reports a short write ("N requested and M written") without an
        # errno: on a regular file that is a full disk or quota (seen on a full tmpfs).
        return GraphtagError(
            f"{path}: disk full while writing {data_path.name} (short write: {exc}); "
            f"{path.name} and its data are unchanged"
        )
    return GraphtagError(f"{path}: could not write {data_path.name} ({exc})")


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"
