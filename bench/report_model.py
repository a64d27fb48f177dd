"""A large tagged model for the report: ~1,000 modules, ~30k nodes, a hierarchy, weights.

Built from :func:`synthetic.build_model`'s transformer shape (29-node pre-norm blocks,
5 modules per block): ``group`` consecutive blocks are merged into one layer, so
``layers`` layers hold ``layers * group * 29`` nodes in ``5 * layers + 1`` modules. Every
module gets its own [8, 8] float32 weight (an initializer read by its MatMuls, so the
parameter treemap has something to show) and a hierarchy entry with a class name; a
matching ``graphtag.profile/1`` document gives every module made-up times.
"""

from __future__ import annotations

import random

import numpy as np
import onnx_ir as ir
from synthetic import HIDDEN, build_model

from graphtag.core import metadata
from graphtag.core.hierarchy import Hierarchy, ModuleInfo, tag_parent

CLASSES = {
    "Layer": "synthetic.Block",
    "Attention": "synthetic.Attention",
    "LayerNorm1": "torch.nn.LayerNorm",
    "LayerNorm2": "torch.nn.LayerNorm",
    "MLP": "synthetic.MLP",
}


def report_model(layers: int = 207, group: int = 5) -> ir.Model:
    model = build_model(layers * group * 29, "transformer", shuffle=False)
    graph = model.graph
    for node in graph:
        tag = metadata.node_tag(node)
        segments = tag.split("/")  # ['', 'Model', 'Layer.<block>', ...]
        segments[2] = f"Layer.{int(segments[2].split('.')[1]) // group}"
        metadata.set_tag(node, "/".join(segments))
    tags = sorted({metadata.node_tag(n) for n in graph} | {"/Model"}, key=_tag_order)
    w = graph.inputs[1]
    weights: dict[str, ir.Value] = {}  # one per module whose nodes read w
    for node in graph:
        for i, value in enumerate(node.inputs):
            if value is w:
                node.replace_input_with(i, _weight(graph, weights, metadata.node_tag(node)))
    modules = {}
    for tag in tags:
        last = tag.rsplit("/", 1)[-1].split(".")[0]
        modules[tag] = ModuleInfo(
            tag=tag,
            name=tag[len("/Model/") :].replace("/", ".").lower() if tag != "/Model" else "",
            class_name=CLASSES.get(last, "synthetic.Model"),
            parent=tag_parent(tag),
            parameters=[weights[tag].name] if tag in weights else [],
            executed=True,
        )
    Hierarchy(modules, {m.name: t for t, m in modules.items()}).attach(model)
    return model


def _weight(graph: ir.Graph, weights: dict[str, ir.Value], tag: str) -> ir.Value:
    if tag not in weights:
        k = len(weights)
        array = np.full((HIDDEN, HIDDEN), 0.01 * (k % 7 + 1), np.float32)
        value = ir.Value(
            name=f"p{k}",
            shape=ir.Shape([HIDDEN, HIDDEN]),
            type=ir.TensorType(ir.DataType.FLOAT),
            const_value=ir.tensor(array, name=f"p{k}"),
        )
        graph.register_initializer(value)
        weights[tag] = value
    return weights[tag]


def _tag_order(tag: str) -> tuple:
    return tuple(int(s.split(".")[1]) if s.startswith("Layer.") else s for s in tag.split("/"))


def report_profile(model: ir.Model, seed: int = 0) -> dict:
    rng = random.Random(seed)
    own: dict[str, int] = {}
    for node in model.graph:
        own[metadata.node_tag(node)] = own.get(metadata.node_tag(node), 0) + 1
    hierarchy = Hierarchy.from_model(model)
    self_ms = {tag: own.get(tag, 0) * rng.uniform(0.001, 0.01) for tag in hierarchy.modules}
    total = dict(self_ms)
    for tag in reversed(list(hierarchy.modules)):
        parent = tag_parent(tag)
        if parent is not None:
            total[parent] += total[tag]
    return {
        "schema": "graphtag.profile/1",
        "total_ms": total["/Model"],
        "runs": 10,
        "modules": {
            tag: {
                "self_ms": self_ms[tag],
                "total_ms": total[tag],
                "calls": 1,
                "nodes": own.get(tag, 0),
            }
            for tag in hierarchy.modules
        },
    }
