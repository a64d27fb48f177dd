"""The analysis cache: each question about a model answered once while the model is unchanged.

An *analysis* is a function of the model alone (its hierarchy, its module boundaries, its
parameter usage, ...). Outside an :func:`analysis_scope` every call computes afresh, so
nothing can be stale. Inside one, the first call for a model computes and keeps the
result and later calls for the same model object reuse it, until :meth:`invalidate`:

* a :class:`graphtag.pipeline.Pipeline` run is one scope; after each pass that reports
  ``modified=True`` it drops every analysis the pass does not declare in its
  ``preserves`` class attribute (a set of the names below; none by default);
* tools that ask several questions of one model (snapshot, analyze, validate,
  extracting every module) open a scope around their work; the model must not change
  while it is open.

Scopes nest: a scope opened for a model that already has one reuses it. Results are
shared between callers: treat them as read-only.
"""

from __future__ import annotations

__all__ = [
    "ALL",
    "BOUNDARIES",
    "HIERARCHY",
    "PARAMETERS",
    "AnalysisCache",
    "analysis_scope",
    "cached",
    "hierarchy",
]

import contextlib
import contextvars
import logging
from collections.abc import Callable, Collection, Iterator
from typing import TypeVar

import onnx_ir as ir

from graphtag.core.hierarchy import Hierarchy

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Names passes list in ``preserves``.
HIERARCHY = "hierarchy"  # the module tree in the model metadata
BOUNDARIES = "boundaries"  # node tags, node order and the graph's wiring
PARAMETERS = "parameters"  # node tags, initializers and the wiring of their uses
ALL = frozenset({HIERARCHY, BOUNDARIES, PARAMETERS})


class AnalysisCache:
    """The analyses computed so far for one model."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self._results: dict[str, object] = {}

    def get(self, name: str, compute: Callable[[ir.Model], T]) -> T:
        if name not in self._results:
            self._results[name] = compute(self.model)
        else:
            logger.debug("analysis %s: reused", name)
        return self._results[name]  # type: ignore[return-value]

    def invalidate(self, preserved: Collection[str] = ()) -> None:
        """Forget every analysis except the ``preserved`` ones."""
        dropped = [name for name in self._results if name not in preserved]
        for name in dropped:
            del self._results[name]
        if dropped:
            logger.debug("analyses invalidated: %s", ", ".join(dropped))

    def rebind(self, model: ir.Model) -> None:
        """Follow a pass that returned a new model object: nothing known carries over."""
        if model is not self.model:
            self.model = model
            self._results.clear()


_ACTIVE: contextvars.ContextVar[tuple[AnalysisCache, ...]] = contextvars.ContextVar(
    "graphtag_analysis_caches", default=()
)


def _active(model: ir.Model) -> AnalysisCache | None:
    return next((c for c in _ACTIVE.get() if c.model is model), None)


@contextlib.contextmanager
def analysis_scope(model: ir.Model) -> Iterator[AnalysisCache]:
    """Cache the analyses of ``model`` until the block ends (re-entrant)."""
    cache = _active(model)
    if cache is not None:
        yield cache
        return
    cache = AnalysisCache(model)
    token = _ACTIVE.set((*_ACTIVE.get(), cache))
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)


def cached(model: ir.Model, name: str, compute: Callable[[ir.Model], T]) -> T:
    """``compute(model)``, reused within the model's analysis scope (fresh outside one)."""
    cache = _active(model)
    return compute(model) if cache is None else cache.get(name, compute)


def hierarchy(model: ir.Model) -> Hierarchy | None:
    """The hierarchy stored in the model (:meth:`Hierarchy.from_model`), cached."""
    return cached(model, HIERARCHY, Hierarchy.from_model)
