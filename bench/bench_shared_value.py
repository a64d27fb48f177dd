"""Benchmark: multi-consumer, residual-resolution and contamination on a value shared by
every node, at two sizes (the near-linear check that used to be one timed unit test).

The graph: ``n`` Add nodes in 50 layers, each reading the previous node and one
CSE-shared mask computed in layer 0, so the mask has ``n`` consumers in 50 modules (the
worst case for per-consumer work). Times the three steps on a fresh model at ``n`` and
``10 n``; goal: t(10 n) / t(n) <= 12 (linear would be 10; quadratic 100).

    python bench/bench_shared_value.py [--sizes 30000 300000] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

import onnx_ir as ir

from graphtag.core import metadata
from graphtag.passes.multi_consumer import MultiConsumerPass
from graphtag.passes.residual_resolution import ResidualResolutionPass, contamination

FLOAT = ir.TensorType(ir.DataType.FLOAT)
LAYERS = 50


def _op(op: str, inputs, name: str, tag: str, scopes: list[str]) -> ir.Node:
    node = ir.Node("", op, inputs, name=name, num_outputs=1)
    node.outputs[0].name = f"{name}_out"
    node.metadata_props[metadata.MODULE] = tag
    node.metadata_props[metadata.TORCH_NAME_SCOPES] = repr(scopes)
    return node


def shared_mask_model(n: int) -> tuple[ir.Model, ir.Value]:
    x = ir.Value(name="x", shape=ir.Shape([4]), type=FLOAT)
    mask = _op("Neg", [x], "mask", "/M/Layer.0/Attn", ["", "layers.0", "layers.0.attn", "neg"])
    nodes, previous = [mask], x
    for i in range(n):
        layer = i * LAYERS // n
        scopes = ["", f"layers.{layer}", f"layers.{layer}.attn", f"add_{i}"]
        node = _op("Add", [previous, mask.outputs[0]], f"n{i}", f"/M/Layer.{layer}/Attn", scopes)
        nodes.append(node)
        previous = node.outputs[0]
    graph = ir.Graph([x], [previous], nodes=nodes, opset_imports={"": 21}, name="big")
    return ir.Model(graph, ir_version=10), mask.outputs[0]


def time_once(n: int) -> float:
    model, mask = shared_mask_model(n)
    gc.collect()
    start = time.perf_counter()
    MultiConsumerPass()(model)
    ResidualResolutionPass()(model)
    contamination(model)
    elapsed = time.perf_counter() - start
    # The work was done: the mask's consumers are the 50 layers.
    assert len(json.loads(mask.metadata_props[metadata.CONSUMERS])) == LAYERS
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[30_000, 300_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    small, large = args.sizes
    times = {n: statistics.median(time_once(n) for _ in range(args.repeat)) for n in (small, large)}
    ratio = times[large] / times[small]
    print(f"{small} nodes: {times[small]:.3f} s   {large} nodes: {times[large]:.3f} s")
    print(f"t({large}) / t({small}) = {ratio:.1f} (goal <= {1.2 * large / small:.0f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds": times, "ratio": ratio}, f, indent=2)


if __name__ == "__main__":
    main()
