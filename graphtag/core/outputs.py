"""The output guard: no command ever writes over a file it reads, or over its own output.

Every command that writes (a model, JSON, HTML, a directory) names its outputs and the
files it reads to :func:`guard_outputs` before it starts working (and again once it
knows every file it read, e.g. a factory's module or external data). An output is
refused when it is, or will be, the same file as one it reads or as another output:

* the same path once resolved: symlinks anywhere along it, ``..``, ``.``, relative
  against absolute;
* the same file on disk (``os.path.samefile``: hard links, bind mounts, a
  case-insensitive file system);
* a file inside a folder the command reads as a whole (a model directory), when
  that file exists and is not one graphtag writes itself (``.onnx``, ``.onnx.data``,
  ``.graphtag.json``): what such a folder holds may be read.

This module imports nothing heavy (no onnx), so commands run it before their imports.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from graphtag.core.errors import GraphtagError

__all__ = ["GRAPHTAG_SUFFIXES", "check_writable", "files_read_in", "guard_outputs"]

# File names graphtag itself writes: a model folder may hold a previous export.
GRAPHTAG_SUFFIXES = (".onnx", ".onnx.data", ".graphtag.json")
_MAX_FOLDER_FILES = 100_000  # a bound on the walk of a folder read as a whole


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _same_file(a: Path, b: Path) -> bool:
    if _resolved(a) == _resolved(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): the resolved paths decide
        return False


def files_read_in(folder: str | os.PathLike) -> list[Path]:
    """The files of a folder read as a whole (a model directory) that an output must not
    replace: every file below it except those graphtag writes itself."""
    found: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.endswith(GRAPHTAG_SUFFIXES):
                found.append(Path(root) / name)
                if len(found) >= _MAX_FOLDER_FILES:
                    return found
    return found


def guard_outputs(
    outputs: Mapping[str, str | os.PathLike | None],
    reads: Iterable[str | os.PathLike | None],
    *,
    folders_read: Iterable[str | os.PathLike | None] = (),
) -> None:
    """Refuse (GraphtagError, one line) an output that is a file the command reads or
    another of its outputs. ``outputs`` maps how the user named each output (``-o``,
    ``--ops``) to its path (None: not requested); ``reads`` are the files the command
    reads; ``folders_read`` folders it reads as a whole (see the module doc)."""
    named = [(label, Path(path)) for label, path in outputs.items() if path is not None]
    read_files = [Path(p) for p in reads if p is not None]
    for folder in folders_read:
        if folder is not None and Path(folder).is_dir():
            read_files.extend(files_read_in(folder))
    for label, out in named:
        for source in read_files:
            if _same_file(out, source):
                raise GraphtagError(
                    f"{out}: {label} would overwrite an input ({source}); choose another path"
                )
    for i, (label, out) in enumerate(named):
        for other_label, other in named[:i]:
            if _same_file(out, other):
                raise GraphtagError(
                    f"{out}: {label} and {other_label} name the same file; choose two paths"
                )


def check_writable(path: str | os.PathLike) -> None:
    """Fail early, with one line, when ``path`` cannot be written as a file."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise GraphtagError(f"{path}: is a directory, expected a file name")
    if not folder.is_dir():
        raise GraphtagError(f"{path}: output folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise GraphtagError(f"{path}: output folder {folder} is not writable")
