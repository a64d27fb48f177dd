"""Byte-level fuzzing of graphtag's commands (the suite's test and bench/bench_fuzz.py).

A mutant is a small tagged model's bytes with one random edit (bytes flipped, set,
inserted, deleted, duplicated, or the file truncated). Each mutant goes through
``graphtag.load``, ``validate``, ``analyze``, ``run``, ``extract --module`` and
``extract --all``, in-process (``graphtag.cli.main``, as the user's command would run,
without paying the interpreter's start-up per command). What must hold for every one:

* no exit status 3 (an internal error: a bug), no traceback on stderr, no exception
  escaping ``main``, no command running longer than ``HANG_SECONDS``;
* a command that fails leaves no output behind (no partial file, no staging folder);
* a mutant ``validate`` accepts can be saved (``graphtag.save``) and read back by onnx.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

HANG_SECONDS = 30

# (name, argv) with M the mutant, OUT an output path; one module of each test model.
COMMANDS = (
    ("validate", ["validate", "M", "--format", "json"]),
    ("analyze", ["analyze", "M", "--format", "json"]),
    ("run", ["run", "M", "-p", "toposort,tag-propagation,multi-consumer", "-o", "OUT"]),
    ("extract", ["extract", "M", "--module", "MODULE", "-o", "OUT"]),
    ("extract-all", ["extract", "M", "--all", "-o", "OUT"]),
)


class Hang(BaseException):
    """A command ran past HANG_SECONDS (BaseException: main() must not swallow it)."""


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One random edit of ``data``: (what was done, the mutant's bytes)."""
    size = len(data)
    at = int(rng.integers(size))
    span = int(rng.choice([1, 1, 1, 2, 4, 8]))  # mostly small: framing often survives
    kind = ("flip", "set", "insert", "delete", "duplicate", "truncate")[int(rng.integers(6))]
    if kind == "flip":
        out = bytearray(data)
        for i in range(at, min(at + span, size)):
            out[i] ^= 1 << int(rng.integers(8))
        return kind, bytes(out)
    if kind == "set":
        out = bytearray(data)
        fill = rng.choice([0x00, 0xFF, 0x80, 0x7F, int(rng.integers(256))])
        out[at : at + span] = bytes([int(fill)]) * len(out[at : at + span])
        return kind, bytes(out)
    if kind == "insert":
        return kind, data[:at] + rng.integers(256, size=span, dtype=np.uint8).tobytes() + data[at:]
    if kind == "delete":
        return kind, data[:at] + data[at + span :]
    if kind == "duplicate":
        return kind, data[: at + span] + data[at : at + span] + data[at + span :]
    return kind, data[:at]


@dataclasses.dataclass
class Outcome:
    mutant: int
    edit: str
    step: str
    code: int | None  # None: load/save steps, or an exception escaped
    problem: str = ""  # empty when the step behaved


def _call(main: Callable, argv: list[str]) -> tuple[int | None, str, str]:
    """Run ``main(argv)``: (exit status or None, stderr, what escaped)."""
    err, out = io.StringIO(), io.StringIO()

    def alarm(signum, frame):
        raise Hang

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_SECONDS)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(argv)
        return code, err.getvalue(), ""
    except Hang:
        return None, err.getvalue(), f"hang (over {HANG_SECONDS} s)"
    except SystemExit as exc:  # argparse: usage errors exit 2
        return int(exc.code or 0), err.getvalue(), ""
    except BaseException as exc:
        return None, err.getvalue(), f"escaped main: {type(exc).__name__}: {exc}"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_mutant(index: int, edit: str, path: Path, module: str, work: Path) -> Iterator[Outcome]:
    """Every step on one mutant file; yields one Outcome per step."""
    import onnx

    import graphtag
    from graphtag.cli import main
    from graphtag.core.errors import GraphtagError

    try:
        graphtag.load(path)
        yield Outcome(index, edit, "load", None)
    except GraphtagError:
        yield Outcome(index, edit, "load", None)
    except Exception as exc:
        yield Outcome(index, edit, "load", None, f"load raised {type(exc).__name__}: {exc}")
    valid = False
    for step, template in COMMANDS:
        out = work / f"{index}-{step}"
        out = out.with_suffix(".onnx") if step != "extract-all" else out
        argv = [{"M": str(path), "OUT": str(out), "MODULE": module}.get(a, a) for a in template]
        code, err, escaped = _call(main, argv)
        problem = escaped
        if not problem and code == 3:
            problem = "exit 3 (internal error): " + err.strip().splitlines()[-1]
        elif not problem and "Traceback" in err:
            problem = "traceback on stderr"
        elif not problem and code not in (0, 1, 2):
            problem = f"exit {code}"
        elif not problem and code != 0 and out.exists():
            problem = f"failed (exit {code}) but left {out.name} behind"
        leftovers = [p.name for p in work.iterdir() if p.name.startswith(".")]
        if not problem and leftovers:
            problem = f"temporary files left: {leftovers}"
        yield Outcome(index, edit, step, code, problem)
        if step == "validate":
            valid = code == 0
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
    if valid:  # what validate accepts, save must write
        saved = work / f"{index}-saved.onnx"
        try:
            graphtag.save(graphtag.load(path), saved)
            onnx.load(saved)
            yield Outcome(index, edit, "save", None)
        except Exception as exc:
            yield Outcome(index, edit, "save", None, f"validate passed, save failed: {exc}")
        saved.unlink(missing_ok=True)


def fuzz(
    seeds: dict[str, tuple[bytes, str]],
    count: int,
    work: Path,
    *,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> list[Outcome]:
    """``count`` mutants of each seed model (name -> (bytes, a module tag to extract))."""
    rng = np.random.default_rng(seed)
    outcomes: list[Outcome] = []
    index = 0
    for name, (data, module) in seeds.items():
        for _ in range(count):
            edit, mutant = mutate(data, rng)
            path = work / f"{name}-{index}.onnx"
            path.write_bytes(mutant)
            outcomes.extend(check_mutant(index, f"{name}:{edit}", path, module, work))
            path.unlink()
            index += 1
            if progress:
                progress(index)
    return outcomes


def summarize(outcomes: list[Outcome]) -> dict[str, dict[str, int]]:
    """step -> {exit status or 'ok'/'problem': count}."""
    table: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for o in outcomes:
        key = "problem" if o.problem else ("ok" if o.code is None else f"exit {o.code}")
        table[o.step][key] += 1
    return {step: dict(sorted(c.items())) for step, c in table.items()}
