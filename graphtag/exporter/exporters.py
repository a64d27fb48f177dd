"""Exporters: run one of torch's ONNX exporters and return the raw, untagged model.

An :class:`Exporter` has a route name and :meth:`Exporter.run`, which calls torch and
returns an :class:`Exported` (the ``onnx_ir.Model`` plus what happened on the way);
:meth:`Exporter.export` returns the model alone. Tagging and everything after it are
ordinary passes (graphtag.exporter.tagged_export builds the pipeline).

* :class:`DynamoExporter`: ``torch.onnx.export(..., dynamo=True)``; with
  ``traceable=True`` it first sets the model's implementation switches to their
  traceable values (graphtag.exporter.switches) and restores them afterwards.
* :class:`TorchScriptExporter`: ``dynamo=False``; keyword inputs are passed through
  :class:`KwargsWrapper`, which never shows in tags; ops torch cannot translate get
  graphtag's translations (graphtag.exporter.lowerings) during the export.
* :class:`FallbackExporter` (``auto``): tries its rungs in order (by default dynamo as
  given, dynamo with traceable switches, TorchScript), stops at the first that works and
  keeps one line per rung that failed or was skipped before it. When all fail it raises
  one :class:`ExportFailed` naming every rung's cause.

Errors are :class:`ExportFailed` (a GraphtagError) with ``attempts``, one per route tried.
"""

from __future__ import annotations

import abc
import dataclasses
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import onnx_ir as ir
import torch

from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.exporter import torch_registry
from graphtag.exporter.dynamic_axes import torchscript_options
from graphtag.exporter.lowerings import extra_symbolics
from graphtag.exporter.noise import root_cause
from graphtag.exporter.switches import SwitchesUnavailable, describe, traceable_switches


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One route tried without success: failed (``cause`` = the error) or skipped (why)."""

    route: str
    cause: str
    skipped: bool = False

    def line(self) -> str:
        return f"{self.route}: {'skipped: ' if self.skipped else ''}{self.cause}"


class ExportFailed(GraphtagError):
    """No route produced a model; ``attempts`` has one entry per route tried."""

    def __init__(self, attempts: Sequence[Attempt]) -> None:
        self.attempts = list(attempts)
        if len(self.attempts) == 1 and not self.attempts[0].skipped:
            (only,) = self.attempts
            text = f"the {only.route} exporter failed ({only.cause})"
        else:
            text = "every export route failed:\n" + "\n".join(
                f"  {attempt.line()}" for attempt in self.attempts
            )
        super().__init__(text)


class RouteSkipped(Exception):
    """A route does not apply to this model (the reason is the message)."""


@dataclasses.dataclass
class Exported:
    """What an exporter produced: the raw model and how it was obtained."""

    model: ir.Model
    route: str  # "dynamo", "dynamo-traceable(attn_implementation=eager)", "torchscript"
    dynamo: bool  # made by torch's dynamo exporter (name_scopes metadata, torch's optimizer)
    switches: dict[str, str] = dataclasses.field(default_factory=dict)  # set while exporting
    attempts: list[Attempt] = dataclasses.field(default_factory=list)  # routes before this


class Exporter(abc.ABC):
    """Runs one of torch's exporters; subclasses set :attr:`name` and :meth:`run`."""

    name: ClassVar[str]

    @abc.abstractmethod
    def run(
        self, model: torch.nn.Module, args: tuple, kwargs: Mapping[str, Any], options: Mapping
    ) -> Exported:
        """Export ``model`` with torch ``options``; raises ExportFailed."""

    def export(
        self, model: torch.nn.Module, args: tuple = (), kwargs: Mapping | None = None, **options
    ) -> ir.Model:
        """The raw (untagged) ``onnx_ir.Model``, route in ``pkg.graphtag.export_route``."""
        return self.run(model, args, dict(kwargs or {}), options).model

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _stamp(exported: Exported) -> Exported:
    exported.model.metadata_props[metadata.EXPORT_ROUTE] = exported.route
    return exported


class DynamoExporter(Exporter):
    """``torch.onnx.export(dynamo=True)``; ``traceable``: with traceable switches set."""

    name = "dynamo"

    def __init__(self, *, traceable: bool = False) -> None:
        self.traceable = traceable

    @property
    def route(self) -> str:
        return "dynamo-traceable" if self.traceable else "dynamo"

    def run(self, model, args, kwargs, options) -> Exported:
        if not self.traceable:
            return _stamp(Exported(self._export(model, args, kwargs, options), "dynamo", True))
        try:
            with traceable_switches(model) as switches:
                onnx_model = self._export(model, args, kwargs, options)
        except SwitchesUnavailable as exc:
            raise RouteSkipped(str(exc)) from exc
        route = f"{self.route}({describe(switches)})"
        return _stamp(Exported(onnx_model, route, True, switches))

    def _export(self, model, args, kwargs, options) -> ir.Model:
        torch_registry.install()  # torch's ONNX function table built once per process
        try:
            program = torch.onnx.export(model, args, None, kwargs=kwargs, dynamo=True, **options)
        except Exception as exc:
            raise ExportFailed([Attempt(self.route, root_cause(exc))]) from exc
        return program.model

    def __repr__(self) -> str:
        return f"DynamoExporter(traceable={self.traceable})"


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


