"""Replace selected modules by calls to ONNX local functions, one function per distinct body."""

from __future__ import annotations

__all__ = ["FunctionOutliningPass", "OutliningResult", "outline"]

import dataclasses
import logging
from typing import Annotated

import onnx_ir as ir

from graphtag.analysis import manager
from graphtag.analysis.boundaries import ModuleBoundary, ancestors_and_self, compute_boundaries
from graphtag.analysis.kahn import collapsed_cycle
from graphtag.analysis.selection import no_match_error
from graphtag.analysis.signature import body_signature
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError, PipelineError
from graphtag.core.graphs import iter_values, node_reads
from graphtag.core.hierarchy import Hierarchy, tag_segments
from graphtag.core.pass_result import PassResult
from graphtag.core.patterns import match_tags
from graphtag.passes import _outline_support as sup
from graphtag.passes.toposort import TopologicalSortPass

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class OutliningResult(PassResult):
    """A pass result plus what was outlined and what was not, and why."""

    outlined: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (tag, function)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (tag, reason)


class _Run:
    """What one run of the pass builds up (the pass itself keeps no state)."""

    def __init__(self, model: ir.Model, hierarchy: Hierarchy | None) -> None:
        self.model = model
        self.hierarchy = hierarchy
        self.bodies: dict[tuple[str, str], tuple[ir.Function, list[ir.Node]]] = {}
        self.names = {f.name for f in model.functions.values() if f.domain == sup.DOMAIN}
        self.outlined: list[tuple[str, str]] = []
        self.skipped: list[tuple[str, str]] = []

    def skip(self, tag: str, reason: str) -> None:
        logger.info("not outlined %s: %s", tag, reason)
        self.skipped.append((tag, reason))


