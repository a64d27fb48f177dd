"""Golden regression checks over a zoo of models described in a TOML file.

Each ``[[model]]`` table names a model the way ``graphtag export`` takes it (``source``:
directory, hub id or ``module:factory``) plus export options; every model is exported in
its own ``graphtag export`` process (so one failure or crash never stops the others),
snapshotted (graphtag.tools.snapshot) and compared with ``<golden>/<name>.json``::

    [[model]]
    name = "bert-tiny"
    source = "graphtag.exporter.examples:tiny_bert"
    exporter = "dynamo"        # dynamo | torchscript | auto (default dynamo)
    optimize = true            # false: --no-optimize
    random_init = false
    keep_all_modules = false
    input_specs = "specs.json" # relative to the TOML file
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from graphtag.core.errors import GraphtagError
from graphtag.core.io import write_text_atomic

_OPTIONS = {"exporter", "optimize", "random_init", "keep_all_modules", "input_specs", "opset"}


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    name: str
    source: str
    options: dict

    def export_args(self, base: Path) -> list[str]:
        args = []
        opts = self.options
        if "exporter" in opts:
            args += ["--exporter", str(opts["exporter"])]
        if opts.get("optimize") is False:
            args.append("--no-optimize")
        if opts.get("random_init"):
            args.append("--random-init")
        if opts.get("keep_all_modules"):
            args.append("--keep-all-modules")
        if "opset" in opts:
            args += ["--opset", str(int(opts["opset"]))]
        if "input_specs" in opts:
            args += ["--input-specs", str(base / opts["input_specs"])]
        return args


@dataclasses.dataclass
class ZooResult:
    name: str
    status: str  # OK, CHANGED, NEW, UPDATED, FAILED
    seconds: float
    diff: list[str] = dataclasses.field(default_factory=list)
    error: str = ""


def load_zoo(path: str | os.PathLike) -> list[ZooEntry]:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GraphtagError(f"{path}: no such zoo file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise GraphtagError(f"{path}: not a readable zoo TOML ({exc})") from None
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


def check_entry(entry: ZooEntry, base: Path, golden: Path, update: bool) -> ZooResult:
    """Export one model in a subprocess, snapshot it, compare with (or write) its golden."""
    from graphtag.core.io import load
    from graphtag.tools.snapshot import diff_snapshots, dumps, snapshot

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="graphtag-zoo-") as tmp:
        out = Path(tmp) / f"{entry.name}.onnx"
        cmd = [
            sys.executable,
            "-m",
            "graphtag",
            "export",
            entry.source,
            str(out),
            *entry.export_args(base),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=base)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("graphtag:")]
            error = (
                lines[-1].removeprefix("graphtag: error: ")
                if lines
                else ((proc.stderr.strip().splitlines() or ["?"])[-1])
            )
            return ZooResult(entry.name, "FAILED", time.perf_counter() - start, error=error)
        current = snapshot(load(out))
    target = golden / f"{entry.name}.json"
    elapsed = time.perf_counter() - start
    if not target.exists():
        if update:
            _write_atomic(target, dumps(current))
            return ZooResult(entry.name, "NEW", elapsed)
        return ZooResult(entry.name, "NEW", elapsed, error=f"no golden file {target}")
    previous = json.loads(target.read_text(encoding="utf-8"))
    diff = diff_snapshots(previous, current)
    if not diff:
        return ZooResult(entry.name, "OK", elapsed)
    if update:
        _write_atomic(target, dumps(current))
        return ZooResult(entry.name, "UPDATED", elapsed, diff)
    return ZooResult(entry.name, "CHANGED", elapsed, diff)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)


def check_zoo(
    zoo_file: str | os.PathLike,
    golden: str | os.PathLike,
    *,
    update: bool = False,
    jobs: int = 1,
    on_result: Callable[[int, int, ZooResult], None] | None = None,
) -> list[ZooResult]:
    """Check every model of the zoo; ``jobs`` exports run at once (one process each)."""
    zoo_file = Path(zoo_file)
    entries = load_zoo(zoo_file)
    golden = Path(golden)
    if golden.exists() and not golden.is_dir():
        raise GraphtagError(f"{golden}: golden path is not a directory")
    if not golden.exists() and not update:
        raise GraphtagError(f"{golden}: no such golden directory (use --update to create it)")
    base = zoo_file.resolve().parent
    results: dict[str, ZooResult] = {}
    # Threads only wait on the export subprocesses; the exports run in parallel.
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(check_entry, e, base, golden, update): e for e in entries}
        for done, future in enumerate(as_completed(futures), 1):
            entry = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # a broken model must not stop the others
                result = ZooResult(entry.name, "FAILED", 0.0, error=f"{type(exc).__name__}: {exc}")
            results[entry.name] = result
            if on_result is not None:
                on_result(done, len(entries), result)
    return [results[e.name] for e in entries]
