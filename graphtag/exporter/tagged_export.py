"""``graphtag.export``: an exporter produces the raw model, ordinary passes do the rest.

1. An :class:`~graphtag.exporter.exporters.Exporter` runs torch's exporter with the
   caller's options (``auto`` by default: dynamo, dynamo with the model's traceable
   implementation switches, TorchScript) and returns the raw, untagged model with its
   route in ``pkg.graphtag.export_route``.
2. The export edge attaches the module hierarchy (built from the nn.Module by
   graphtag.exporter.module_tree), graphtag's version and the filter to the model.
3. A pipeline of ordinary, torch-free passes does everything else (see
   :func:`export_steps`): ``scope-tagging``; ``torch-optimizer`` when torch's optimizer
   was requested on a dynamo route (graphtag exports with ``optimize=False`` for exact
   metadata, then runs the same optimization and reconciles the tags);
   ``strip-torch-metadata`` on request; the tag pipeline (tag-propagation,
   multi-consumer, residual-resolution); ``function-outlining`` on request.
4. When ``auto`` ended on TorchScript (an earlier route failed), the model's outputs are
   checked against PyTorch's on the example inputs (:func:`check_fallback_outputs`):
   torch's TorchScript exporter can be wrong on the very inputs it traced.

graphtag only adds metadata, so the graph has the same topology as a plain export with
the same options and the same route.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx_ir as ir
import torch

from graphtag.analysis.liveness import dead_node_names
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError, first_line
from graphtag.core.graphs import iter_all_nodes
from graphtag.core.hierarchy import Hierarchy
from graphtag.core.io import save
from graphtag.exporter.exporters import (
    Attempt,
    Exporter,
    KwargsWrapper,
    resolve_exporter,
    wrap_kwargs,
)
from graphtag.exporter.folded_parameters import record_folded_parameters
from graphtag.exporter.module_tree import FilterConfig, build_hierarchy
from graphtag.passes import DEFAULT_PIPELINE
from graphtag.pipeline import PipelineReport

__all__ = [
    "DEFAULT_EXPORT_PIPELINE",
    "ExportResult",
    "ExportStats",
    "FallbackOutputsWarning",
    "KwargsWrapper",
    "OutputCheck",
    "check_fallback_outputs",
    "export",
    "export_steps",
    "wrap_kwargs",
]

logger = logging.getLogger(__name__)

# Passes graphtag export runs after tagging (pipeline syntax, see graphtag.pipeline).
DEFAULT_EXPORT_PIPELINE = DEFAULT_PIPELINE
# Pipeline names of the steps that belong to the exporter's side (timed as export).
OPTIMIZER_PASS = "torch-optimizer"


@dataclasses.dataclass
class ExportStats:
    nodes: int
    tagged: int  # nodes with a tag after the pipeline
    from_exporter: int  # of which tagged from the exporter's own metadata
    modules: int
    executed_modules: int
    export_seconds: float  # torch's exporter, plus its optimizer when graphtag ran it
    tagging_seconds: float  # graphtag's own passes

    @property
    def tagged_share(self) -> float:
        return self.tagged / self.nodes if self.nodes else 1.0


@dataclasses.dataclass(frozen=True)
class OutputCheck:
    """A TorchScript fallback's outputs checked against PyTorch's on the example inputs."""

    problem: str | None = None  # the first output that differs; None when they match
    error: str | None = None  # why they could not be compared

    @property
    def passed(self) -> bool:
        return self.problem is None and self.error is None

    def warning(self) -> str | None:
        """The line to warn with, None when the outputs match."""
        if self.problem:
            return (
                "the TorchScript export does not reproduce PyTorch on the example inputs: "
                f"{self.problem}; graphtag verify names the modules"
            )
        if self.error:
            return f"the outputs could not be checked ({self.error})"
        return None


class FallbackOutputsWarning(UserWarning):
    """The ``auto`` ladder's TorchScript export does not reproduce PyTorch (or could not
    be checked): the file is written, ``graphtag verify`` names the modules."""


@dataclasses.dataclass
class ExportResult:
    """The tagged model, the module hierarchy, export statistics and how it was made."""

    model: ir.Model
    hierarchy: Hierarchy
    stats: ExportStats
    exporter: str  # torch's exporter that made the graph: "dynamo" or "torchscript"
    route: str = ""  # e.g. "dynamo", "dynamo-traceable(attn_implementation=eager)"
    switches: dict[str, str] = dataclasses.field(default_factory=dict)  # set during export
    attempts: list[Attempt] = dataclasses.field(default_factory=list)  # routes that failed
    report: PipelineReport = dataclasses.field(default_factory=PipelineReport)
    output_check: OutputCheck | None = None  # a TorchScript fallback's outputs, when checked

    @property
    def fell_back(self) -> bool:
        """TorchScript made the graph after an earlier route failed (``auto``'s last rung):
        not the caller's choice, and the route that can be silently wrong."""
        return self.exporter == "torchscript" and bool(self.attempts)

    def save(self, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
        return save(self.model, path, external_data=external_data)


def torch_framework_api() -> str:
    """The onnxscript ``_framework_apis`` module this torch calls (``torch_2_11``)."""
    try:
        from torch.onnx._internal import _lazy_import

        name = _lazy_import.onnxscript_apis._name  # a lazy module: reading _name imports nothing
    except (ImportError, AttributeError):  # pragma: no cover - torch moved it
        return "torch_2_11"
    return str(name).rsplit(".", 1)[-1]


def export_steps(
    *,
    optimize: bool,
    strip_torch_metadata: bool = False,
    pipeline: str | None = DEFAULT_EXPORT_PIPELINE,
    outline: str | None = None,
    namespace: bool = False,
    framework_api: str = "torch_2_11",
) -> list[tuple[str, ir.passes.PassBase]]:
    """The passes that turn a raw export (hierarchy attached) into graphtag's result."""
    from graphtag.pipeline import parse_pipeline, registry

    reg = registry()
    names: list[tuple[str, dict]] = [("scope-tagging", {})]
    if optimize:
        names.append((OPTIMIZER_PASS, {"framework_api": framework_api}))
    if strip_torch_metadata:
        names.append(("strip-torch-metadata", {}))
    if pipeline:
        names.extend((step.name, step.options) for step in parse_pipeline(pipeline))
    if outline:
        names.append(("function-outlining", {"pattern": outline}))
    if namespace:
        names.append(("namespace", {}))
    return [(name, reg.get(name).create(options)) for name, options in names]


def export(
    model: torch.nn.Module,
    args: tuple = (),
    kwargs: Mapping[str, Any] | str | os.PathLike | None = None,
    f: str | os.PathLike | None = None,
    *,
    exporter: str | Exporter | None = None,
    dynamo: bool | None = None,
    filter_config: FilterConfig | None = None,
    strip_torch_metadata: bool = False,
    pipeline: str | None = DEFAULT_EXPORT_PIPELINE,
    outline: str | None = None,
    namespace: bool = False,
    optimizer_route: bool = True,
    check_fallback: bool = True,
    **torch_options: Any,
) -> ExportResult:
    """Export like ``torch.onnx.export`` and tag every node with its module.

    The third positional argument may be the file, as in ``torch.onnx.export(model,
    args, f)``: a path there is taken for ``f``. ``args`` ending with a dict follows
    torch's convention (the dict holds the keyword arguments) when ``kwargs`` is None;
    with ``kwargs`` given, even ``{}``, that dict is the last positional argument.

    ``exporter``: ``"auto"`` (the default: dynamo, then dynamo with the model's
    implementation switches set to traceable variants, then TorchScript; the first that
    works), ``"dynamo"``, ``"torchscript"`` or an
    :class:`~graphtag.exporter.exporters.Exporter`. ``dynamo=True/False`` is torch's
    spelling of the strict dynamo/TorchScript route. ``args``, ``kwargs`` and
    ``torch_options`` go to torch.onnx.export unchanged. ``pipeline`` (graphtag pipeline
    syntax, None for none) runs after tagging, by default tag propagation, multi-consumer
    and residual resolution; ``outline`` (a tag pattern) then turns matching modules
    into local functions; ``namespace`` writes each tag into the node's ``namespace``
    metadata (Model Explorer's layers). With ``optimizer_route`` (default) and torch's optimizer
    requested (``optimize=True``, a dynamo route), graphtag exports unoptimized, tags,
    then runs torch's optimization as a pass and reconciles fused nodes' tags; the
    topology is that of a plain export. When ``f`` is given the tagged model is written
    there (atomically) the way torch would write it (``export_params``,
    ``keep_initializers_as_inputs`` and ``external_data`` honoured). With
    ``check_fallback`` (default), a model the ladder fell back to TorchScript for has its
    outputs checked against PyTorch's on ``args``/``kwargs`` (two forward passes and an
    ONNX Runtime session; :attr:`ExportResult.output_check`), and a mismatch is a
    :class:`FallbackOutputsWarning`. Raises
    :class:`~graphtag.exporter.exporters.ExportFailed` naming every route's failure.
    """
    from graphtag.pipeline import Pipeline

    if not isinstance(model, torch.nn.Module):
        raise GraphtagError(f"expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(kwargs, (str, os.PathLike)) and f is None:
        # torch.onnx.export(model, args, f): its third positional parameter is the file.
        kwargs, f = None, kwargs
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise GraphtagError(
            f"kwargs must be a dict of keyword arguments for forward, got {type(kwargs).__name__}"
        )
    if not isinstance(args, tuple):
        args = (args,)
    if kwargs is not None and not kwargs and args and isinstance(args[-1], dict):
        # torch reads a trailing dict in args as the keyword arguments unless an empty
        # dict follows it; kwargs given (even empty) means args are meant as they are.
        args = (*args, {})
    kwargs = dict(kwargs or {})
    chosen = resolve_exporter(exporter, dynamo)
    hierarchy = build_hierarchy(model, filter_config or FilterConfig())
    route = optimizer_route and bool(torch_options.get("optimize", True))
    options = {**torch_options, "optimize": False} if route else torch_options

    start = time.perf_counter()
    exported = chosen.run(model, args, kwargs, options)
    export_seconds = time.perf_counter() - start

    start = time.perf_counter()
    onnx_model = exported.model
    write_model_metadata(onnx_model, hierarchy)
    optimize = route and exported.dynamo
    if not optimize:  # else the torch-optimizer step records what torch's optimizer left
        # Dead nodes torch's exporter left stay (same topology as torch); validate knows them.
        metadata.set_exporter_dead_nodes(onnx_model, dead_node_names(onnx_model))
    steps = export_steps(
        optimize=optimize,
        strip_torch_metadata=strip_torch_metadata,
        pipeline=pipeline,
        outline=outline,
        namespace=namespace,
        framework_api=torch_framework_api(),
    )
    runner = Pipeline(steps)
    onnx_model = runner(onnx_model).model
    if not exported.dynamo:  # dynamo's route records its folding itself (folded_from)
        record_folded_parameters(onnx_model, model, hierarchy)
    optimizer_seconds = sum(r.seconds for r in runner.report.records if r.name == OPTIMIZER_PASS)
    stored = Hierarchy.from_model(onnx_model) or hierarchy
    stats = _stats(onnx_model, stored)
    stats.export_seconds = export_seconds + optimizer_seconds
    stats.tagging_seconds = time.perf_counter() - start - optimizer_seconds
    result = ExportResult(
        onnx_model,
        stored,
        stats,
        "dynamo" if exported.dynamo else "torchscript",
        exported.route,
        dict(exported.switches),
        list(exported.attempts),
        runner.report,
    )
    if f is not None:
        _save_like_torch(onnx_model, f, torch_options)
    if check_fallback and result.fell_back:
        result.output_check = _check_written(result, f, torch_options, model, args, kwargs)
    return result


def check_fallback_outputs(path: str | os.PathLike, model: torch.nn.Module, inputs) -> OutputCheck:
    """The saved model at ``path`` against PyTorch on ``inputs`` (``ExampleInputs``, an
    args tuple or a kwargs dict): ``graphtag.exporter.verify.check_outputs``, with a
    failure to compare reported in the result rather than raised (the export stands)."""
    from graphtag.exporter.verify import check_outputs

    try:
        return OutputCheck(problem=check_outputs(path, model, inputs))
    except Exception as exc:
        return OutputCheck(error=first_line(exc, typed=True))


def _check_written(result: ExportResult, f, torch_options: dict, model, args, kwargs):
    from graphtag.exporter.example_inputs import ExampleInputs

    if not kwargs and args and isinstance(args[-1], dict):
        args, kwargs = args[:-1], dict(args[-1])  # torch's convention, as normalized above
    logger.info("checking the TorchScript fallback's outputs against PyTorch")
    # The written file serves unless its weights were made graph inputs (the check feeds
    # the example inputs only). Without export_params the model itself has no weights:
    # the check then says it could not feed them.
    as_inputs = torch_options.get("keep_initializers_as_inputs", False)
    with tempfile.TemporaryDirectory(prefix="graphtag-fallback-check-") as tmp:
        path = f if f is not None and not as_inputs else result.save(Path(tmp) / "model.onnx")
        check = check_fallback_outputs(path, model, ExampleInputs(args, kwargs))
    line = check.warning()
    if line is not None:
        warnings.warn(line, FallbackOutputsWarning, stacklevel=3)
    return check


def _stats(model: ir.Model, hierarchy: Hierarchy) -> ExportStats:
    nodes = tagged = from_exporter = 0
    for node in iter_all_nodes(model):
        nodes += 1
        if metadata.node_tag(node):
            tagged += 1
            source = metadata.tag_source(node)
            # Nodes the optimizer made count when their tag came from their sources.
            from_exporter += source is None or not source.startswith("inferred:")
    return ExportStats(
        nodes=nodes,
        tagged=tagged,
        from_exporter=from_exporter,
        modules=len(hierarchy),
        executed_modules=sum(1 for info in hierarchy if info.executed),
        export_seconds=0.0,
        tagging_seconds=0.0,
    )


def write_model_metadata(model: ir.Model, hierarchy: Hierarchy) -> None:
    from graphtag import __version__

    hierarchy.attach(model)
    model.metadata_props[metadata.VERSION] = __version__
    model.metadata_props[metadata.FILTER] = _json(hierarchy.filter_config)


def _json(data: Any) -> str:
    import json

    return json.dumps(data, sort_keys=True, separators=(",", ":"))


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
