"""``graphtag.export``: run torch.onnx.export unchanged, then tag every node.

The exporter is called with exactly the caller's options; graphtag then only adds
metadata (node ``pkg.graphtag.module``, model hierarchy/version/filter), so the graph
has the same topology as a plain export with the same options. The one exception: when
torch's optimizer is on (dynamo, ``optimize=True``), graphtag exports with it off, tags,
then runs the same optimization itself (graphtag.exporter.optimize_route).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx_ir as ir
import torch

from graphtag.analysis.attribution import tag_from_name_scopes, tag_from_torchscript_scope
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.core.hierarchy import Hierarchy
from graphtag.core.io import save
from graphtag.exporter.module_tree import FilterConfig, build_hierarchy
from graphtag.exporter.optimize_route import (
    count_exporter_tags,
    optimize_like_torch,
    unoptimized_options,
    wants_optimizer_route,
)
from graphtag.passes import DEFAULT_PIPELINE

# Keys dropped by strip_torch_metadata: large (about 1 KB per node) and not needed to tag.
_BULKY_TORCH_KEYS = (metadata.TORCH_STACK_TRACE, metadata.TORCH_FX_NODE)


# Passes graphtag export runs after tagging (pipeline syntax, see graphtag.pipeline).
DEFAULT_EXPORT_PIPELINE = DEFAULT_PIPELINE


@dataclasses.dataclass
class ExportStats:
    nodes: int
    tagged: int  # nodes with a tag after the pipeline
    from_exporter: int  # of which tagged from the exporter's own metadata
    modules: int
    executed_modules: int
    export_seconds: float
    tagging_seconds: float

    @property
    def tagged_share(self) -> float:
        return self.tagged / self.nodes if self.nodes else 1.0


@dataclasses.dataclass
class ExportResult:
    """The tagged model, the module hierarchy and export statistics."""

    model: ir.Model
    hierarchy: Hierarchy
    stats: ExportStats
    exporter: str  # "dynamo" or "torchscript"

    def save(self, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
        return save(self.model, path, external_data=external_data)


class KwargsWrapper(torch.nn.Module):
    """Gives a keyword-only model explicit tensor arguments (for the TorchScript exporter).

    transformers 5 models take their inputs as keywords, which the TorchScript exporter
    cannot pass; the wrapped model sits under the attribute ``model``, which graphtag
    strips from scopes so the wrapper never appears in tags. Mapping outputs (ModelOutput)
    become tuples because the tracer cannot return dicts.
    """

    attribute = "model"

    def __init__(
        self, model: torch.nn.Module, names: list[str], constants: dict | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.names = names
        self.constants = dict(constants or {})  # non-tensor keywords, fixed at export
        # A new Module starts in training mode; the exporter restores the wrapper's mode on
        # exit, recursively, which would otherwise leave the user's model in training mode.
        self.train(model.training)

    def forward(self, *tensors: torch.Tensor) -> Any:
        out = self.model(**dict(zip(self.names, tensors, strict=True)), **self.constants)
        if isinstance(out, Mapping):
            return tuple(v for v in out.values() if v is not None)
        return out


def wrap_kwargs(model: torch.nn.Module, kwargs: dict) -> KwargsWrapper:
    """Tensors become positional inputs; other keyword values stay fixed in the wrapper."""
    names = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
    constants = {k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)}
    return KwargsWrapper(model, names, constants)


def executed_tags(model: ir.Model) -> set[str]:
    """Modules that ran during export: every tag the exporter's scopes gave a node, and
    its ancestors (a module whose children ran ran too). No extra forward pass needed."""
    from graphtag.analysis.boundaries import ancestors_and_self

    seen = {metadata.node_tag(n) for n in metadata.iter_all_nodes(model)} - {None}
    return {ancestor for tag in seen for ancestor in ancestors_and_self(tag)}


def export(
    model: torch.nn.Module,
    args: tuple = (),
    kwargs: dict | None = None,
    f: str | os.PathLike | None = None,
    *,
    dynamo: bool = True,
    filter_config: FilterConfig | None = None,
    strip_torch_metadata: bool = False,
    pipeline: str | None = DEFAULT_EXPORT_PIPELINE,
    optimizer_route: bool = True,
    **torch_options: Any,
) -> ExportResult:
    """Export like ``torch.onnx.export`` and tag every node with its module.

    ``args``, ``kwargs``, ``dynamo`` and ``torch_options`` go to torch.onnx.export
    unchanged. ``pipeline`` (graphtag pipeline syntax, None for none) runs after tagging,
    by default tag propagation, multi-consumer and residual resolution. With
    ``optimizer_route`` (default) and torch's optimizer requested (dynamo,
    ``optimize=True``), graphtag exports unoptimized, tags, then runs torch's optimizer
    itself and reconciles fused nodes' tags (graphtag.exporter.optimize_route); the
    topology is that of a plain export. When ``f`` is given the tagged model is written
    there (atomically) the way torch would write it (``export_params``,
    ``keep_initializers_as_inputs`` and ``external_data`` honoured).
    """
    if not isinstance(model, torch.nn.Module):
        raise GraphtagError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(args, tuple):
        args = (args,)
    kwargs = dict(kwargs or {})
    config = filter_config or FilterConfig()
    hierarchy = build_hierarchy(model, config)

    start = time.perf_counter()
    route = optimizer_route and wants_optimizer_route(dynamo, torch_options)
    if route:
        onnx_model = _export_dynamo(model, args, kwargs, unoptimized_options(torch_options))
    elif dynamo:
        onnx_model = _export_dynamo(model, args, kwargs, torch_options)
    else:
        onnx_model = _export_torchscript(model, args, kwargs, torch_options)
    export_seconds = time.perf_counter() - start

    start = time.perf_counter()
    from_exporter, total = tag_nodes(
        onnx_model, hierarchy, exporter="dynamo" if dynamo else "torchscript"
    )
    ran = executed_tags(onnx_model)  # before the optimizer can drop nodes
    if route:
        onnx_model, optimized = optimize_like_torch(onnx_model, torch_options)
        export_seconds += optimized.seconds
        start += optimized.seconds  # tagging_seconds counts graphtag's own work only
        from_exporter, total = count_exporter_tags(onnx_model)
    for info in hierarchy:
        info.executed = info.tag in ran
    write_model_metadata(onnx_model, hierarchy)
    if strip_torch_metadata:
        strip_bulky_torch_metadata(onnx_model)
    if pipeline:
        from graphtag.pipeline import Pipeline

        Pipeline.from_text(pipeline)(onnx_model)
    tagged = sum(1 for n in metadata.iter_all_nodes(onnx_model) if metadata.node_tag(n))
    tagging_seconds = time.perf_counter() - start

    stats = ExportStats(
        nodes=total,
        tagged=tagged,
        from_exporter=from_exporter,
        modules=len(hierarchy),
        executed_modules=sum(1 for info in hierarchy if info.executed),
        export_seconds=export_seconds,
        tagging_seconds=tagging_seconds,
    )
    result = ExportResult(onnx_model, hierarchy, stats, "dynamo" if dynamo else "torchscript")
    if f is not None:
        _save_like_torch(onnx_model, f, torch_options)
    return result


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _root_cause(exc: BaseException) -> str:
    """``Type: first line`` of the innermost cause: torch wraps the real error in its own."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = _ANSI.sub("", str(exc)).strip()
    line = text.splitlines()[0] if text else ""
    if len(line) > 300:
        line = line[:297] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _export_dynamo(model, args, kwargs, torch_options) -> ir.Model:
    try:
        program = torch.onnx.export(model, args, None, kwargs=kwargs, dynamo=True, **torch_options)
    except Exception as exc:
        raise GraphtagError(
            f"the dynamo exporter failed ({_root_cause(exc)}); "
            "the TorchScript exporter may work: --exporter torchscript (Python: dynamo=False)"
        ) from exc
    return program.model


