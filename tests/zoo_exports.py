"""Export each zoo model once per session, tagged and plain, for the zoo tests."""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from pathlib import Path

import torch
from torch import nn
from zoo import ZOO

import graphtag
from graphtag.exporter.example_inputs import ExampleInputs
from graphtag.exporter.exporters import wrap_kwargs
from graphtag.exporter.tagged_export import ExportResult, export

_WORKDIR = Path(tempfile.mkdtemp(prefix="graphtag-zoo-"))
OPTIONS = {"verbose": False}


@dataclasses.dataclass
class ZooExport:
    name: str
    exporter: str
    module: nn.Module
    inputs: ExampleInputs
    result: ExportResult
    path: Path  # the tagged file, written by graphtag.export(f=...)
    plain_path: Path  # torch.onnx.export with the same options, untouched


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
    plain = _WORKDIR / f"{name}-{exporter}-plain.onnx"
    result = export(module, inputs.args, inputs.kwargs, path, exporter=exporter, **OPTIONS)
    _plain_export(module, inputs, exporter, plain)
    return ZooExport(name, exporter, module, inputs, result, path, plain)


def zoo_cases() -> list[tuple[str, str]]:
    return [(name, exporter) for name, entry in ZOO.items() for exporter in entry.exporters]


def load(path: Path):
    return graphtag.load(path)
