"""A model's implementation switches: which kernel a family of layers runs, from its config.

transformers models pick some layers' implementation at run time from their config:
``config._attn_implementation`` (``sdpa``, ``eager``, ``flex_attention``, ...) and
``config._experts_implementation`` (``grouped_mm``, ``batched_mm``, ``eager``, ...), each
changed with ``model.set_<kind>_implementation(value)`` and validated by
``model.get_correct_<kind>_implementation(value)``. The fast variants do not always
trace: torch.export cannot translate grouped_mm's custom op, and sdpa makes a strided
view some models cannot reshape. Their reference variants do.

Discovery is generic, never by model name: a *switch* is any ``_<kind>_implementation``
attribute of a submodule's ``config`` for which that submodule has both
``set_<kind>_implementation`` and ``get_correct_<kind>_implementation``. The topmost such
submodules own the switches (their setter reaches the models nested in them). A
switch's *traceable value* is the first of :data:`TRACEABLE_VALUES` that its validator
accepts as is: experts take ``batched_mm``, attention (which has no such
implementation) takes ``eager``.

:func:`implementation_switches` sets given values for the duration of a block and then
restores every config it touched exactly; :func:`traceable_switches` does the same with
the traceable values and says why when it cannot.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any

from torch import nn

from graphtag.core.errors import GraphtagError, first_line

# Implementations torch.export can trace, most preferred first: the batched matmul
# variant of mixture-of-experts layers, then every family's reference ("eager") variant.
TRACEABLE_VALUES = ("batched_mm", "eager")

_SWITCH = re.compile(r"^_(?P<kind>[a-z][a-z0-9_]*?)_implementation$")
_SUFFIX = "_implementation"


class SwitchesUnavailable(GraphtagError):
    """The model's switches cannot be set to traceable values (the reason is the message)."""


def switch_name(kind: str) -> str:
    """``attn`` -> ``attn_implementation`` (the name transformers' keyword uses)."""
    return kind + _SUFFIX


def _kinds(config: Any) -> list[str]:
    """Switch kinds a config declares (``_attn_implementation`` -> ``attn``)."""
    found = []
    for attr in dir(type(config)):
        match = _SWITCH.match(attr)
        if match and not attr.endswith("_internal"):
            found.append(match["kind"])
    return sorted(found)


def _owned_kinds(module: nn.Module) -> list[str]:
    config = getattr(module, "config", None)
    if config is None:
        return []
    return [
        kind
        for kind in _kinds(config)
        if callable(getattr(module, f"set_{kind}{_SUFFIX}", None))
        and callable(getattr(module, f"get_correct_{kind}{_SUFFIX}", None))
    ]


def switch_owners(model: nn.Module) -> list[tuple[nn.Module, list[str]]]:
    """The topmost submodules with switches (pre-order), each with its switch kinds."""
    owners: list[tuple[nn.Module, list[str]]] = []
    stack = [model]
    seen: set[int] = set()
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        kinds = _owned_kinds(module)
        if kinds:
            owners.append((module, kinds))
            continue  # its setters reach the models nested in it
        stack.extend(reversed([m for m in module._modules.values() if m is not None]))
    return owners


def _configs(model: nn.Module) -> list[Any]:
    """Every config object a switch can live in: submodules' configs and their sub-configs."""
    found: dict[int, Any] = {}
    queue = [m.config for m in model.modules() if getattr(m, "config", None) is not None]
    while queue:
        config = queue.pop()
        if id(config) in found:
            continue
        found[id(config)] = config
        for key in getattr(config, "sub_configs", None) or ():
            sub = getattr(config, key, None)
            if sub is not None and hasattr(sub, "sub_configs"):
                queue.append(sub)
    return list(found.values())


def _read(config: Any, kind: str) -> Any:
    return getattr(config, f"_{kind}{_SUFFIX}", None)


def _write(config: Any, kind: str, value: Any) -> None:
    # The internal attribute sets this config alone; the property would also rewrite
    # the sub-configs, which are restored one by one anyway.
    internal = f"_{kind}{_SUFFIX}_internal"
    setattr(config, internal if hasattr(config, internal) else f"_{kind}{_SUFFIX}", value)


