"""Start-up cost of a command: import sympy only when something uses it.

onnx_ir imports sympy when it is imported (for arithmetic on symbolic dimensions,
which loading, checking and rewriting a model never do) and sympy takes a third of a
second or more to import. :func:`defer_sympy` registers sympy, and the onnx_ir module
whose top level reads sympy's attributes, as stand-in modules: each is imported on the
first read of one of its attributes, so a command that never touches a symbolic
expression never pays for it, and one that does gets the real modules, unchanged. (The
standard library's ``LazyLoader`` does not help: on Python 3.11 the import statement
itself reads the module's ``__spec__``, which makes it load at once.) If onnx_ir or
sympy is already imported, or cannot be found, nothing is done (only start-up time
differs).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types

# Modules executed on first use, in this order (a parent package must be found first).
_DEFERRED = ("sympy", "onnx_ir._symbolic_shapes")


class _Deferred(types.ModuleType):
    """Stands in for a module until one of its attributes is read, then imports it.

    Only *missing* attributes reach ``__getattr__``: the import system's own reads
    (``__spec__``, ``__name__``) find the stand-in's and trigger nothing. After the real
    import the stand-in mirrors the real module's namespace, so code holding it (``import
    sympy`` at the top of onnx_ir) keeps working at full speed.
    """

    def __getattr__(self, attr: str):
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        try:
            real = importlib.import_module(name)
        except BaseException:
            sys.modules.setdefault(name, self)
            raise
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def defer_sympy() -> bool:
    """Make ``sympy`` (and onnx_ir's expression parser) load on first use; True if done."""
    if any(name in sys.modules for name in ("sympy", "onnx_ir", *_DEFERRED)):
        return False
    specs = []
    for name in _DEFERRED:
        spec = _find_without_importing(name)
        if spec is None:
            return False
        specs.append(spec)
    for spec in specs:
        stand_in = _Deferred(spec.name)
        stand_in.__spec__ = spec
        stand_in.__loader__ = spec.loader
        stand_in.__file__ = spec.origin
        sys.modules[spec.name] = stand_in
    return True


def _find_without_importing(name: str) -> importlib.machinery.ModuleSpec | None:
    """The spec of ``name``; for a submodule, found on its parent's path without
    executing the parent package (``importlib.util.find_spec`` would import it)."""
    parent, _, _ = name.rpartition(".")
    try:
        if not parent:
            return importlib.util.find_spec(name)
        parent_spec = importlib.util.find_spec(parent)
        if parent_spec is None or not parent_spec.submodule_search_locations:
            return None
        return importlib.machinery.PathFinder.find_spec(
            name, list(parent_spec.submodule_search_locations)
        )
    except (ImportError, ValueError):
        return None
