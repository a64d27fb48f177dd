"""Instruction counts of chosen code regions, under valgrind's callgrind.

Wall time on a shared 2-core VM moves by 20-30% between runs, which hides differences of
a few percent. Callgrind counts executed instructions instead: the same count for the
same work whatever else the machine does (``PYTHONHASHSEED`` fixed). It is not time
(cache misses and memory stalls are not in it), so a bench reports it beside its timings.

A region is marked from Python with :func:`region` (callgrind's client requests, through
a tiny C library built with gcc on first use); outside valgrind the requests do nothing.
:func:`run_counted` runs a script under callgrind with collection off except inside the
regions and returns the count per region label.

Needs valgrind (with its headers, ``/usr/include/valgrind/callgrind.h``) and gcc.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

_SOURCE = """
#include <valgrind/callgrind.h>
void region_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_TOGGLE_COLLECT; }
void region_stop(const char *label) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS_AT(label); }
void instrument(void) { CALLGRIND_START_INSTRUMENTATION; }
"""
_LIBRARY_ENV = "GRAPHTAG_CALLGRIND_LIBRARY"


def available() -> str | None:
    """None when counting can run here, else what is missing."""
    if shutil.which("valgrind") is None:
        return "valgrind is not installed (apt-get install valgrind)"
    if shutil.which("gcc") is None:
        return "gcc is not installed"
    if not Path("/usr/include/valgrind/callgrind.h").is_file():
        return "valgrind's headers are missing (/usr/include/valgrind/callgrind.h)"
    return None


def _build(folder: Path) -> Path:
    source, library = folder / "regions.c", folder / "libregions.so"
    source.write_text(_SOURCE)
    subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library


@functools.cache
def _library() -> ctypes.CDLL | None:
    path = os.environ.get(_LIBRARY_ENV)
    if not path:
        return None  # not under run_counted: regions are plain code
    library = ctypes.CDLL(path)
    library.instrument()  # the interpreter started without instrumentation: faster
    return library


@contextlib.contextmanager
def region(label: str) -> Iterator[None]:
    """Count the instructions of the ``with`` body under ``label`` (no-op outside
    :func:`run_counted`). Labels may repeat: each region is its own dump."""
    library = _library()
    if library is None:
        yield
        return
    library.region_start()
    try:
        yield
    finally:
        library.region_stop(label.encode())


def run_counted(argv: Sequence[str], timeout: float = 3600) -> list[tuple[str, int]]:
    """Run ``python argv...`` under callgrind; (label, instructions) per region, in order."""
    missing = available()
    if missing:
        raise RuntimeError(f"cannot count instructions: {missing}")
    with tempfile.TemporaryDirectory(prefix="graphtag-callgrind-") as tmp:
        work = Path(tmp)
        env = dict(os.environ, PYTHONHASHSEED="0", **{_LIBRARY_ENV: str(_build(work))})
        out = work / "callgrind.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                "--instr-atstart=no",
                f"--callgrind-out-file={out}",
                sys.executable,
                *argv,
            ],
            env=env,
            check=True,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        counts = []
        dumps = sorted(work.glob("callgrind.out.*"), key=lambda p: int(p.suffix[1:]))
        for dump in dumps:
            text = dump.read_text(errors="replace")
            label = re.search(r"^desc: Trigger: Client Request: (.+)$", text, re.M)
            total = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
            if label and total:
                counts.append((label.group(1), int(total.group(1))))
        return counts