def current_switches(model: nn.Module) -> dict[str, str | None]:
    """Switch name -> value in the first owner's config (``{"attn_implementation": "sdpa"}``)."""
    values: dict[str, str | None] = {}
    for owner, kinds in switch_owners(model):
        for kind in kinds:
            values.setdefault(switch_name(kind), _read(owner.config, kind))
    return values


@contextlib.contextmanager
def _transformers_quiet() -> Iterator[None]:
    # set_*_implementation warns about sub-models it leaves alone; graphtag reports what
    # changed itself.
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def implementation_switches(
    model: nn.Module, values: Mapping[str, str]
) -> Iterator[dict[str, str]]:
    """Set switches (``{"attn_implementation": "eager"}``) for the duration of the block.

    Yields the switches whose value changed somewhere in the model (a model may refuse a
    value it cannot use at run time, e.g. a class without the attention interface).
    Every config is restored exactly on exit, whatever happens. A switch the model does
    not have is ignored; a value transformers rejects raises SwitchesUnavailable.
    """
    configs = _configs(model)
    kinds = sorted({name.removesuffix(_SUFFIX) for name in values})
    saved = [
        (config, kind, _read(config, kind))
        for config in configs
        for kind in kinds
        if kind in _kinds(config)  # never touch a module's unrelated ``config`` object
    ]
    try:
        with _transformers_quiet():
            for owner, owned in switch_owners(model):
                for kind in owned:
                    value = values.get(switch_name(kind))
                    if value is None or _read(owner.config, kind) == value:
                        continue
                    try:
                        getattr(owner, f"set_{kind}{_SUFFIX}")(value)
                    except Exception as exc:
                        raise SwitchesUnavailable(
                            f"cannot set {switch_name(kind)}={value}: {first_line(exc, 200, typed=True)}"
                        ) from exc
        changed = {
            switch_name(kind): _read(config, kind)
            for config, kind, before in saved
            if _read(config, kind) != before
        }
        yield dict(sorted(changed.items()))
    finally:
        for config, kind, before in saved:
            _write(config, kind, before)


def traceable_values(model: nn.Module) -> dict[str, str]:
    """Switch name -> the traceable value it would take; raises SwitchesUnavailable.

    Raises when the model has no switch, or when a config holds a value transformers
    does not accept (an unknown implementation: graphtag could not promise to put it
    back).
    """
    owners = switch_owners(model)
    if not owners:
        raise SwitchesUnavailable("the model exposes no implementation switches")
    targets: dict[str, str] = {}
    for owner, kinds in owners:
        for kind in kinds:
            name = switch_name(kind)
            validate = getattr(owner, f"get_correct_{kind}{_SUFFIX}")
            current = _read(owner.config, kind)
            if current is not None and not _accepts(validate, current):
                raise SwitchesUnavailable(
                    f"config {name}={current!r} is not an implementation transformers knows"
                )
            for value in TRACEABLE_VALUES:
                if _accepts(validate, value):
                    targets.setdefault(name, value)
                    break
    return targets


def _accepts(validate, value: str) -> bool:
    """Whether transformers' validator takes ``value`` as it is (no substitute, no error)."""
    try:
        with _transformers_quiet():
            return validate(value) == value
    except Exception:  # ValueError for unknown names; ImportError for missing kernels
        return False


@contextlib.contextmanager
def traceable_switches(model: nn.Module) -> Iterator[dict[str, str]]:
    """Set every switch to its traceable value for the block; yields what changed.

    Raises SwitchesUnavailable (nothing changed) when there is nothing to switch: no
    switches, an unknown value in the config, or every switch already traceable.
    """
    targets = traceable_values(model)
    with implementation_switches(model, targets) as changed:
        if not changed:
            shown = ", ".join(f"{k}={v}" for k, v in sorted(current_switches(model).items()))
            raise SwitchesUnavailable(
                f"the implementation switches are already traceable ({shown})"
            )
        yield changed


def describe(switches: Mapping[str, str]) -> str:
    """``attn_implementation=eager,experts_implementation=batched_mm``."""
    return ",".join(f"{k}={v}" for k, v in sorted(switches.items()))