def _export_torchscript(model, args, kwargs, torch_options) -> ir.Model:
    exported: torch.nn.Module = model
    call_args = args
    if kwargs:
        # The TorchScript exporter cannot pass keyword inputs: wrap them positionally.
        if args:
            raise GraphtagError("the TorchScript path takes either args or kwargs, not both")
        exported = wrap_kwargs(model, kwargs)
        call_args = tuple(kwargs[name] for name in exported.names)
        torch_options = {"input_names": exported.names, **torch_options}
    with tempfile.TemporaryDirectory(prefix="graphtag-ts-") as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            torch.onnx.export(exported, call_args, str(path), dynamo=False, **torch_options)
        except Exception as exc:
            raise GraphtagError(f"the TorchScript exporter failed ({_root_cause(exc)})") from exc
        onnx_model = ir.load(path)
        # Read every tensor now: the temporary folder (and any external data) goes away.
        for value in onnx_model.graph.initializers.values():
            if isinstance(value.const_value, ir.ExternalTensor):
                value.const_value = ir.tensor(value.const_value.numpy(), name=value.name)
    if exported is not model:
        # Parameter names carry the wrapper's attribute ("model."), tags never do.
        onnx_model.metadata_props[metadata.PARAMETER_PREFIX] = KwargsWrapper.attribute + "."
    return onnx_model


def tag_nodes(model: ir.Model, hierarchy: Hierarchy, *, exporter: str) -> tuple[int, int]:
    """Write ``pkg.graphtag.module`` on every attributable node; returns (tagged, total)."""
    tagged = total = 0
    prefix = model.metadata_props.get(metadata.PARAMETER_PREFIX, "").rstrip(".")
    for node in metadata.iter_all_nodes(model):
        total += 1
        if exporter == "dynamo":
            scopes = node.metadata_props.get(metadata.TORCH_NAME_SCOPES)
            tag = tag_from_name_scopes(scopes, hierarchy) if scopes else None
        else:
            tag = tag_from_torchscript_scope(node.name or "", hierarchy, prefix)
        if tag is not None:
            node.metadata_props[metadata.MODULE] = tag
            tagged += 1
    return tagged, total


def write_model_metadata(model: ir.Model, hierarchy: Hierarchy) -> None:
    from graphtag import __version__

    hierarchy.attach(model)
    model.metadata_props[metadata.VERSION] = __version__
    model.metadata_props[metadata.FILTER] = _json(hierarchy.filter_config)


def _json(data: Any) -> str:
    import json

    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def strip_bulky_torch_metadata(model: ir.Model) -> None:
    for node in metadata.iter_all_nodes(model):
        for key in _BULKY_TORCH_KEYS:
            node.metadata_props.pop(key, None)


def _save_like_torch(model: ir.Model, f, torch_options: dict) -> None:
    """Write as torch.onnx.export would (initializer options honoured), but atomically."""
    export_params = torch_options.get("export_params", True)
    as_inputs = torch_options.get("keep_initializers_as_inputs", False)
    external = torch_options.get("external_data", True)
    initializers = dict(model.graph.initializers)
    inputs = list(model.graph.inputs)
    try:
        if not export_params:
            model.graph.initializers.clear()
        if as_inputs:
            model.graph.inputs.extend(initializers.values())
        save(model, f, external_data=bool(external))
    finally:
        with contextlib.suppress(Exception):
            model.graph.inputs.clear()
            model.graph.inputs.extend(inputs)
            model.graph.initializers.clear()
            for value in initializers.values():
                model.graph.register_initializer(value)
