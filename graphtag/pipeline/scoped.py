"""Scoped passes: run any pass on the modules a tag pattern selects, nowhere else.

``Scoped(pass_, "*/BertLayer.0")`` is itself an onnx_ir pass; pipeline text spells it
``PASS{options}@PATTERN`` and TOML ``scope = "PATTERN"``. The pattern language is
:mod:`graphtag.core.patterns` (``A|B`` names several; an exact tag, ``[``, ``]`` or
``|`` in it included, selects itself; a list of patterns is read one by one). Each
matched module is a *scope*: the main-graph nodes tagged with its tag or a
descendant's.

How a scope is rewritten (:mod:`graphtag.core.scoping` has the pass-side protocol):

* generic (any pass): the scope is extracted as a standalone model
  (:mod:`graphtag.surgery.extraction`; made for a rewrite: consumer records refreshed
  where the extraction changed a value's readers, the hierarchy only for a pass that
  may read it, see :func:`_reads_hierarchy`), the pass runs on it, and when it reports
  ``modified=True`` the result is spliced back in place of the scope's nodes
  (:mod:`graphtag.surgery.splice`): boundary values keep their names, types and shapes
  (a pass changing one is an error naming it), new nodes get the scope's tag, and
  nothing outside the scope changes. The main graph is re-sorted when the scope's
  nodes were interleaved with others or the rewrite is not in dependency order. A
  rewrite that kept every node and edge (it edited metadata, attributes or types), or
  only removed nodes and rewired the rest to values the scope had (CSE), is applied to
  the scope's own nodes instead: the same result, with no node moved, and a re-sort
  only if a rewired read points forward;
* native: a pass with ``call_scoped(model, scope)`` restricts itself on the whole model
  (graphtag's tag passes); it runs once over the union of the scopes;
* a pass whose class declares ``whole_model = "reason"`` cannot be scoped: building the
  Scoped pass raises, naming the pass and the reason.

Overlapping scopes (a pattern matching a module and a module inside it): each runs
once, outermost first; the inner scope is then taken from the outer one's result
(its nodes as the outer run left them), so the inner nodes are rewritten twice. Name
only the outer module to rewrite them once. Cost: one walk of the model to select the
scopes, then per scope one extraction, the pass on the extraction and one splice
(each O(scope)), plus one O(model) name index, and one sort of the main graph when a
splice may have broken its order (a scope whose nodes were not one unbroken run, or a
rewrite that is not in dependency order). While the scopes are rewritten, Python's
collector runs on young objects only, after each scope (its extraction and rewrite
are garbage by then): full collections, which walk the whole model, wait until the
pass ends.
"""

from __future__ import annotations

__all__ = ["Scoped", "ScopedPassError", "whole_model_reason"]

import contextlib
import gc
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

import onnx_ir as ir

from graphtag.analysis import manager
from graphtag.analysis.boundaries import (
    ModuleBoundary,
    ancestors_and_self,
    boundary_of,
    reentrant_inputs,
)
from graphtag.analysis.selection import module_scopes
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError, PipelineError, first_line
from graphtag.core.graphs import subgraph_owners
from graphtag.core.hierarchy import is_ancestor_or_self
from graphtag.core.pass_result import PassResult, diagnostics_of, stats_of
from graphtag.core.patterns import pattern_texts, split_patterns
from graphtag.core.scoping import NodeScope, native_scoping
from graphtag.core.scoping import reads_hierarchy as declared_reads_hierarchy
from graphtag.core.scoping import whole_model_reason as declared_reason
from graphtag.passes.toposort import TopologicalSortPass
from graphtag.surgery.extraction import Extractor
from graphtag.surgery.splice import ExtractedIO, Splicer, SpliceResult

logger = logging.getLogger(__name__)


# Passes of other packages whose job is the model's own interface: they cannot run on a
# part of it (their classes cannot declare ``whole_model`` themselves).
_WHOLE_MODEL_CLASSES = {
    "AddInitializersToInputsPass": "it makes the model's initializers graph inputs",
    "RemoveInitializersFromInputsPass": "it changes the model's graph inputs",
}


