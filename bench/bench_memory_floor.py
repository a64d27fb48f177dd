"""How much of toposort's t(300k)/t(30k) a shuffled graph costs before any sorting.

Usage::

    python bench/bench_memory_floor.py [--kinds chain diamond transformer] [--repeat N]

On the same shuffled synthetic models as ``bench_toposort.py``, times loops that every
sort of an onnx_ir graph has to do in some form, and prints how each grows from 30k to
300k nodes:

* ``read inputs``: read every input value of every node (nothing else);
* ``producer lookup``: the same, looking each value up in a dict of the graph's
  output values (how any sort finds an edge's producer).

A linear loop whose data stayed in the CPU caches would grow 10x. Medians of
``--repeat`` runs (default 5), each on a freshly built model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import deque
from itertools import repeat
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import KINDS, frozen_model, release

SIZES = (30_000, 300_000)


def _loops(n: int, kind: str) -> dict[str, float]:
    model = frozen_model(n, kind)
    nodes = list(model.graph)
    index = {value: i for i, node in enumerate(nodes) for value in node.outputs}
    times = {}
    start = time.perf_counter()
    for node in nodes:
        deque(node.inputs, 0)
    times["read inputs"] = time.perf_counter() - start
    get, outside = index.get, repeat(-1)
    start = time.perf_counter()
    for node in nodes:
        deque(map(get, node.inputs, outside), 0)
    times["producer lookup"] = time.perf_counter() - start
    del model, nodes, index
    release()
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print("| shape | loop | 30k s | 300k s | t(300k)/t(30k) |")
    print("|---|---|---:|---:|---:|")
    for kind in args.kinds:
        runs = {n: [_loops(n, kind) for _ in range(args.repeat)] for n in SIZES}
        for loop in runs[SIZES[0]][0]:
            small, large = (statistics.median(r[loop] for r in runs[n]) for n in SIZES)
            print(f"| {kind} | {loop} | {small:.4f} | {large:.4f} | {large / small:.1f} |")


if __name__ == "__main__":
    main()
