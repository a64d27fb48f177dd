"""torch's table of ONNX functions, built once per process instead of on every export.

``torch.onnx.export(dynamo=True)`` builds its registry of ATen -> ONNX functions
(``ONNXRegistry.from_torchlib``) anew on every call: 0.6-0.7 s here, half the export of
a small model, and paid again by every export in the process (``graphtag verify``, the
``auto`` ladder's second rung, a notebook exporting several models). The table depends
only on its arguments (the opset), on onnxscript's torch library and on which of the
operators that library names torch has loaded, so :func:`install` makes torch build it
once per such state and hand every call its own copy: a caller's additions
(``custom_translation_table``) never reach the next export. An operator the library
names that arrives later (torchvision's, once it is imported) changes the state, and the
table is built again; operators it does not name (torch registers some on its first
export) do not. The exported models are the same, byte for byte.

graphtag installs it on its first dynamo export; torch's own exports in the process
then use it too. :func:`uninstall` puts torch's method back. Where torch has no such
method (another version's internals), nothing is installed.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import logging
import threading
from typing import Any

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_original: Any = None  # torch's classmethod while ours is installed
_built: dict[tuple, _Built] = {}  # arguments (the opset) -> the newest registry
builds = 0  # registries built by torch through this cache (read by tests)


@dataclasses.dataclass(frozen=True)
class _Built:
    registry: Any
    operators: frozenset[str]  # _operators(registry)
    state: tuple[int, int]  # _state(operators) when it was built


def install() -> bool:
    """Cache torch's registry (idempotent); whether the cache is in place."""
    global _original
    with _lock:
        if _original is not None:
            return True
        try:
            import torch
            from torch.onnx._internal.exporter import _registration

            original = _registration.ONNXRegistry.__dict__["from_torchlib"]
            torch._C._dispatch_get_all_op_names  # noqa: B018 (what _state reads)
        except (ImportError, AttributeError, KeyError):
            original = None
        if not isinstance(original, classmethod):
            logger.debug("this torch's ONNX registry is not the one expected: not cached")
            return False
        build = original.__func__
        signature = inspect.signature(build)

        @functools.wraps(build)
        def from_torchlib(cls, *args, **kwargs):
            return _cached(build, signature, cls, args, kwargs)

        _registration.ONNXRegistry.from_torchlib = classmethod(from_torchlib)
        _original = original
        return True


def uninstall() -> None:
    """Put torch's own method back and drop the cached registry."""
    global _original
    with _lock:
        if _original is None:
            return
        from torch.onnx._internal.exporter import _registration

        _registration.ONNXRegistry.from_torchlib = _original
        _original = None
        _built.clear()


def _cached(build, signature: inspect.Signature, cls, args: tuple, kwargs: dict):
    global builds
    try:
        # Defaults filled in: from_torchlib() and from_torchlib(opset_version=18) agree.
        bound = signature.bind(cls, *args, **kwargs)
        bound.apply_defaults()
        key = tuple(bound.arguments.items())
        hash(key)
    except TypeError:  # arguments that cannot key a cache (another torch's signature)
        return build(cls, *args, **kwargs)
    with _lock:
        found = _built.get(key)
        if found is None or _state(found.operators) != found.state:
            registry = build(cls, *args, **kwargs)
            builds += 1
            operators = _operators(registry)
            # The state is read after the build, which imports onnxscript's torch library.
            found = _built[key] = _Built(registry, operators, _state(operators))
        return _copy(found.registry)


def _operators(registry) -> frozenset[str]:
    """The operators the table may draw on, as ``namespace::name``: its targets and every
    operator onnxscript's torch library names, found or not (a library not loaded yet)."""
    found: set[str] = set()
    for target in registry.functions:
        name = target if isinstance(target, str) else getattr(target, "name", None)
        if callable(name):
            name = name()
        if isinstance(name, str):
            found.add(name)
    found.update(name for name, _ in _torchlib())
    return frozenset(name.partition(".")[0] for name in found)  # without the overload


def _state(operators: frozenset[str]) -> tuple[int, int]:
    """What the table is built from: which overloads of ``operators`` torch's dispatcher
    knows (a library loaded, an overload defined) and the size of onnxscript's torch
    library. Other operators (torch registers some on its first export) leave it
    alone. About 5 ms."""
    import torch

    names = torch._C._dispatch_get_all_op_names()
    known = hash(frozenset(n for n in names if n.partition(".")[0] in operators))
    return known, sum(len(f.overloads) + len(f.complex) for _, f in _torchlib())


def _torchlib() -> list[tuple[str, Any]]:
    """onnxscript's torch library: (qualified name, its overloaded function) pairs; none
    where onnxscript has no such registry."""
    try:
        from onnxscript.function_libs.torch_lib import registration

        return list(registration.default_registry.items())
    except (ImportError, AttributeError):
        return []


def _copy(registry):
    """A registry whose containers are its own: the functions they hold are shared."""
    new = copy.copy(registry)
    for name, value in vars(registry).items():
        if isinstance(value, dict):
            value = {k: list(v) if isinstance(v, list) else v for k, v in value.items()}
        elif isinstance(value, list | set):
            value = type(value)(value)
        setattr(new, name, value)
    return new
