"""Dynamic input axes: one spelling for every export route.

torch's two exporters take dynamic axes differently: dynamo reads ``dynamic_shapes``
(keyed by the forward's parameter names, or a sequence in input order), TorchScript
reads ``dynamic_axes`` keyed by ONNX input names, which default to names like
``input.1``. With ``auto`` the same options reach both, so a user's ``dynamic_shapes``
would stop the TorchScript rung with "only supports dynamic shapes through
dynamic_axes". :func:`torchscript_options` translates the plain form (an axis number to
a name or a ``torch.export.Dim``, per input) for that rung; other forms go to torch
unchanged. :func:`parse_dynamic` reads the CLI's ``INPUT:AXIS[=NAME]`` and
:func:`dynamo_shapes` puts it in torch.export's structure (one key per forward parameter,
a tuple for ``*args``, a mapping for ``**kwargs``). Inputs are named as the forward
names them; positional inputs past a ``*args`` are ``arg<i>`` (their position).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from graphtag.core.errors import GraphtagError

__all__ = ["dynamo_shapes", "named_inputs", "parse_dynamic", "torchscript_options"]

_SPEC = re.compile(r"^(?P<input>[^:=\s]+):(?P<axis>-?\d+)(?:=(?P<name>[A-Za-z_][\w.]*))?$")


@dataclasses.dataclass(frozen=True)
class _Slot:
    """One input as the forward binds it."""

    name: str  # the parameter's name; arg<i> for the i-th positional past a *args
    key: str  # the forward parameter it binds to: dynamo's top-level key
    index: int | None  # its position within *args; None elsewhere
    keyword: bool  # bound through **kwargs (dynamo keys it under the **kwargs name)
    value: object


def _slots(module: torch.nn.Module, args: Sequence, kwargs: Mapping) -> list[_Slot]:
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):  # a builtin or C forward: no signature to read
        params = []
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    star = next((p.name for p in params if p.kind == p.VAR_POSITIONAL), None)
    named = {p.name for p in params if p.kind != p.VAR_KEYWORD}
    double_star = next((p.name for p in params if p.kind == p.VAR_KEYWORD), None)
    slots = []
    for i, value in enumerate(args):
        if i < len(positional):
            slots.append(_Slot(positional[i], positional[i], None, False, value))
        else:
            rest = i - len(positional)
            slots.append(_Slot(f"arg{i}", star or f"arg{i}", rest if star else None, False, value))
    for key, value in kwargs.items():
        through = double_star is not None and key not in named
        slots.append(_Slot(key, double_star if through else key, None, through, value))
    return slots


def named_inputs(
    module: torch.nn.Module, args: Sequence, kwargs: Mapping
) -> dict[str, torch.Tensor]:
    """The tensor inputs by name, in the exporter's order: the forward's parameter names
    for positional arguments (``arg<i>`` past a ``*args``), then the keyword arguments."""
    return {
        s.name: s.value for s in _slots(module, args, kwargs) if isinstance(s.value, torch.Tensor)
    }


def dynamo_shapes(
    per_input: Mapping[str, Any], module: torch.nn.Module, args: Sequence, kwargs: Mapping
) -> dict[str, Any]:
    """``per_input`` (input name -> ``{axis: name}``, as :func:`parse_dynamic` gives) in
    the structure torch.export wants: one key per forward parameter, a tuple for
    ``*args``, a mapping for ``**kwargs``."""
    shapes: dict[str, Any] = {}
    for slot in _slots(module, args, kwargs):
        spec = per_input.get(slot.name)
        if slot.index is not None:
            shapes[slot.key] = (*shapes.get(slot.key, ()), spec)
        elif slot.keyword:
            shapes.setdefault(slot.key, {})[slot.name] = spec
        else:
            shapes[slot.key] = spec
    return shapes


def _per_input(shapes: object, slots: list[_Slot]) -> dict[str, Any] | None:
    """Input name -> ``{axis: dim}`` read back from torch.export's structure (or keyed
    by input names directly); None for a form this does not know."""
    keys = list(dict.fromkeys(s.key for s in slots))
    if isinstance(shapes, (list, tuple)):
        if len(shapes) != len(keys):
            return None
        shapes = dict(zip(keys, shapes))
    if not isinstance(shapes, Mapping) or not set(shapes) <= set(keys) | {s.name for s in slots}:
        return None
    found: dict[str, Any] = {}
    for slot in slots:
        if slot.name in shapes and (slot.index is not None or slot.keyword):
            spec = shapes[slot.name]  # keyed by the input's own name (arg0, a **kwargs key)
        else:
            spec = shapes.get(slot.key)
            if slot.index is not None:
                spec = spec[slot.index] if isinstance(spec, (list, tuple)) else None
            elif slot.keyword:
                spec = spec.get(slot.name) if isinstance(spec, Mapping) else None
        if spec is not None and not isinstance(spec, Mapping):
            return None
        if spec and isinstance(slot.value, torch.Tensor):
            found[slot.name] = spec
    return found


def parse_dynamic(
    specs: Sequence[str], inputs: Mapping[str, torch.Tensor] | None
) -> dict[str, dict[int, str]]:
    """Input name -> ``{axis: NAME}`` from ``INPUT:AXIS[=NAME]`` texts (NAME defaults to
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


def torchscript_options(
    options: dict[str, Any], module: torch.nn.Module, args: Sequence, kwargs: Mapping
) -> dict[str, Any]:
    """``options`` with a ``dynamic_shapes`` of the ``{axis: name or Dim}`` per input
    form written as TorchScript's ``input_names`` and ``dynamic_axes``. Any other form
    is returned unchanged (torch's own error then names it)."""
    shapes = options.get("dynamic_shapes")
    if shapes is None or "dynamic_axes" in options:
        return options
    slots = _slots(module, args, kwargs)
    per_input = _per_input(shapes, slots)
    if per_input is None:
        return options
    names = [s.name for s in slots if isinstance(s.value, torch.Tensor)]
    onnx_names = list(options.get("input_names") or names)
    if len(onnx_names) < len(names):
        return options
    renamed = dict(zip(names, onnx_names))
    axes = {
        renamed[name]: {int(axis): _axis_name(dim, name, int(axis)) for axis, dim in spec.items()}
        for name, spec in per_input.items()
    }
    rest = {k: v for k, v in options.items() if k != "dynamic_shapes"}
    return {**rest, "input_names": onnx_names, "dynamic_axes": axes}


def _axis_name(dim: object, name: str, axis: int) -> str:
    if isinstance(dim, str):
        return dim
    # torch.export.Dim("batch") carries its name; Dim.AUTO/DYNAMIC do not.
    label = getattr(dim, "__name__", None)
    return label if isinstance(label, str) and label.isidentifier() else f"{name}_{axis}"
