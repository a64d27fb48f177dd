"""What every writing command does with its outputs (see graphtag.core.outputs).

1. before any work (and before heavy imports): :func:`guard` the outputs against the
   files the command will read, and check each can be written;
2. after loading a model: :func:`guard` again with :func:`model_files` (the model and
   its external data files), and refuse a model that could not be saved
   (``graphtag.core.io.require_serializable``) when the command writes a model;
3. write atomically (``graphtag.core.io.save`` / ``write_text_atomic``, a staging
   directory for ``extract --all``): nothing is left behind on failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from graphtag.core.outputs import check_writable, guard_outputs


def guard(
    outputs: Mapping[str, str | os.PathLike | None],
    reads: Iterable[str | os.PathLike | None],
    *,
    folders_read: Iterable[str | os.PathLike | None] = (),
    writable: bool = True,
) -> None:
    """Refuse outputs that are inputs or each other; with ``writable``, also outputs that
    cannot be written as files (a missing folder, a directory)."""
    guard_outputs(outputs, reads, folders_read=folders_read)
    if writable:
        for path in outputs.values():
            if path is not None:
                check_writable(Path(path))


def model_files(path: str | os.PathLike, model: Any) -> list[Path]:
    """``path`` and the external data files ``model`` (loaded from it) reads."""
    import onnx_ir as ir

    from graphtag.core.graphs import iter_initializers

    files = [Path(path)]
    seen: set[str] = set()
    for value in iter_initializers(model):
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            location = os.path.join(str(tensor.base_dir), str(tensor.location))
            if location not in seen:
                seen.add(location)
                files.append(Path(location))
    return files


def load_input(path: str | os.PathLike, outputs: Mapping[str, Any] | None = None) -> Any:
    """Load the ONNX model ``path`` for a command: refuse outputs that are its files
    (external data included), and a corrupt model (strings that are not UTF-8: every
    command but ``validate``, which reports them, refuses it with exit status 2), and a
    hierarchy record that cannot be read (likewise)."""
    from graphtag.core.errors import GraphtagError
    from graphtag.core.hierarchy import Hierarchy
    from graphtag.core.io import load, require_serializable

    model = load(path)
    if outputs:
        guard(outputs, model_files(path, model), writable=False)
    require_serializable(model, path)
    try:  # a damaged hierarchy is the input's problem, said once, naming the file
        Hierarchy.from_model(model)
    except GraphtagError as exc:
        raise GraphtagError(f"{path}: {exc}") from exc
    return model
