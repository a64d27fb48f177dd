"""Golden regression checks over a zoo of models described in a TOML file.

Each ``[[model]]`` table names a model the way ``graphtag export`` takes it (``source``:
directory, hub id or ``module:factory``, relative to the TOML file's folder) plus
export options::

    [[model]]
    name = "bert-tiny"
    source = "graphtag.exporter.examples:tiny_bert"
    exporter = "auto"          # auto | dynamo | torchscript (default auto)
    optimize = true            # false: optimize=False
    random_init = false
    keep_all_modules = false
    opset = 18
    input_specs = "specs.json" # relative to the TOML file

Every model is loaded and exported by the library in its own worker process, forked
from a fork server that has imported torch and the exporter once and runs no model
(``spawn``, a fresh interpreter each, where there is no fork server): one model's
imports and state never leak into another's, and a worker starts in milliseconds
instead of importing torch again (seconds). The model is snapshotted there
(graphtag.tools.snapshot) and the snapshot sent back as plain data; the parent compares
it with ``<golden>/<name>.json``. A model that fails
comes back as FAILED with its one-line error; a worker that dies (a crash, a kill, an
exit) is reported as FAILED with its exit status; neither stops the others. ``jobs``
workers run at once.

Sharding: :func:`select_shard` keeps model number ``i`` (0-based, in file order) in
shard ``i % N + 1`` of ``N``. The shards are disjoint, their union is the whole zoo,
their sizes differ by at most one, and the split depends on the file alone (the same
on every run and machine).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import multiprocessing
import os
import re
import signal
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from graphtag.core.errors import GraphtagError, first_line
from graphtag.core.io import write_text_atomic
from graphtag.core.toml_files import read_toml

logger = logging.getLogger(__name__)

_OPTIONS = {"exporter", "optimize", "random_init", "keep_all_modules", "input_specs", "opset"}
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    name: str
    source: str
    options: dict


@dataclasses.dataclass
class ZooResult:
    name: str
    status: str  # OK, CHANGED, NEW, UPDATED, FAILED
    seconds: float
    diff: list[str] = dataclasses.field(default_factory=list)
    error: str = ""
    route: str = ""  # the export route the model took


def load_zoo(path: str | os.PathLike) -> list[ZooEntry]:
    path = Path(path)
    data = read_toml(path, "zoo")
    entries = []
    for index, table in enumerate(data.get("model", []), 1):
        name, source = table.get("name"), table.get("source")
        if not isinstance(name, str) or not isinstance(source, str):
            raise GraphtagError(f"{path}: [[model]] number {index} needs 'name' and 'source'")
        unknown = set(table) - _OPTIONS - {"name", "source"}
        if unknown:
            raise GraphtagError(
                f"{path}: model '{name}' has unknown keys {sorted(unknown)} "
                f"(valid: {', '.join(sorted(_OPTIONS))})"
            )
        if any(e.name == name for e in entries):
            raise GraphtagError(f"{path}: model name '{name}' is used twice")
        entries.append(ZooEntry(name, source, {k: v for k, v in table.items() if k in _OPTIONS}))
    if not entries:
        raise GraphtagError(f"{path}: no [[model]] tables")
    return entries


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 1 <= K <= N."""
    match = _SHARD.match(text)
    if not match:
        raise GraphtagError(f"shard must be K/N (e.g. 2/4), got {text!r}")
    index, count = int(match[1]), int(match[2])
    if not 1 <= index <= count:
        raise GraphtagError(f"shard {text!r}: K must be between 1 and N")
    return index, count


def select_shard(entries: Sequence[ZooEntry], index: int, count: int) -> list[ZooEntry]:
    """Shard ``index`` of ``count`` (1-based): entries ``index-1``, ``index-1+count``, ..."""
    return [entry for position, entry in enumerate(entries) if position % count == index - 1]


# ---------------------------------------------------------------------------- the worker


def export_snapshot(entry: ZooEntry, base: Path) -> dict:
    """Load and export one model as ``graphtag export`` does; its snapshot and route.

    Runs in a worker process (it imports torch and the model's code). The model is
    written to a temporary file and read back, so the snapshot is that of the file.
    """
    from graphtag.core import metadata
    from graphtag.core.io import load
    from graphtag.exporter.module_tree import FilterConfig
    from graphtag.exporter.noise import quiet_torch
    from graphtag.exporter.sources import load_model, prepare_inputs
    from graphtag.exporter.tagged_export import export
    from graphtag.tools.snapshot import snapshot

    opts = entry.options
    torch_options: dict[str, Any] = {"verbose": False}
    if opts.get("optimize") is False:
        torch_options["optimize"] = False
    if "opset" in opts:
        torch_options["opset_version"] = int(opts["opset"])
    specs = base / opts["input_specs"] if "input_specs" in opts else None
    with quiet_torch():
        loaded = load_model(entry.source, random_init=bool(opts.get("random_init")))
        inputs = prepare_inputs(loaded, specs)
        with tempfile.TemporaryDirectory(prefix="graphtag-zoo-") as tmp:
            out = Path(tmp) / f"{entry.name}.onnx"
            export(
                loaded.module,
                inputs.args,
                inputs.kwargs,
                out,
                exporter=str(opts.get("exporter", "auto")),
                filter_config=FilterConfig(keep_all=bool(opts.get("keep_all_modules"))),
                check_fallback=False,  # the zoo compares structure; verify compares outputs
                **torch_options,
            )
            model = load(out)
            return {
                "snapshot": snapshot(model),
                "route": model.metadata_props.get(metadata.EXPORT_ROUTE, ""),
            }


