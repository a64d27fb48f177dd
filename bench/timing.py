"""Timing and the synthetic-scaling table the benchmarks share (no torch: a plain import)."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` takes, garbage collected beforehand."""
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def add_synthetic(result: dict, rows: list[dict], key: str, columns: str) -> None:
    """Print ``rows`` (``nodes`` and ``key`` seconds) as a table headed ``columns`` and,
    given two sizes or more, t(largest) / t(smallest); keep both in ``result``
    (``synthetic``, ``scaling``)."""
    result["synthetic"] = rows
    print(f"\n| {columns} |\n|---:|---:|")
    for row in rows:
        print(f"| {row['nodes']} | {row[key]:.3f} |")
    if len(rows) >= 2:
        result["scaling"] = rows[-1][key] / rows[0][key]
        print(f"\nt({rows[-1]['nodes']}) / t({rows[0]['nodes']}) = {result['scaling']:.1f}")
