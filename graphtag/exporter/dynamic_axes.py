"""Dynamic input axes: one spelling for every export route.

torch's two exporters take dynamic axes differently: dynamo reads ``dynamic_shapes``
(keyed by the forward's parameter names, or a sequence in input order), TorchScript
reads ``dynamic_axes`` keyed by ONNX input names, which default to names like
``input.1``. With ``auto`` the same options reach both, so a user's ``dynamic_shapes``
would stop the TorchScript rung with "only supports dynamic shapes through
dynamic_axes". :func:`torchscript_options` translates the plain form (an axis number to
a name or a ``torch.export.Dim``, per input) for that rung; other forms go to torch
unchanged. :func:`parse_dynamic` reads the CLI's ``INPUT:AXIS[=NAME]``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from graphtag.core.errors import GraphtagError

__all__ = ["named_inputs", "parse_dynamic", "torchscript_options"]

_SPEC = re.compile(r"^(?P<input>[^:=\s]+):(?P<axis>-?\d+)(?:=(?P<name>[A-Za-z_][\w.]*))?$")


def named_inputs(
    module: torch.nn.Module, args: Sequence, kwargs: Mapping
) -> dict[str, torch.Tensor]:
    """The tensor inputs by name, in the exporter's order: the forward's parameter names
    for positional arguments (``arg<i>`` past a ``*args``), then the keyword arguments."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):  # a builtin or C forward: no signature to read
        params = []
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    named = {
        positional[i] if i < len(positional) else f"arg{i}": value
        for i, value in enumerate(args)
        if isinstance(value, torch.Tensor)
    }
    named.update((k, v) for k, v in kwargs.items() if isinstance(v, torch.Tensor))
    return named


def parse_dynamic(
    specs: Sequence[str], inputs: Mapping[str, torch.Tensor] | None
) -> dict[str, dict[int, str]]:
    """``dynamic_shapes`` from ``INPUT:AXIS[=NAME]`` texts (NAME defaults to
    ``INPUT_AXIS``; a negative AXIS counts from the end), checked against the example
    ``inputs``: an unknown input or an axis the input does not have is a GraphtagError.
    With ``inputs`` None only the syntax is checked (before a model is loaded)."""
    shapes: dict[str, dict[int, str]] = {}
    for text in specs:
        match = _SPEC.match(text.strip())
        if match is None:
            raise GraphtagError(
                f"dynamic axis {text!r}: expected INPUT:AXIS or INPUT:AXIS=NAME, "
                "e.g. input_ids:0=batch"
            )
        name, axis = match["input"], int(match["axis"])
        if inputs is None:
            continue
        if name not in inputs:
            known = ", ".join(inputs) or "none"
            raise GraphtagError(f"dynamic axis {text!r}: no input named {name} (inputs: {known})")
        rank = inputs[name].dim()
        if not -rank <= axis < rank:
            raise GraphtagError(
                f"dynamic axis {text!r}: {name} has {rank} axes "
                f"(shape {list(inputs[name].shape)}), no axis {axis}"
            )
        axis %= rank
        shapes.setdefault(name, {})[axis] = match["name"] or f"{name}_{axis}"
    return shapes


def torchscript_options(options: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """``options`` with a plain ``dynamic_shapes`` written as TorchScript's ``input_names``
    and ``dynamic_axes``; ``names`` are the inputs' names in the dynamo spelling (see
    :func:`named_inputs`). Any other form is returned unchanged."""
    shapes = options.get("dynamic_shapes")
    if shapes is None or "dynamic_axes" in options:
        return options
    if isinstance(shapes, Mapping):
        per_input = dict(shapes)
    elif isinstance(shapes, (list, tuple)) and len(shapes) == len(names):
        per_input = dict(zip(names, shapes))
    else:
        return options
    if not set(per_input) <= set(names) or not all(
        axes is None or isinstance(axes, Mapping) for axes in per_input.values()
    ):
        return options
    onnx_names = list(options.get("input_names") or names)
    if len(onnx_names) < len(names):
        return options
    renamed = dict(zip(names, onnx_names))
    axes = {
        renamed[name]: {int(axis): _axis_name(dim, name, int(axis)) for axis, dim in spec.items()}
        for name, spec in per_input.items()
        if spec
    }
    rest = {k: v for k, v in options.items() if k != "dynamic_shapes"}
    return {**rest, "input_names": onnx_names, "dynamic_axes": axes}


def _axis_name(dim: object, name: str, axis: int) -> str:
    if isinstance(dim, str):
        return dim
    # torch.export.Dim("batch") carries its name; Dim.AUTO/DYNAMIC do not.
    label = getattr(dim, "__name__", None)
    return label if isinstance(label, str) and label.isidentifier() else f"{name}_{axis}"