def _worker(entry: ZooEntry, base: str, conn: Connection) -> None:
    """Worker process body: one model, one message back (never raises)."""
    os.chdir(base)  # sources such as "zoo.py:bert" are relative to the zoo file
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the parent's stdout is its report
            message = {"ok": export_snapshot(entry, Path(base))}
    except GraphtagError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        message = {"error": " ".join(lines) or type(exc).__name__}  # one line per model
    except BaseException as exc:  # report anything, the parent decides
        last = traceback.extract_tb(exc.__traceback__)[-1:] or [None]
        where = f" at {Path(last[0].filename).name}:{last[0].lineno}" if last[0] else ""
        message = {"error": f"{first_line(exc, typed=True)}{where}"}
    conn.send(message)
    conn.close()


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


@dataclasses.dataclass
class _Running:
    entry: ZooEntry
    process: Any
    conn: Connection
    started: float


def run_workers(
    entries: Sequence[ZooEntry],
    base: Path,
    jobs: int,
    done: Callable[[ZooEntry, dict, float], None],
) -> None:
    """Export every entry in its own worker process (:func:`_worker_context`), ``jobs``
    at a time.

    ``done(entry, message, seconds)`` gets ``{"ok": {"snapshot", "route"}}`` or
    ``{"error": line}``, also when the worker died without a word.
    """
    context = _worker_context()
    pending = list(entries)
    running: list[_Running] = []
    while pending or running:
        while pending and len(running) < max(1, jobs):
            entry = pending.pop(0)
            try:
                process, reader = _start(context, entry, base)
            except OSError as exc:
                if context.get_start_method() != "forkserver":
                    raise
                # Its socket lives in TMPDIR, whose path may be too long for one.
                logger.info("the fork server cannot start (%s): spawning workers", exc)
                context = multiprocessing.get_context("spawn")
                process, reader = _start(context, entry, base)
            running.append(_Running(entry, process, reader, time.perf_counter()))
        # A pipe is ready when its message arrived or when the worker died (EOF).
        ready = set(wait([item.conn for item in running]))
        for item in [item for item in running if item.conn in ready]:
            try:
                message = item.conn.recv()
            except (EOFError, OSError):
                message = None
            item.conn.close()
            item.process.join(timeout=60)
            if item.process.is_alive():  # sent its result but hangs on the way out
                item.process.kill()
                item.process.join()
            if not isinstance(message, dict) or not message:
                message = {"error": f"worker process died ({_exit_text(item.process.exitcode)})"}
            running.remove(item)
            done(item.entry, message, time.perf_counter() - item.started)


def _start(context, entry: ZooEntry, base: Path) -> tuple[Any, Connection]:
    """A started worker for ``entry`` and the end of the pipe its message comes on."""
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(
        target=_worker, args=(entry, str(base), writer), name=f"graphtag-zoo-{entry.name}"
    )
    try:
        process.start()
    except BaseException:
        reader.close()
        raise
    finally:
        writer.close()  # only the child holds it now: EOF here when the child is gone
    return process, reader


# What every worker imports, whatever its model: loaded once by the fork server.
_PRELOAD = ["torch", "graphtag.exporter.tagged_export", "graphtag.exporter.sources"]


def _worker_context():
    """Forks from a fork server that has imported :data:`_PRELOAD` where the platform has
    one (Linux, macOS), fresh interpreters (``spawn``) elsewhere. The server imports and
    runs nothing else, so each worker starts from the same clean state as a spawned one.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return context


# ---------------------------------------------------------------------------- the check


def _compare(
    entry: ZooEntry, current: dict, golden: Path, update: bool, elapsed: float, route: str
):
    from graphtag.tools.snapshot import diff_snapshots, dumps

    target = golden / f"{entry.name}.json"
    if not target.exists():
        if update:
            _write_atomic(target, dumps(current))
            return ZooResult(entry.name, "NEW", elapsed, route=route)
        return ZooResult(entry.name, "NEW", elapsed, error=f"no golden file {target}", route=route)
    previous = json.loads(target.read_text(encoding="utf-8"))
    diff = diff_snapshots(previous, current)
    if not diff:
        return ZooResult(entry.name, "OK", elapsed, route=route)
    if update:
        _write_atomic(target, dumps(current))
        return ZooResult(entry.name, "UPDATED", elapsed, diff, route=route)
    return ZooResult(entry.name, "CHANGED", elapsed, diff, route=route)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)


def check_zoo(
    zoo_file: str | os.PathLike,
    golden: str | os.PathLike,
    *,
    update: bool = False,
    jobs: int = 1,
    shard: tuple[int, int] | None = None,
    on_result: Callable[[int, int, ZooResult], None] | None = None,
) -> list[ZooResult]:
    """Check the zoo's models (``shard`` = (K, N): only shard K of N), ``jobs`` at once.

    Returns one result per checked model, in file order.
    """
    zoo_file = Path(zoo_file)
    entries = load_zoo(zoo_file)
    if shard is not None:
        entries = select_shard(entries, *shard)
    golden = Path(golden)
    if golden.exists() and not golden.is_dir():
        raise GraphtagError(f"{golden}: golden path is not a directory")
    if not golden.exists() and not update:
        raise GraphtagError(f"{golden}: no such golden directory (use --update to create it)")
    base = zoo_file.resolve().parent
    results: dict[str, ZooResult] = {}

    def done(entry: ZooEntry, message: dict, elapsed: float) -> None:
        if "ok" in message:
            data = message["ok"]
            result = _compare(entry, data["snapshot"], golden, update, elapsed, data["route"])
        else:
            result = ZooResult(entry.name, "FAILED", elapsed, error=message["error"])
        results[entry.name] = result
        if on_result is not None:
            on_result(len(results), len(entries), result)

    run_workers(entries, base, jobs, done)
    return [results[e.name] for e in entries]
