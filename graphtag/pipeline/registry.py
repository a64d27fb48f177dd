"""Registry of named passes: built-ins, onnx_ir's common passes and plugins.

A pass declares its options as the keyword parameters of its ``__init__``, each with
a type annotation (bool, int, float, str or a Literal of choices) and a default; the
annotation may be ``typing.Annotated[T, "what the option does"]`` to describe it. Its
one-line doc is the first line of the class docstring. Third-party packages add
passes through the ``graphtag.passes`` entry-point group (name = pipeline name,
value = ``module:PassClass``); nothing else is ever imported as a plugin.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import re
import typing
from collections.abc import Callable
from importlib import metadata as importlib_metadata
from typing import Annotated, Any, Literal, get_args, get_origin

import onnx_ir as ir

from graphtag.core.errors import PipelineError
from graphtag.pipeline.parse import option_name

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "graphtag.passes"
_SIMPLE_TYPES = (bool, int, float, str)


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One declared option of a pass."""

    name: str
    type: type
    default: Any
    choices: tuple[Any, ...] = ()  # non-empty for Literal options
    description: str = ""  # from Annotated[T, "description"]

    @property
    def type_name(self) -> str:
        if self.choices:
            return "|".join(str(c) for c in self.choices)
        return self.type.__name__

    def convert(self, pass_name: str, raw: Any) -> Any:
        """Convert a raw value (a string from a pipeline, or a TOML value) to the option's type."""
        try:
            value = _convert(self.type, raw)
        except (TypeError, ValueError):
            raise PipelineError(
                f"pass '{pass_name}': option '{self.name}' expects {self.type_name}, got {raw!r}"
            ) from None
        if self.choices and value not in self.choices:
            raise PipelineError(
                f"pass '{pass_name}': option '{self.name}' must be one of "
                f"{', '.join(map(str, self.choices))}; got {raw!r}"
            )
        return value


def _convert(kind: type, raw: Any) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if kind is int and isinstance(raw, float | bool):
        raise TypeError(raw)
    if kind is float and isinstance(raw, bool):
        raise TypeError(raw)
    return kind(raw)


@dataclasses.dataclass(frozen=True)
class PassSpec:
    """A registered pass: its pipeline name, how to build it, its options and doc."""

    name: str
    factory: Callable[..., ir.passes.PassBase]
    options: tuple[OptionSpec, ...]
    doc: str
    origin: str  # "graphtag", "onnx_ir" or "plugin <distribution>"

    def option(self, name: str) -> OptionSpec:
        for opt in self.options:
            if opt.name == name:
                return opt
        valid = ", ".join(o.name for o in self.options) or "none"
        raise PipelineError(f"pass '{self.name}' has no option '{name}' (valid options: {valid})")

    def create(self, raw_options: dict[str, Any] | None = None) -> ir.passes.PassBase:
        """Instantiate the pass with options checked against the declaration.

        Option names may be spelled with ``-`` or ``_`` (``group-by-tag``); one option
        given twice, in any spelling, is an error.
        """
        kwargs: dict[str, Any] = {}
        given: dict[str, str] = {}
        for key, value in (raw_options or {}).items():
            try:
                name = option_name(key, given)
            except PipelineError as exc:
                raise PipelineError(f"pass '{self.name}': {exc}") from None
            kwargs[name] = self.option(name).convert(self.name, value)
        try:
            return self.factory(**kwargs)
        except (TypeError, ValueError) as exc:
            raise PipelineError(f"pass '{self.name}': {exc}") from exc