class FunctionOutliningPass(ir.passes.InPlacePass):
    """Outline selected modules into ONNX local functions (one per distinct body).

    Selection (exactly one): ``pattern`` (glob over tags: ``*`` stays within a segment,
    ``**`` crosses segments, a pattern not starting with ``/`` matches a tag's tail, so
    ``*/BertLayer.*`` selects the layers but not their children; ``A|B`` either; a
    pattern that is exactly a tag selects it, ``[``, ``]`` or ``|`` in it included;
    :mod:`graphtag.core.patterns`),
    ``classes`` (comma-separated class names, short or fully qualified), ``depth``
    (modules that many levels below the root, 1 = the root's children) or ``all``
    (every module but the root). A module *contains* the main-graph nodes tagged with
    its tag or a descendant's (:mod:`graphtag.analysis.boundaries`). Selected modules nested in
    each other are outlined innermost first, so a layer's function calls its
    attention's function.

    Reads: ``pkg.graphtag.module`` tags, the hierarchy (class names; without one the
    class is the tag segment before its first dot). Writes:

    * one call node per instance, in domain ``pkg.graphtag``, op type = the class's
      short name (suffixed ``_1``, ``_2`` ... when bodies of one class differ), named
      after the instance tag; its inputs are the values the module reads from outside
      (weights included: initializers stay in the main graph), in first-use order, its
      outputs the values it produces for the rest of the graph (same names and types);
      metadata: ``pkg.graphtag.module`` = instance tag, ``pkg.graphtag.order`` and
      ``pkg.graphtag.outlined`` (how the instance differs from the body, for inlining);
    * one function per (class, structural body) — same ops, attributes, wiring and value
      types; names, metadata and weights may differ. The body is a copy of the first
      instance (its Constant nodes included, names and metadata kept), declares the
      opsets it uses, and carries ``pkg.graphtag.class`` / ``pkg.graphtag.template``;
    * with ``hoist_shared`` (default), a value a module uses itself and also hands to
      another selected module (a mask computed by the first layer and reused by the
      next) is computed, with its producers, in the main graph before the call;
    * ``pkg.graphtag.order`` (original position) on every main-graph node, and the
      ``pkg.graphtag`` opset (version 1) in the model's imports;
    * ``pkg.graphtag.consumers``, where a value carries it, is rewritten from the new
      graph: a value the module read is now used by the call node (its instance tag), a
      value inside a function body by the body's nodes only. The record stays true (what
      ``multi-consumer`` would write now, and what ``validate`` checks); inlining
      rewrites it back.

    Invariants: outputs of the model are unchanged (ORT runs the functions); the main
    graph stays topologically sorted; :class:`FunctionInliningPass` restores the
    original topology exactly. A pattern/class/depth matching no module raises
    :class:`~graphtag.core.errors.GraphtagError`; a module whose collapse would create a
    cycle (a path leaves it and comes back, alone or together with another selected
    module) is left in place, logged, and listed in the result's ``skipped`` as ``(tag,
    reason)`` (and its diagnostics); ``outlined`` lists ``(tag, function key)``; the
    statistics count ``outlined``, ``functions`` and ``skipped``. O((nodes + edges) x
    depth) per nesting level (each level rewrites the graph, so boundaries are computed
    again), plus one extra O(nodes + edges) walk per skipped module.
    """

    preserves = frozenset({manager.HIERARCHY})

    def __init__(
        self,
        *,
        pattern: Annotated[
            str, "glob over tags: * within a segment, ** across; an exact tag is itself"
        ] = "",
        classes: Annotated[str, "comma-separated class names, short or qualified"] = "",
        depth: Annotated[int, "modules that many levels below the root"] = 0,
        all: Annotated[bool, "every module but the root"] = False,
        hoist_shared: Annotated[
            bool, "compute in the main graph the values one module hands to the next"
        ] = True,
    ) -> None:
        # hoist_shared: values a module uses itself and hands to another selected module
        # (computed once by the first instance, reused by the next ones) are computed in
        # the main graph, so that the instances get equal bodies.
        super().__init__()
        kinds = [bool(pattern), bool(classes), depth > 0, all]
        if sum(kinds) != 1:
            raise PipelineError(
                "function-outlining: give exactly one of pattern, classes, depth (>= 1), all"
            )
        self.pattern = pattern
        self.classes = classes
        self.depth = depth
        self.all = all
        self.hoist_shared = hoist_shared

    # -- selection ---------------------------------------------------------------------

    def _select(self, model: ir.Model, hierarchy: Hierarchy | None) -> list[str]:
        known: dict[str, None] = dict.fromkeys(hierarchy.modules if hierarchy else ())
        for node in model.graph:
            tag = metadata.node_tag(node)
            if tag is not None and tag not in known:
                known.update(dict.fromkeys(ancestors_and_self(tag)))
        root = hierarchy.root if hierarchy else (min(known, key=len) if known else None)
        if self.pattern:
            chosen = match_tags(self.pattern, known)
            if not chosen:
                raise no_match_error(list(known), self.pattern, "function-outlining: pattern")
            return chosen
        if self.classes:
            wanted = {c.strip() for c in self.classes.split(",") if c.strip()}
            chosen = [t for t in known if wanted & set(_class_names(t, hierarchy))]
            what = f"classes {self.classes!r}"
        elif self.depth:
            chosen = [t for t in known if len(tag_segments(t)) == self.depth + 1]
            what = f"depth {self.depth}"
        else:
            chosen = [t for t in known if t != root]
            what = "all"
        if not chosen:
            sample = ", ".join(list(known)[:5]) or "none (the model has no tags)"
            raise GraphtagError(f"function-outlining: {what} matches no module (tags: {sample})")
        return chosen

    # -- the pass ----------------------------------------------------------------------

    def call(self, model: ir.Model) -> OutliningResult:
        run = _Run(model, manager.hierarchy(model))
        chosen = self._select(model, run.hierarchy)
        levels: dict[int, list[str]] = {}
        for tag in chosen:
            levels.setdefault(len(tag_segments(tag)), []).append(tag)
        stamped = sup.stamp_order(model.graph)
        modified = False
        for depth in sorted(levels, reverse=True):
            modified = TopologicalSortPass()(model).modified or modified
            modified = self._outline_level(run, levels[depth]) or modified
        if run.outlined:
            model.opset_imports.setdefault(sup.DOMAIN, 1)
            modified = TopologicalSortPass()(model).modified or True
            # A call node now reads what the module's nodes read, and a body's values
            # are used inside the body only: the records say so.
            metadata.refresh_consumers(iter_values(model))
        else:
            for node in stamped:
                metadata.set_order(node, None)
        stats = {"outlined": len(run.outlined), "functions": len(run.bodies)}
        stats["skipped"] = len(run.skipped)
        return OutliningResult(
            model,
            modified,
            stats=stats,
            diagnostics=[f"not outlined {tag}: {reason}" for tag, reason in run.skipped],
            outlined=run.outlined,
            skipped=run.skipped,
        )

    def _outline_level(self, run: _Run, tags: list[str]) -> bool:
        model = run.model
        boundaries = compute_boundaries(model, tags)  # the graph changed since the last level
        candidates: dict[str, ModuleBoundary] = {}
        owner = {n: t for t in tags if t in boundaries for n in boundaries[t].nodes}
        for tag in tags:
            boundary = boundaries.get(tag)
            if boundary is None or not boundary.nodes:
                run.skip(tag, "no nodes in the main graph")
                continue
            if self.hoist_shared:
                sup.hoist_shared(boundary, owner)
            if not boundary.nodes:
                run.skip(tag, "computes only values shared with other modules")
            elif not boundary.outputs:
                run.skip(tag, "produces nothing used outside the module")
            else:
                candidates[tag] = boundary
        nodes = list(model.graph)
        while candidates:
            order = list(candidates)
            group = {n: i for i, tag in enumerate(order) for n in candidates[tag].nodes}
            cycle = collapsed_cycle(nodes, group)
            if cycle is None:
                break
            # Drop the selected module on the cycle that starts last in the graph.
            first = {n: i for i, n in enumerate(nodes)}
            victim = max(cycle, key=lambda g: first[candidates[order[g]].nodes[0]])
            others = sorted({order[g] for g in cycle} - {order[victim]})
            reason = (
                "not contiguous: a path leaves the module and re-enters it"
                if not others
                else f"collapsing it together with {', '.join(others)} would create a cycle"
            )
            run.skip(order[victim], reason)
            del candidates[order[victim]]
        position = {n: i for i, n in enumerate(nodes)}
        for tag in sorted(candidates, key=lambda t: position[candidates[t].nodes[0]]):
            self._outline(run, candidates[tag])
        return bool(candidates)

    def _outline(self, run: _Run, boundary: ModuleBoundary) -> None:
        model, hierarchy = run.model, run.hierarchy
        tag, nodes, outputs = boundary.tag, boundary.nodes, boundary.outputs
        produced = {v for n in nodes for v in n.outputs}
        inputs = list(dict.fromkeys(v for n in nodes for v in node_reads(n) if v not in produced))
        class_name = _class_names(tag, hierarchy)[-1]
        key = (class_name, body_signature(inputs, nodes, outputs))
        if key not in run.bodies:
            module_name = hierarchy.modules[tag].name if hierarchy and tag in hierarchy else ""
            run.bodies[key] = _make_function(run, key, tag, inputs, nodes, outputs, module_name)
        function, body = run.bodies[key]
        keys = [k for k in (metadata.order(n) for n in nodes) if k is not None]
        call = ir.Node(sup.DOMAIN, function.name, inputs, num_outputs=len(outputs), name=tag)
        metadata.set_tag(call, tag)
        metadata.set_order(call, min(keys, default=0))
        metadata.set_outlined_record(call, sup.record_diff(nodes, body))
        for new, old in zip(call.outputs, outputs):
            new.name, new.type, new.doc_string = old.name, old.type, old.doc_string
            new.shape = old.shape.copy() if old.shape is not None else None
            new.metadata_props.update(old.metadata_props)
        graph = model.graph
        graph.insert_before(nodes[0], call)
        ir.convenience.replace_all_uses_with(outputs, call.outputs, replace_graph_outputs=True)
        for node in sup.deep_walk(nodes)[0]:
            for i in range(len(node.inputs)):
                node.replace_input_with(i, None)
        graph.remove(nodes)
        run.outlined.append((tag, f"{sup.DOMAIN}::{function.name}"))


