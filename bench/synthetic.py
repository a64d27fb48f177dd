"""Synthetic onnx_ir models for benchmarks (torch-free, reusable by every benchmark).

:func:`build_model` returns a model with about ``n_nodes`` nodes in one of three shapes:

* ``chain``: ``Relu -> Neg -> Relu -> ...``, one long dependency chain;
* ``diamond``: repeated ``x -> (Relu, Sigmoid) -> Add`` diamonds;
* ``transformer``: repeated pre-norm blocks (layer norm, attention, MLP, residuals),
  each block 29 nodes, tagged like graphtag tags them
  (``/Model/Layer.3/Attention``).

Nodes are ONNX ops with float32 tensors so the models serialise and pass the structural
checker; they are not meant to be run. With ``shuffle=True`` the node order is a seeded
random permutation, so the graph needs a topological sort.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Callable
from typing import Literal

import onnx_ir as ir

Kind = Literal["chain", "diamond", "transformer"]
KINDS: tuple[Kind, ...] = ("chain", "diamond", "transformer")
MODULE_KEY = "pkg.graphtag.module"  # same as graphtag.core.metadata.MODULE, kept import-free
HIDDEN = 8


class _Builder:
    """Records the ops as a plain spec; :func:`build_model` materialises them later.

    Values are referred to by integer ids: -1 is ``x``, -2 is ``w``, ``k >= 0`` is the
    output of op ``k``.
    """

    def __init__(self) -> None:
        self.ops: list[tuple[str, tuple[int, ...], str, dict[str, object]]] = []

    def op(self, op_type: str, inputs: list[int], tag: str, **attrs: object) -> int:
        self.ops.append((op_type, tuple(inputs), tag, attrs))
        return len(self.ops) - 1


def _chain(b: _Builder, x: int, n: int, _w: int) -> int:
    for i in range(n):
        x = b.op("Relu" if i % 2 == 0 else "Neg", [x], f"/Model/Chain.{i // 100}")
    return x


def _diamond(b: _Builder, x: int, n: int, _w: int) -> int:
    for i in range(max(1, n // 3)):
        tag = f"/Model/Diamond.{i // 30}"
        left = b.op("Relu", [x], tag)
        right = b.op("Sigmoid", [x], tag)
        x = b.op("Add", [left, right], tag)
    return x


def _layer_norm(b: _Builder, x: int, tag: str) -> int:
    mean = b.op("ReduceMean", [x], tag, keepdims=1)
    centred = b.op("Sub", [x, mean], tag)
    square = b.op("Mul", [centred, centred], tag)
    var = b.op("ReduceMean", [square], tag, keepdims=1)
    std = b.op("Sqrt", [var], tag)
    return b.op("Div", [centred, std], tag)


def _transformer(b: _Builder, x: int, n: int, w: int) -> int:
    # One block is 29 nodes; see the docstring for the layout.
    for layer in range(max(1, round(n / 29))):
        base = f"/Model/Layer.{layer}"
        h = _layer_norm(b, x, f"{base}/LayerNorm1")
        att = f"{base}/Attention"
        q = b.op("MatMul", [h, w], att)
        k = b.op("MatMul", [h, w], att)
        v = b.op("MatMul", [h, w], att)
        kt = b.op("Transpose", [k], att, perm=[1, 0])
        scores = b.op("MatMul", [q, kt], att)
        probs = b.op("Softmax", [scores], att, axis=-1)
        ctx = b.op("MatMul", [probs, v], att)
        proj = b.op("MatMul", [ctx, w], att)
        x = b.op("Add", [x, proj], base)
        h = _layer_norm(b, x, f"{base}/LayerNorm2")
        mlp = f"{base}/MLP"
        up = b.op("MatMul", [h, w], mlp)
        up = b.op("Add", [up, w], mlp)
        act = b.op("Relu", [up], mlp)
        down = b.op("MatMul", [act, w], mlp)
        down = b.op("Add", [down, w], mlp)
        dropout = b.op("Identity", [down], mlp)
        x = b.op("Add", [x, dropout], base)
        x = b.op("Identity", [x], base)
    return x


_SHAPES: dict[str, Callable[[_Builder, int, int, int], int]] = {
    "chain": _chain,
    "diamond": _diamond,
    "transformer": _transformer,
}


def build_model(
    n_nodes: int,
    kind: Kind = "transformer",
    *,
    tags: bool = True,
    shuffle: bool = True,
    seed: int = 0,
) -> ir.Model:
    """A model with about ``n_nodes`` nodes of the given shape.

    ``tags`` writes a ``pkg.graphtag.module`` tag on every node; ``shuffle`` permutes
    the node order with ``random.Random(seed)`` (the unshuffled order is topological).
    Nodes are created in their final graph order, so memory layout follows node order
    as it does for a model loaded from a file.
    """
    if kind not in _SHAPES:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    float_type = ir.TensorType(ir.DataType.FLOAT)
    x = ir.Value(name="x", shape=ir.Shape([HIDDEN, HIDDEN]), type=float_type)
    w = ir.Value(name="w", shape=ir.Shape([HIDDEN, HIDDEN]), type=float_type)
    builder = _Builder()
    out = _SHAPES[kind](builder, -1, max(1, n_nodes), -2)
    ops = builder.ops
    order = list(range(len(ops)))
    if shuffle:
        random.Random(seed).shuffle(order)
    # Create every output value first so nodes can be created in any order.
    values: dict[int, ir.Value] = {-1: x, -2: w}
    for k in order:
        values[k] = ir.Value(name=f"v{k}", type=float_type)
    nodes = []
    for k in order:
        op_type, inputs, tag, attrs = ops[k]
        nodes.append(
            ir.node(
                op_type,
                [values[i] for i in inputs],
                attributes=attrs or None,
                outputs=[values[k]],
                name=f"n{k}",
                metadata_props={MODULE_KEY: tag} if tags else None,
            )
        )
    graph = ir.Graph(
        [x, w], [values[out]], nodes=nodes, opset_imports={"": 18}, name=f"synthetic_{kind}"
    )
    return ir.Model(graph, ir_version=10)


def copy_model(model: ir.Model) -> ir.Model:
    """A fresh, independent copy (same node order) via a proto round trip (slow)."""
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


def frozen_model(n_nodes: int, kind: Kind) -> ir.Model:
    """A shuffled, tagged model built with the collector off, then frozen (``gc.freeze``).

    Collections during a timed region then scan only what the measured code allocates.
    Call :func:`release` once the model is dropped.
    """
    gc.collect()
    gc.disable()
    try:
        model = build_model(n_nodes, kind, tags=True, shuffle=True, seed=0)
    finally:
        gc.enable()
    gc.freeze()
    return model


def release() -> None:
    """Undo :func:`frozen_model`'s freeze and collect what was dropped."""
    gc.unfreeze()
    gc.collect()