def _one_line_doc(cls: type) -> str:
    # The class's own docstring only: an inherited one would describe the base class.
    doc = inspect.cleandoc(cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def _option_specs(cls: type) -> tuple[OptionSpec, ...]:
    """Read the options a pass class declares in its ``__init__`` signature."""
    if cls.__init__ is object.__init__:
        return ()
    try:
        hints = typing.get_type_hints(cls.__init__, include_extras=True)
    except Exception:  # unresolvable annotations: fall back to raw ones
        hints = {}
    specs = []
    for param in inspect.signature(cls.__init__).parameters.values():
        if param.name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(param.name, param.annotation)
        description = ""
        if get_origin(annotation) is Annotated:
            annotation, *extras = get_args(annotation)
            description = next((e for e in extras if isinstance(e, str)), "")
        default = None if param.default is param.empty else param.default
        kind, choices = _option_type(annotation, default)
        if kind is None:
            continue  # not settable from a pipeline string (e.g. a callable)
        specs.append(OptionSpec(param.name, kind, default, choices, description))
    return tuple(specs)


def _option_type(annotation: Any, default: Any) -> tuple[type | None, tuple]:
    if get_origin(annotation) is Literal:
        choices = get_args(annotation)
        return type(choices[0]), choices
    if annotation in _SIMPLE_TYPES:
        return annotation, ()
    # Optional[X] / X | None
    args = [a for a in get_args(annotation) if a is not type(None)]
    if len(args) == 1:
        return _option_type(args[0], default)
    if annotation is inspect.Parameter.empty and isinstance(default, _SIMPLE_TYPES):
        return type(default), ()
    return None, ()


def spec_for_class(name: str, cls: type, origin: str) -> PassSpec:
    if not (isinstance(cls, type) and issubclass(cls, ir.passes.PassBase)):
        raise PipelineError(
            f"pass '{name}' ({origin}) is not an onnx_ir.passes.PassBase subclass: {cls!r}"
        )
    return PassSpec(name, cls, _option_specs(cls), _one_line_doc(cls), origin)


def _kebab(class_name: str) -> str:
    base = class_name[:-4] if class_name.endswith("Pass") else class_name
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", base).lower()


@dataclasses.dataclass
class BrokenPlugin:
    name: str
    origin: str
    error: str


def _builtin_specs(broken: list[BrokenPlugin]) -> dict[str, PassSpec]:
    from graphtag.passes import BUILTIN_PASSES

    specs = {}
    for name, target in BUILTIN_PASSES.items():
        module_name, _, attr = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            # Reported like a broken plugin so one bad pass does not hide the others.
            broken.append(BrokenPlugin(name, "graphtag", f"{type(exc).__name__}: {exc}"))
            continue
        specs[name] = spec_for_class(name, cls, "graphtag")
    return specs


def _onnx_ir_specs() -> dict[str, PassSpec]:
    """onnx_ir's common passes, named ``ir.<kebab-case>``."""
    import onnx_ir.passes.common as common

    specs = {}
    for attr in sorted(dir(common)):
        cls = getattr(common, attr)
        if isinstance(cls, type) and issubclass(cls, ir.passes.PassBase) and attr.endswith("Pass"):
            name = "ir." + _kebab(attr)
            specs[name] = spec_for_class(name, cls, "onnx_ir")
    return specs


class PassRegistry:
    """All passes usable by name. Built lazily; plugins come from entry points only."""

    def __init__(self) -> None:
        self._specs: dict[str, PassSpec] = {}
        self.broken: list[BrokenPlugin] = []
        self._specs.update(_builtin_specs(self.broken))
        for broken in self.broken:
            logger.warning(
                "pass '%s' (%s) not loaded: %s", broken.name, broken.origin, broken.error
            )
        self._specs.update(_onnx_ir_specs())
        self._load_plugins()

    def _load_plugins(self) -> None:
        for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep.dist, "name", None) or "unknown distribution"
            origin = f"plugin {dist}"
            if ep.name in self._specs:
                self._disable(ep.name, origin, f"name taken by {self._specs[ep.name].origin}")
                continue
            try:
                self._specs[ep.name] = spec_for_class(ep.name, ep.load(), origin)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:
                # A broken plugin must not break the others, nor the command: whatever
                # its import raises (SystemExit from a sys.exit() at import included)
                # disables that plugin only, and says which.
                why = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, SystemExit):
                    why = f"called sys.exit({exc.code!r}) while being imported"
                self._disable(ep.name, origin, why)

    def _disable(self, name: str, origin: str, why: str) -> None:
        """Record a pass that cannot be used, and warn (``-p`` naming it gets the reason)."""
        logger.warning("pass '%s' (%s) not loaded: %s", name, origin, why)
        self.broken.append(BrokenPlugin(name, origin, why))

    def register(self, name: str, cls: type, origin: str = "python") -> PassSpec:
        """Register a pass class from Python code (for scripts and notebooks)."""
        if name in self._specs:
            raise PipelineError(f"a pass named '{name}' is already registered")
        spec = spec_for_class(name, cls, origin)
        self._specs[name] = spec
        return spec

    def names(self) -> list[str]:
        return list(self._specs)

    def specs(self) -> list[PassSpec]:
        return list(self._specs.values())

    def get(self, name: str) -> PassSpec:
        try:
            return self._specs[name]
        except KeyError:
            broken = next((b for b in self.broken if b.name == name), None)
            if broken is not None:
                raise PipelineError(
                    f"pass '{name}' ({broken.origin}) failed to load: {broken.error}"
                ) from None
            raise PipelineError(
                f"unknown pass '{name}' (valid passes: {', '.join(self._specs)})"
            ) from None


_REGISTRY: PassRegistry | None = None


def registry() -> PassRegistry:
    """The process-wide registry (built on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = PassRegistry()
    return _REGISTRY
