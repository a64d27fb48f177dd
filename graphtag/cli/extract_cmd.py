"""``graphtag extract``: write one module, or every module, as standalone ONNX files."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from graphtag.cli.tables import add_format_option, emit
from graphtag.core.errors import GraphtagError

if TYPE_CHECKING:
    import onnx_ir as ir

INDEX_NAME = "index.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM = 120


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "extract",
        help="extract modules as standalone ONNX models",
        description=(
            "Write the nodes of one module (--module TAG) or of every module at every\n"
            "level (--all) as standalone ONNX models: the module's external inputs and\n"
            "outputs keep their names, the weights and constants it reads come along.\n"
            "A module called several times shares one tag, so its file holds every call.\n"
            "The input file is never modified."
        ),
        epilog=(
            "examples:\n"
            "  graphtag extract model.onnx --module /BertModel/BertEncoder -o encoder.onnx\n"
            "  graphtag extract model.onnx --all -o modules/\n"
            "With --all, OUT is a new or empty directory; it receives one file per module\n"
            f"and {INDEX_NAME} (tag -> file), and appears only once every file is written."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL.onnx", help="input ONNX file (tagged)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--module", metavar="TAG", help="tag of the module to extract")
    which.add_argument("--all", action="store_true", help="extract every module")
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="output file (--module) or dir (--all)"
    )
    parser.add_argument(
        "--progress-every",
        type=int,
        default=0,
        metavar="N",
        help="with --all, report progress on stderr every N modules (default: about 10 reports)",
    )
    add_format_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graphtag.cli.outputs import guard

    source, output = Path(args.model), Path(args.output)
    label = "-o (--all)" if args.all else "-o"
    guard({label: output}, [source], writable=not args.all)
    if args.all:
        _check_output_dir(output)

    from graphtag.cli.outputs import load_input

    model = load_input(source, {label: output})
    if args.all:
        return _extract_all(model, output, args.progress_every, args.format)
    return _extract_one(model, args.module, output, args.format)


def _extract_one(model: ir.Model, tag: str, output: Path, fmt: str) -> int:
    from graphtag.core.io import save
    from graphtag.surgery.extraction import extract_module

    extracted = extract_module(model, tag)
    save(extracted, output)  # its weights only: copied from the source's data file, if any
    emit(_HEADERS, [_row(tag, extracted, output.name)], fmt, align="lrrrrl")
    print(f"wrote {output}", file=sys.stderr)
    return 0


_HEADERS = ("module", "nodes", "inputs", "outputs", "initializers", "file")


def _row(tag: str, extracted: ir.Model, file: str) -> tuple:
    graph = extracted.graph
    return (
        tag,
        len(graph),
        len(graph.inputs),
        len(graph.outputs),
        len(graph.initializers),
        file,
    )


def _extract_all(model: ir.Model, output: Path, every: int, fmt: str) -> int:
    from graphtag.analysis.boundaries import module_boundaries
    from graphtag.core.io import save
    from graphtag.surgery.extraction import Extractor

    start = time.perf_counter()
    boundaries = module_boundaries(model)
    if not boundaries:
        raise GraphtagError("the model has no tagged nodes; there is no module to extract")
    extractor = Extractor(model, boundaries)
    total = len(boundaries)
    every = every if every > 0 else max(1, total // 10)
    parent = output.parent if str(output.parent) else Path(".")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=parent))
    except OSError as exc:
        raise GraphtagError(f"{output}: cannot write in {parent} ({exc.strerror})") from exc
    index: dict[str, str] = {}
    rows, skipped = [], []
    try:
        names = safe_file_names(list(boundaries))
        for count, tag in enumerate(boundaries, start=1):
            try:
                extracted = extractor.extract(tag)
            except GraphtagError as exc:  # e.g. a module whose outputs are all unused
                skipped.append(tag)
                print(f"graphtag: warning: skipped {exc}", file=sys.stderr)
                continue
            save(extracted, staging / names[tag])
            index[tag] = names[tag]
            rows.append(_row(tag, extracted, names[tag]))
            if count % every == 0 or count == total:
                elapsed = time.perf_counter() - start
                print(f"[{count}/{total}] {elapsed:.1f}s {tag}", file=sys.stderr)
        text = json.dumps(index, indent=1) + "\n"
        (staging / INDEX_NAME).write_text(text, encoding="utf-8")
        _move_into_place(staging, output)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise GraphtagError(f"{output}: could not write ({exc})") from exc
        raise
    emit(_HEADERS, rows, fmt, align="lrrrrl")
    seconds = time.perf_counter() - start
    note = f", {len(skipped)} skipped" if skipped else ""
    print(f"wrote {len(rows)} modules to {output} in {seconds:.1f}s{note}", file=sys.stderr)
    return 0


def _check_output_dir(output: Path) -> None:
    """Fail before any work unless ``output`` can become a fresh directory of results."""
    parent = output.parent if str(output.parent) else Path(".")
    if output.exists() and not output.is_dir():
        raise GraphtagError(f"{output}: exists and is not a directory")
    if output.is_dir():
        if any(output.iterdir()):
            raise GraphtagError(f"{output}: directory is not empty; choose a new or empty one")
        if not os.access(output, os.W_OK):
            raise GraphtagError(f"{output}: output directory is not writable")
    if not parent.is_dir():
        raise GraphtagError(f"{output}: parent folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise GraphtagError(f"{output}: parent folder {parent} is not writable")


def _move_into_place(staging: Path, output: Path) -> None:
    if output.is_dir():
        try:
            output.rmdir()  # checked empty before; fails if something appeared since
        except OSError as exc:
            raise GraphtagError(f"{output}: directory changed during extraction ({exc})") from exc
    try:
        os.rename(staging, output)
    except OSError as exc:
        raise GraphtagError(f"{output}: could not create the output directory ({exc})") from exc
    from graphtag.core.io import current_umask

    with contextlib.suppress(OSError):
        output.chmod(0o777 & ~current_umask())  # mkdtemp creates 0o700: the usual mode


def safe_file_names(tags: list[str]) -> dict[str, str]:
    """tag -> unique, portable ``.onnx`` file name (case-insensitively unique)."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for tag in tags:
        stem = "__".join(_UNSAFE.sub("_", s).strip(".") or "_" for s in tag.strip("/").split("/"))
        stem = stem or "module"
        if len(stem) > _MAX_STEM:
            digest = hashlib.sha1(tag.encode()).hexdigest()[:10]
            stem = f"{stem[: _MAX_STEM - 11]}-{digest}"
        candidate, suffix = stem, 1
        while candidate.lower() in taken:
            suffix += 1
            candidate = f"{stem}-{suffix}"
        taken.add(candidate.lower())
        names[tag] = f"{candidate}.onnx"
    return names
