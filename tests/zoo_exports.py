"""Export each zoo model once per session, tagged and plain, for the zoo tests."""

from __future__ import annotations

import atexit
import dataclasses
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import torch
from torch import nn
from zoo import ZOO

import graphtag
from graphtag.exporter.example_inputs import ExampleInputs
from graphtag.exporter.exporters import wrap_kwargs
from graphtag.exporter.tagged_export import ExportResult, export

_WORKDIR = Path(tempfile.mkdtemp(prefix="graphtag-zoo-"))
atexit.register(shutil.rmtree, _WORKDIR, ignore_errors=True)
OPTIONS = {"verbose": False}


@dataclasses.dataclass
class ZooExport:
    name: str
    exporter: str
    module: nn.Module
    inputs: ExampleInputs
    result: ExportResult
    path: Path  # the tagged file, written by graphtag.export(f=...)

    @property
    def plain_path(self) -> Path:
        """torch.onnx.export with the same options, untouched (plain_export)."""
        return plain_export(self.name, self.exporter, self.module, self.inputs)


_PLAIN: dict[tuple[str, str], Path] = {}


def plain_export(name: str, exporter: str, module: nn.Module, inputs: ExampleInputs) -> Path:
    """The zoo model's plain torch.onnx.export with the tagged exports' options, once per
    session, made on first use (few tests read it) from ``module`` and ``inputs``: the
    caller's build of zoo model ``name`` (every build is the same model)."""
    key = (name, exporter)
    if key not in _PLAIN:
        path = _WORKDIR / f"{name}-{exporter}-plain.onnx"
        _plain_export(module, inputs, exporter, path)
        _PLAIN[key] = path
    return _PLAIN[key]


def _plain_export(module, inputs: ExampleInputs, exporter: str, path: Path) -> None:
    if exporter == "dynamo":
        torch.onnx.export(
            module, inputs.args, str(path), kwargs=inputs.kwargs, dynamo=True, **OPTIONS
        )
        return
    # The same wrapping graphtag's TorchScript path applies to keyword inputs.
    if inputs.kwargs:
        wrapped = wrap_kwargs(module, inputs.kwargs)
        tensors = tuple(inputs.kwargs[name] for name in wrapped.names)
        torch.onnx.export(
            wrapped, tensors, str(path), dynamo=False, input_names=wrapped.names, **OPTIONS
        )
    else:
        torch.onnx.export(module, inputs.args, str(path), dynamo=False, **OPTIONS)


@functools.cache
def zoo_export(name: str, exporter: str) -> ZooExport:
    module, inputs = ZOO[name].build()
    path = _WORKDIR / f"{name}-{exporter}.onnx"
    result = export(module, inputs.args, inputs.kwargs, path, exporter=exporter, **OPTIONS)
    return ZooExport(name, exporter, module, inputs, result, path)


@dataclasses.dataclass
class NoOptExport:
    """A zoo model's tagged dynamo export with torch's optimizer off, kept serialized."""

    name: str
    module: nn.Module
    inputs: ExampleInputs
    result: ExportResult  # shared: read only (copies come from data)
    data: bytes

    def model(self) -> ir.Model:
        """A fresh in-memory copy (weights included) to edit."""
        return ir.serde.deserialize_model(self.proto())

    def proto(self) -> onnx.ModelProto:
        return onnx.load_from_string(self.data)

    def feeds(self) -> dict[str, np.ndarray]:
        return ort_feeds([v.name for v in self.result.model.graph.inputs], self.inputs)


@functools.cache
def noopt_export(name: str) -> NoOptExport:
    """graphtag.export(optimize=False) of the dynamo zoo export's module, once per session."""
    case = zoo_export(name, "dynamo")
    module, inputs = case.module, case.inputs
    result = export(module, inputs.args, inputs.kwargs, optimize=False, **OPTIONS)
    data = ir.serde.serialize_model(result.model).SerializeToString()
    return NoOptExport(name, module, inputs, result, data)


def ort_feeds(names: list[str], inputs: ExampleInputs) -> dict[str, np.ndarray]:
    """ONNX Runtime feeds for graph inputs ``names``: keyword tensors by name, the rest
    (positional arguments, then keyword tensors) by position."""
    given = [t for t in (*inputs.args, *inputs.kwargs.values()) if isinstance(t, torch.Tensor)]
    by_name = {k: v for k, v in inputs.kwargs.items() if isinstance(v, torch.Tensor)}
    return {name: by_name.get(name, given[i]).numpy() for i, name in enumerate(names)}


def model_feeds(model: ir.Model, inputs: ExampleInputs) -> dict[str, np.ndarray]:
    """ONNX Runtime feeds for ``model``'s graph inputs (matched as by ort_feeds)."""
    return ort_feeds([v.name for v in model.graph.inputs], inputs)


def zoo_variant(label: str) -> tuple[ir.Model, ExampleInputs]:
    """A zoo model as ``name:exporter`` (its tagged export, loaded) or ``name:noopt``
    (graphtag.export of a fresh build with optimize=False), weights in memory; with its
    example inputs. Not cached: each caller keeps what it needs."""
    name, variant = label.split(":")
    if variant == "noopt":
        module, inputs = ZOO[name].build()
        model = graphtag.export(
            module, inputs.args, inputs.kwargs, optimize=False, verbose=False
        ).model
        return ir.from_proto(ir.to_proto(model)), inputs  # plain in-memory tensors
    case = zoo_export(name, variant)
    model = ir.external_data.load_to_model(graphtag.load(case.path))  # copies need no file
    return model, case.inputs


def zoo_cases() -> list[tuple[str, str]]:
    return [(name, exporter) for name, entry in ZOO.items() for exporter in entry.exporters]


def load(path: Path):
    return graphtag.load(path)
