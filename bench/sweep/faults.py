"""Faults injected into a tagged export, to prove that ``graphtag verify`` catches them.

Each injector edits an ``onnx_ir.Model`` in place (give it a copy) and returns the
:class:`Fault` it made, naming the modules that must then be MISMATCH or ERROR:

* ``perturb_initializer``: the first floating-point weight (two or more elements) a
  tagged node reads gets seeded random noise of its own mean magnitude (plus 0.1) on
  every element; the module of that node must fail. Noise, not a scale or a shift: a
  normalization that follows (LayerNorm after a patch-embedding convolution) cancels
  those exactly, and a change the model cannot see is no fault. For the same reason
  ``run.py`` keeps the fault only if ONNX Runtime itself sees it (the module's outputs
  on the faulted graph differ from the unfaulted graph's beyond verify's default
  tolerance) and otherwise takes the next weight (``skip``): a randomly initialised
  network can make one weight nearly irrelevant to the module's outputs.
* ``swap_tags``: every node of two modules gets the other's tag (two instances of one
  class when the model has them: same structure, different weights); both must fail.
* ``drop_node``: a node producing one of a module's outputs is removed and its users
  read its same-typed input instead (a pass that deleted a node it should have kept);
  that module must fail. Nodes whose output equals their input by construction
  (Identity, a Reshape/Cast to the same type and shape, ...) are not candidates:
  removing them is not a fault; one that is so by its weights (a word embedding scaled
  by 1.0) is skipped by ``run.py`` as a weight is, when ONNX Runtime sees no change.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from graphtag.analysis.boundaries import compute_boundaries
from graphtag.core import metadata


@dataclasses.dataclass(frozen=True)
class Fault:
    kind: str  # initializer | tags | node
    detail: str
    modules: tuple[str, ...]  # each must be MISMATCH or ERROR


def copy_model(model: ir.Model) -> ir.Model:
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


def perturb_initializer(model: ir.Model, skip: int = 0) -> Fault | None:
    """Perturb the ``skip``-th candidate weight (0: the first)."""
    for node in model.graph:
        tag = metadata.node_tag(node)
        if tag is None or node.op_type in ("Shape", "Size"):  # read the shape only
            continue
        for value in node.inputs:
            tensor = value.const_value if value is not None and value.is_initializer() else None
            if tensor is None or tensor.size < 2:
                continue
            array = tensor.numpy()
            if not np.issubdtype(array.dtype, np.floating):
                continue
            if skip > 0:
                skip -= 1
                continue
            noise = np.random.default_rng(0).standard_normal(array.shape)
            changed = array + noise * (float(np.abs(array).mean()) + 0.1)
            value.const_value = ir.tensor(changed.astype(array.dtype), name=value.name)
            return Fault("initializer", f"{value.name} + noise (read by {node.name})", (tag,))
    return None


def swap_tags(model: ir.Model) -> Fault | None:
    nodes_of: dict[str, list[ir.Node]] = {}
    for node in model.graph:
        tag = metadata.node_tag(node)
        if tag is not None:
            nodes_of.setdefault(tag, []).append(node)
    leaves = [t for t in nodes_of if not any(o.startswith(t + "/") for o in nodes_of)]
    pair = _same_class_pair(leaves) or (leaves[:2] if len(leaves) >= 2 else None)
    if pair is None:
        return None
    first, second = pair
    for node in nodes_of[first]:
        metadata.set_tag(node, second)
    for node in nodes_of[second]:
        metadata.set_tag(node, first)
    return Fault("tags", f"{first} <-> {second}", (first, second))


def _same_class_pair(tags: list[str]) -> tuple[str, str] | None:
    by_class: dict[tuple[str, str], str] = {}
    for tag in tags:
        parent, _, last = tag.rpartition("/")
        klass = last.split(".")[0]
        key = (parent.rsplit("/", 1)[-1].split(".")[0], klass)
        other = by_class.get(key)
        if other is not None and other != tag:
            return other, tag
        by_class[key] = tag
    return None


# Ops whose output can equal an input: removing them need not change any value.
_PASS_THROUGH = {
    "Identity",
    "Reshape",
    "Cast",
    "CastLike",
    "Expand",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Dropout",
    "Transpose",
    "Slice",
    "Max",
    "Min",
    "Clip",
    "Where",
    "Pad",
    "Concat",
    "Split",
    "Tile",
}


def drop_node(model: ir.Model, skip: int = 0) -> Fault | None:
    """Drop the ``skip``-th candidate node (0: the first)."""
    boundaries = compute_boundaries(model)
    for boundary in boundaries.values():
        outputs = {id(v) for v in boundary.outputs}
        for node in boundary.nodes:
            tag = metadata.node_tag(node)
            if tag is None or node.op_type in _PASS_THROUGH or node.domain not in ("", "ai.onnx"):
                continue
            if len(node.outputs) != 1 or id(node.outputs[0]) not in outputs:
                continue
            out = node.outputs[0]
            same = next((v for v in node.inputs if v is not None and _same_type(v, out)), None)
            if same is None or same.is_initializer() or out.is_graph_output():
                continue
            if skip > 0:
                skip -= 1
                continue
            out.replace_all_uses_with(same)
            node.graph.remove(node, safe=True)
            return Fault("node", f"{node.op_type} {node.name} removed", (tag,))
    return None


def _same_type(a: ir.Value, b: ir.Value) -> bool:
    return a.type == b.type and a.shape is not None and a.shape == b.shape


INJECTORS = {"initializer": perturb_initializer, "tags": swap_tags, "node": drop_node}
