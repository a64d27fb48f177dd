"""Parameters TorchScript's constant folding hid inside other constants, found by value.

TorchScript's exporter folds an operation whose inputs are all constants into one new
initializer and drops the parameter: a learned position embedding read at fixed
positions (``weight[arange(n)]``) becomes ``onnx::Add_<n>`` holding those rows, read by
the parent module's ``Add``. The file keeps no trace of where the value came from, so
``validate`` would call the parameter missing. dynamo's route records this itself
(onnxscript's ``folded_from``); for TorchScript the export edge, which still holds the
PyTorch values, recovers it.

Only parameters ``validate``'s parameter-coverage rule cannot explain otherwise are
looked at (usually none), and for each only the derived floating-point initializers
that nodes of its own module, an ancestor or a descendant read. A candidate is
recorded as folded from the parameter (``pkg.graphtag.origin``) when every element of
it is an element of the parameter: a selection, reshaping or transposition of it. A
value computed with anything else (scaled, summed with another tensor) is not claimed,
so such a parameter stays missing and ``validate`` says so.
"""

from __future__ import annotations

__all__ = ["record_folded_parameters"]

import logging

import numpy as np
import onnx_ir as ir
import torch

from graphtag.analysis.parameters import recorded_parameters
from graphtag.checks.validation import parameter_kinds
from graphtag.core import metadata
from graphtag.core.graphs import iter_initializers
from graphtag.core.hierarchy import Hierarchy, is_ancestor_or_self

logger = logging.getLogger(__name__)


def record_folded_parameters(
    onnx_model: ir.Model, module: torch.nn.Module, hierarchy: Hierarchy
) -> list[str]:
    """Record on derived initializers the missing parameters they were folded from.

    Returns the parameter names recorded (each on one or more initializers)."""
    kinds = parameter_kinds(onnx_model, hierarchy)
    missing = [name for name, kind in kinds.items() if kind == "missing"]
    if not missing:
        return []
    owners = recorded_parameters(hierarchy)
    tensors = dict(module.named_parameters(remove_duplicate=False))
    prefix = metadata.parameter_prefix(onnx_model)
    candidates = [v for v in iter_initializers(onnx_model) if _derived(v, owners, prefix)]
    recorded = []
    for name in missing:
        tensor = tensors.get(name)
        if tensor is None or not tensor.dtype.is_floating_point:
            continue
        owner = owners[name]
        try:
            elements = np.unique(tensor.detach().cpu().numpy())
        except TypeError:  # a dtype numpy lacks (bfloat16): left for validate to report
            logger.info("parameter %s: %s values not compared", name, tensor.dtype)
            continue
        found = False
        for value in candidates:
            if not _related(value, owner) or not _made_of(value, elements):
                continue
            names = set(metadata.origin(value) or ()) | {name}
            metadata.set_origin(value, sorted(names))
            found = True
        if found:
            recorded.append(name)
        else:
            logger.info("parameter %s: no initializer holds only its values", name)
    return recorded


def _derived(value: ir.Value, owners: dict[str, str], prefix: str) -> bool:
    """A floating-point initializer with a value, named after no parameter (with or
    without a wrapper's ``prefix``)."""
    tensor = value.const_value
    return (
        tensor is not None
        and tensor.dtype.is_floating_point()
        and metadata.unprefixed(value.name or "", prefix) not in owners
        and tensor.size > 0
    )


def _related(value: ir.Value, owner: str) -> bool:
    """Some node reading ``value`` belongs to ``owner``, an ancestor or a descendant."""
    for use in value.uses():
        tag = metadata.node_tag(use.node)
        if tag is not None and (is_ancestor_or_self(tag, owner) or is_ancestor_or_self(owner, tag)):
            return True
    return False


def _made_of(value: ir.Value, elements: np.ndarray) -> bool:
    array = value.const_value.numpy()  # type: ignore[union-attr]
    if array.dtype != elements.dtype:
        return False
    return bool(np.isin(np.unique(array), elements, assume_unique=True).all())