def _make_function(
    run: _Run,
    key: tuple[str, str],
    tag: str,
    inputs: list[ir.Value],
    nodes: list[ir.Node],
    outputs: list[ir.Value],
    module_name: str = "",
) -> tuple[ir.Function, list[ir.Node]]:
    model = run.model
    body = ir.GraphView(inputs, outputs, nodes=nodes).clone()
    for value in body.inputs:  # weights are passed in, never copied into the body
        value.const_value = None
        value.metadata_props.clear()
    _neutral_input_names(body.inputs, module_name)
    base = sup.function_name(key[0])
    name, suffix = base, 0
    while name in run.names:
        suffix += 1
        name = f"{base}_{suffix}"
    run.names.add(name)
    domains = {n.domain for n in sup.deep_walk(body)[0]}
    body.opset_imports.clear()
    for domain in sorted(domains):
        body.opset_imports[domain] = model.opset_imports.get(domain, 1)
    body.name = name
    function = ir.Function(sup.DOMAIN, name, graph=body, attributes=[])
    metadata.set_function_origin(function, key[0], tag)
    function.doc_string = f"Module {key[0]} (body copied from {tag})"
    model.functions[function.identifier()] = function
    return function, list(body)


def _neutral_input_names(inputs: list[ir.Value], module_name: str) -> None:
    """Formal inputs named after the template's parameters lose the template's prefix.

    Every instance calls the function, so ``encoder.layer.0.attention.query.bias`` would
    mislabel the other layers' weights in viewers; ``attention.query.bias`` fits all.
    Inlining maps formal inputs to the call's actual values, so names here are free.
    """
    if not module_name:
        return
    prefix = module_name + "."
    taken = {v.name for v in inputs}
    for value in inputs:
        if value.name and value.name.startswith(prefix):
            short = value.name[len(prefix) :]
            if short not in taken:
                taken.add(short)
                value.name = short


def _class_names(tag: str, hierarchy: Hierarchy | None) -> list[str]:
    """Names a module's class answers to: short then fully qualified."""
    info = hierarchy.modules.get(tag) if hierarchy else None
    if info is not None and info.class_name:
        return [info.class_name.rsplit(".", 1)[-1], info.class_name]
    short = tag_segments(tag)[-1].split(".", 1)[0]
    return [short, short]


def outline(
    model: ir.Model,
    pattern: str = "",
    *,
    classes: str = "",
    depth: int = 0,
    all: bool = False,
) -> OutliningResult:
    """Outline ``model`` in place; the result lists ``outlined`` and ``skipped`` modules.

    For the CLI: ``outline(model, pattern=args.outline)``; print ``result.skipped`` as
    warnings.
    """
    pass_ = FunctionOutliningPass(pattern=pattern, classes=classes, depth=depth, all=all)
    return pass_(model)
