"""Inputs for profiling an ONNX file: from an input-spec file, else from the input types.

Values follow the spec format's rules (graphtag.core.input_specs), drawn from a fixed
seed so two profiles of one model see the same data: integers in ``[low, high)``
(default ``[0, 2)``, safe as indices), floats standard normal (uniform when bounded),
booleans random, ``value`` fills. Without a spec, an input's static dimensions are kept
and every symbolic one is 1. A spec must name real inputs and agree with their element
type, rank and static dimensions; each mismatch is one error line naming the input.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx_ir as ir

from graphtag.core.errors import GraphtagError

_SEED = 0
# Spec dtype names (graphtag.core.input_specs.DTYPES) whose ONNX name differs.
_SPEC_NAME = {ir.DataType.FLOAT: "float32", ir.DataType.DOUBLE: "float64"}


def feed_inputs(model: ir.Model) -> list[ir.Value]:
    """The inputs a caller must feed: graph inputs that are not initializers."""
    initializers = model.graph.initializers
    return [v for v in model.graph.inputs if v.name not in initializers]


def make_feeds(
    model: ir.Model, specs: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, np.ndarray]:
    """One array per input: from ``specs`` where it names the input, else from its type."""
    inputs = feed_inputs(model)
    names = {v.name for v in inputs}
    specs = dict(specs or {})
    unknown = [name for name in specs if name not in names]
    if unknown:
        listed = ", ".join(v.name for v in inputs) or "none"
        raise GraphtagError(
            f"input specs: input '{unknown[0]}' is not an input of the model (its inputs: {listed})"
        )
    rng = np.random.default_rng(_SEED)
    feeds: dict[str, np.ndarray] = {}
    for value in inputs:
        dtype = _element_type(value)
        spec = specs.get(value.name)
        if spec is not None:
            _check_fits(value, dtype, spec)
            shape, bounds = tuple(spec["shape"]), spec
        else:
            shape, bounds = _default_shape(value), {}
        feeds[value.name] = _values(rng, dtype, shape, bounds, value.name)
    return feeds


def describe(feeds: Mapping[str, np.ndarray]) -> str:
    """``name dtype[d0, d1]`` per input, for progress messages."""
    return ", ".join(f"{name} {a.dtype}{list(a.shape)}" for name, a in feeds.items())


def spec_dtype_name(dtype: ir.DataType) -> str:
    """The spec file's name for an ONNX element type (``float32`` for FLOAT, ...)."""
    return _SPEC_NAME.get(dtype, dtype.name.lower())


def _element_type(value: ir.Value) -> ir.DataType:
    if not isinstance(value.type, ir.TensorType) or value.dtype is None:
        kind = type(value.type).__name__ if value.type is not None else "unknown"
        raise GraphtagError(
            f"input '{value.name}' is not a tensor (type {kind}): graphtag profile feeds "
            "tensor inputs only"
        )
    return value.dtype


def _check_fits(value: ir.Value, dtype: ir.DataType, spec: Mapping[str, Any]) -> None:
    want = spec_dtype_name(dtype)
    if spec["dtype"] != want:
        raise GraphtagError(
            f"input specs: input '{value.name}' is {spec['dtype']} in the spec but {want} "
            "in the model"
        )
    shape = value.shape
    if shape is None:
        return
    dims = list(shape)
    given = spec["shape"]
    if len(given) != len(dims):
        raise GraphtagError(
            f"input specs: input '{value.name}' has {len(given)} dimensions in the spec "
            f"{given} but {len(dims)} in the model {_shape_text(dims)}"
        )
    for axis, (have, want_dim) in enumerate(zip(given, dims)):
        if isinstance(want_dim, int) and have != want_dim:
            raise GraphtagError(
                f"input specs: input '{value.name}' has size {have} on axis {axis} in the "
                f"spec {given} but the model fixes it to {want_dim} {_shape_text(dims)}"
            )


def _default_shape(value: ir.Value) -> tuple[int, ...]:
    if value.shape is None:
        raise GraphtagError(
            f"input '{value.name}' has no known shape: describe it with --input-specs FILE.json"
        )
    return tuple(d if isinstance(d, int) else 1 for d in value.shape)


def _values(
    rng: np.random.Generator,
    dtype: ir.DataType,
    shape: tuple[int, ...],
    spec: Mapping[str, Any],
    name: str,
) -> np.ndarray:
    try:
        np_type = np.dtype(dtype.numpy())
    except (TypeError, ValueError):
        raise GraphtagError(
            f"input '{name}' has element type {dtype.name}, which cannot be fed from numpy"
        ) from None
    if "value" in spec:
        return np.full(shape, spec["value"]).astype(np_type)
    if np_type == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(np_type, np.integer):
        low = int(spec.get("low", 0))
        high = int(spec.get("high", low + 2))
        return rng.integers(low, high, shape).astype(np_type)
    if "low" in spec or "high" in spec:
        low = float(spec.get("low", 0.0))
        high = float(spec.get("high", low + 1.0))
        return rng.uniform(low, high, shape).astype(np_type)
    return rng.standard_normal(shape).astype(np_type)


def _shape_text(dims: list) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else str(d or "?") for d in dims) + "]"