def wrap_kwargs(model: torch.nn.Module, kwargs: Mapping) -> KwargsWrapper:
    """Tensors become positional inputs; other keyword values stay fixed in the wrapper."""
    names = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
    constants = {k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)}
    return KwargsWrapper(model, names, constants)


class TorchScriptExporter(Exporter):
    """``torch.onnx.export(dynamo=False)``; keyword inputs through :class:`KwargsWrapper`."""

    name = "torchscript"

    def run(self, model, args, kwargs, options) -> Exported:
        exported: torch.nn.Module = model
        call_args = args
        # dynamo's spelling of dynamic axes (auto gives every rung the same options).
        options = torchscript_options(options, model, args, kwargs)
        if kwargs:
            # The TorchScript exporter cannot pass keyword inputs: wrap them positionally.
            if args:
                raise ExportFailed(
                    [Attempt(self.name, "it takes either positional or keyword inputs, not both")]
                )
            exported = wrap_kwargs(model, kwargs)
            call_args = tuple(kwargs[name] for name in exported.names)
            options = {"input_names": exported.names, **options}
        with tempfile.TemporaryDirectory(prefix="graphtag-ts-") as tmp:
            path = Path(tmp) / "model.onnx"
            try:
                with extra_symbolics(options.get("opset_version")):
                    torch.onnx.export(exported, call_args, str(path), dynamo=False, **options)
            except Exception as exc:
                raise ExportFailed([Attempt(self.name, root_cause(exc))]) from exc
            onnx_model = ir.load(path)
            # Read every tensor now: the temporary folder (and any external data) goes away.
            for value in onnx_model.graph.initializers.values():
                if isinstance(value.const_value, ir.ExternalTensor):
                    value.const_value = ir.tensor(value.const_value.numpy(), name=value.name)
        if exported is not model:
            # Parameter names carry the wrapper's attribute ("model."), tags never do.
            onnx_model.metadata_props[metadata.PARAMETER_PREFIX] = KwargsWrapper.attribute + "."
        return _stamp(Exported(onnx_model, self.name, False))


class FallbackExporter(Exporter):
    """``auto``: the first of ``rungs`` that works; earlier failures kept in ``attempts``."""

    name = "auto"

    def __init__(self, rungs: Sequence[Exporter] | None = None) -> None:
        self.rungs = list(rungs) if rungs is not None else default_ladder()
        if not self.rungs:
            raise GraphtagError("a fallback exporter needs at least one rung")

    def run(self, model, args, kwargs, options) -> Exported:
        attempts: list[Attempt] = []
        for rung in self.rungs:
            try:
                exported = rung.run(model, args, kwargs, options)
            except RouteSkipped as exc:
                attempts.append(Attempt(_route_name(rung), str(exc), skipped=True))
            except ExportFailed as exc:
                attempts.extend(exc.attempts)
            else:
                exported.attempts = attempts + exported.attempts
                return exported
        raise ExportFailed(attempts)

    def __repr__(self) -> str:
        return f"FallbackExporter({self.rungs!r})"


def _route_name(exporter: Exporter) -> str:
    return getattr(exporter, "route", exporter.name)


def default_ladder() -> list[Exporter]:
    """Dynamo as given, dynamo with traceable implementation switches, TorchScript."""
    return [DynamoExporter(), DynamoExporter(traceable=True), TorchScriptExporter()]


EXPORTERS: dict[str, type[Exporter] | Any] = {
    "auto": FallbackExporter,
    "dynamo": DynamoExporter,
    "torchscript": TorchScriptExporter,
}


def resolve_exporter(
    exporter: str | Exporter | None = None, dynamo: bool | None = None
) -> Exporter:
    """An Exporter from a name (``auto``, ``dynamo``, ``torchscript``) or an instance.

    ``dynamo=True/False`` is torch's spelling of a strict single route; with neither
    argument the result is ``auto``.
    """
    if isinstance(exporter, Exporter):
        if dynamo is not None:
            raise GraphtagError("give either an exporter or dynamo=True/False, not both")
        return exporter
    if exporter is None:
        if dynamo is None:
            return FallbackExporter()
        return DynamoExporter() if dynamo else TorchScriptExporter()
    if not isinstance(exporter, str) or exporter not in EXPORTERS:
        raise GraphtagError(
            f"unknown exporter {exporter!r} (valid: {', '.join(EXPORTERS)} or an Exporter)"
        )
    chosen = EXPORTERS[exporter]()
    if dynamo is not None and exporter != "auto" and (exporter == "dynamo") != bool(dynamo):
        raise GraphtagError(f"exporter={exporter!r} contradicts dynamo={dynamo}")
    if dynamo is not None and exporter == "auto":
        raise GraphtagError("exporter='auto' tries both exporters: leave dynamo unset")
    return chosen