def whole_model_reason(pass_: object) -> str | None:
    """Why ``pass_`` cannot run scoped (its ``whole_model`` declaration, or onnx_ir's
    graph-interface passes), None when it can."""
    reason = declared_reason(pass_)
    if reason is not None:
        return reason
    cls = _onnx_ir_class(pass_)
    return None if cls is None else _WHOLE_MODEL_CLASSES.get(cls.__name__)


def _reads_hierarchy(pass_: object) -> bool:
    """Whether the pass may read the module hierarchy of the model it is given: its
    ``reads_hierarchy`` declaration when it makes one; otherwise True, except for
    onnx_ir's own passes, which know nothing of graphtag's model metadata. A scoped run
    hands the others extractions without the hierarchy (cutting it is a tenth of an
    extraction's cost)."""
    declared = declared_reads_hierarchy(pass_)
    return declared if declared is not None else _onnx_ir_class(pass_) is None


def _onnx_ir_class(pass_: object) -> type | None:
    """The class of ``pass_`` (a pass or a pass class) when onnx_ir defines it, which
    graphtag cannot give declarations of its own."""
    cls = pass_ if isinstance(pass_, type) else type(pass_)
    return cls if cls.__module__.startswith("onnx_ir.") else None


class ScopedPassError(GraphtagError):
    """A scoped run failed; the message already names the pass and the module."""


class Scoped(ir.passes.InPlacePass):
    """Run ``pass_`` on the modules ``pattern`` matches; every other node stays as it was.

    Reads: node tags (``pkg.graphtag.module``) and the hierarchy, to select the scopes.
    Writes: whatever the pass writes, inside the scopes only; nodes the pass creates get
    the scope's tag (``pkg.graphtag.tag_source = inferred:scope``) unless it tagged them.

    Invariants: every node outside the scopes keeps its op, inputs, outputs, attributes
    and metadata; the boundary values of each scope keep their names, types and shapes;
    a pattern matching no module raises (naming the closest tags). Statistics: the
    pass's own, summed over the scopes, plus ``scopes`` (rewritten), ``unchanged``
    (the pass reported no change), ``skipped`` (nothing to extract), ``nodes_removed``,
    ``nodes_added``, ``retagged`` and ``renamed``.
    """

    def __init__(
        self,
        pass_: ir.passes.PassBase,
        pattern: str | Sequence[str],
        *,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.pass_ = pass_
        # Several patterns are matched one by one (an exact tag may contain '|'); the
        # joined text only names them in messages.
        self.patterns = pattern_texts(pattern)
        self.pattern = "|".join(self.patterns)
        self.name = name or type(pass_).__name__
        if not any(split_patterns(text) for text in self.patterns):
            raise PipelineError(f"pass '{self.name}': empty scope pattern after '@'")
        reason = whole_model_reason(pass_)
        if reason is not None:
            raise PipelineError(
                f"pass '{self.name}' cannot run scoped (@{self.pattern}): it needs the whole "
                f"model ({reason})"
            )

    @property
    def preserves(self) -> frozenset[str]:
        """A native run keeps what the pass keeps; a splice rewires nodes and values, so
        only the hierarchy (model metadata, untouched) survives it."""
        if native_scoping(self.pass_):
            return frozenset(getattr(self.pass_, "preserves", ()))
        return frozenset({manager.HIERARCHY})

    def __repr__(self) -> str:
        return f"Scoped({self.pass_!r}, {self.pattern!r})"

    def call(self, model: ir.Model) -> PassResult:
        scopes = module_scopes(model, self.patterns)
        nested = _nested(scopes)
        diagnostics = _overlaps(nested)
        if native_scoping(self.pass_):
            return self._native(model, scopes, diagnostics)
        with _young_collections_only() as collect_young:
            return self._generic(model, scopes, nested, diagnostics, collect_young)

    # -- native ------------------------------------------------------------------------

    def _native(
        self, model: ir.Model, scopes: list[tuple[str, list[ir.Node]]], diagnostics: list[str]
    ) -> PassResult:
        chosen = {id(n) for _, nodes in scopes for n in nodes}
        nodes = [n for n in model.graph if id(n) in chosen]
        scope = NodeScope(nodes, [tag for tag, _ in scopes])
        self.pass_.requires(model)
        result = self.pass_.call_scoped(model, scope)  # type: ignore[attr-defined]
        self.pass_.ensures(result.model)
        stats = stats_of(result)
        stats["scopes"] = sum(1 for _, n in scopes if n)
        return PassResult(
            result.model,
            result.modified,
            stats=stats,
            diagnostics=diagnostics + diagnostics_of(result),
        )

    # -- generic: extract, run, splice -------------------------------------------------

    def _generic(
        self,
        model: ir.Model,
        scopes: list[tuple[str, list[ir.Node]]],
        nested: dict[str, list[str]],
        diagnostics: list[str],
        collect_young: Callable[[], None],
    ) -> PassResult:
        stats: Counter[str] = Counter(scopes=0, unchanged=0, skipped=0)
        boundaries: dict[str, ModuleBoundary] = {}
        extractor = Extractor(model, boundaries)  # reads ``boundaries`` as it fills up
        splicer = Splicer(model)
        order = _GraphOrder(model)
        reads_hierarchy = _reads_hierarchy(self.pass_)
        current = dict(scopes)
        modified = resort = False

        def rewrite(tag: str, nodes: list[ir.Node]) -> SpliceResult | None:
            """Extract, run, splice one scope; None when it was left as it was. The
            extraction and the rewrite are garbage once this returns."""
            scope = NodeScope(nodes)
            boundary = boundary_of(tag, scope, model.graph)
            if not boundary.outputs:
                self._skip(tag, "nothing outside it reads what it computes", stats, diagnostics)
                return None
            boundaries[tag] = boundary
            try:
                extracted, origins = extractor.extract_traced(
                    tag, for_rewrite=True, with_hierarchy=reads_hierarchy
                )
            except GraphtagError as exc:
                raise ScopedPassError(f"pass '{self.name}': cannot extract {exc}") from exc
            reentries = order.reentries(boundary, scope)
            before = ExtractedIO.of(extracted, boundary, reentries, origins)
            result = self._run_on(extracted, tag)
            stats.update(stats_of(result))
            diagnostics.extend(f"{tag}: {d}" for d in diagnostics_of(result))
            if not result.modified:
                stats["unchanged"] += 1
                return None
            try:
                return splicer.splice(boundary, before, result.model, tag=tag, pass_name=self.name)
            except ScopedPassError:
                raise
            except GraphtagError as exc:
                raise ScopedPassError(str(exc)) from exc

        for tag, _ in scopes:
            nodes = current[tag]
            if not nodes:
                self._skip(tag, "no nodes in the main graph", stats, diagnostics)
                continue
            done = rewrite(tag, nodes)
            collect_young()  # the scope's extraction and rewrite, unreachable now
            if done is None:
                continue
            modified = True
            # In place: nothing moved; a read the rewrite added may point forward. Spliced:
            # the new nodes sit where the first old one was, which keeps the order only if
            # the old ones were one run.
            if done.in_place:
                resort = resort or not order.precedes(done.new_reads)
            else:
                resort = resort or not (done.in_order and order.contiguous(nodes))
            stats["scopes"] += 1
            stats["nodes_removed"] += done.removed
            stats["nodes_added"] += 0 if done.in_place else len(done.nodes)
            stats["retagged"] += done.retagged
            stats["renamed"] += done.renamed
            for inner in nested.get(tag, ()):  # they continue from this scope's result
                current[inner] = [
                    n
                    for n in done.nodes
                    if (t := metadata.node_tag(n)) is not None and is_ancestor_or_self(inner, t)
                ]
        if resort:
            try:
                TopologicalSortPass()(model)
            except GraphtagError as exc:
                raise ScopedPassError(
                    f"pass '{self.name}' (@{self.pattern}): the rewritten modules do not fit "
                    f"back into the graph: {exc}"
                ) from exc
        return PassResult(model, modified, stats=dict(stats), diagnostics=diagnostics)

    def _run_on(self, extracted: ir.Model, tag: str) -> ir.passes.PassResult:
        try:
            return self.pass_(extracted)
        except GraphtagError as exc:
            raise ScopedPassError(f"pass '{self.name}' on module {tag}: {exc}") from exc
        except Exception as exc:  # a pass that cannot work on part of a model
            raise ScopedPassError(
                f"pass '{self.name}' failed on module {tag} extracted as a standalone model "
                f"({first_line(exc, typed=True)}); a pass that needs the whole model cannot "
                "run scoped"
            ) from exc

    @staticmethod
    def _skip(tag: str, reason: str, stats: Counter[str], diagnostics: list[str]) -> None:
        logger.info("scope %s left alone: %s", tag, reason)
        diagnostics.append(f"scope {tag} left alone: {reason}")
        stats["skipped"] += 1


@contextlib.contextmanager
def _young_collections_only() -> Iterator[Callable[[], None]]:
    """Python's collector limited to young objects while the scopes are rewritten; yields
    the call that collects them.

    Each scope allocates an extraction and its rewrite, garbage (with reference cycles)
    once spliced. Left to itself the collector also runs full collections, each walking
    every object of the model: on a 100k-node graph with 3.4k scopes that was about a
    third of the run. Here automatic collection is off and the caller collects the two
    young generations after each scope, which hold that scope's garbage; automatic
    collection is back on when this ends. Nothing changes when it was off already.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield (lambda: gc.collect(1)) if enabled else (lambda: None)
    finally:
        if enabled:
            gc.enable()


class _GraphOrder:
    """Positions of the main graph's nodes, taken once, for the re-entry walks."""

    def __init__(self, model: ir.Model) -> None:
        self.graph = model.graph
        self._position: dict[ir.Node, int] | None = None
        self._owners: dict[ir.Node, ir.Node] | None = None

    def _enclosing(self, node: ir.Node) -> ir.Node | None:
        if node.graph is self.graph:
            return node
        if self._owners is None:
            self._owners = subgraph_owners(self.graph)
        return self._owners.get(node)

    @property
    def position(self) -> dict[ir.Node, int]:
        if self._position is None:
            self._position = {node: i for i, node in enumerate(self.graph)}
        return self._position

    def reentries(self, boundary: ModuleBoundary, scope: NodeScope) -> dict[str, set[str]]:
        return reentrant_inputs(boundary, scope, self.position, self._enclosing)

    def precedes(self, reads: list[tuple[ir.Node, ir.Value]]) -> bool:
        """Whether each value is a graph input or initializer, or comes from a node
        before its reader (a node added since the graph was indexed: False)."""
        position = self.position
        for reader, value in reads:
            producer = value.producer()
            if producer is None:
                continue
            where, after = position.get(producer), position.get(reader)
            if where is None or after is None or where >= after:
                return False
        return True

    def contiguous(self, nodes: list[ir.Node]) -> bool:
        """Whether ``nodes`` were one unbroken run of the main graph when it was indexed
        (nodes added since, by an outer scope's splice, have no position: False)."""
        where = [self.position.get(node) for node in nodes]
        if not where or None in where:
            return False
        return max(where) - min(where) + 1 == len(where)  # type: ignore[type-var]


def _nested(scopes: list[tuple[str, list[ir.Node]]]) -> dict[str, list[str]]:
    """Scope -> the other scopes inside it (O(scopes x depth))."""
    tags = {tag for tag, _ in scopes}
    inside: dict[str, list[str]] = {}
    for tag, _ in scopes:
        for outer in ancestors_and_self(tag)[:-1]:
            if outer in tags:
                inside.setdefault(outer, []).append(tag)
    return inside


def _overlaps(nested: dict[str, list[str]]) -> list[str]:
    """One note per scope lying inside another matched scope."""
    notes = []
    for outer, inners in nested.items():
        for inner in inners:
            note = f"scope {inner} lies inside scope {outer}: each runs once, {outer} first"
            logger.info(note)
            notes.append(note)
    return notes
