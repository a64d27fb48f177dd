"""``graphtag validate``: one report on a tagged model, a line per rule (torch-free).

Every rule is linear in the size of the model (nodes + edges + recorded parameters),
except the ONNX checker, which is onnx's own. The rules, in report order:

``onnx-checker``
    ``onnx.checker.check_model(full_check=True)`` accepts the model.
``strings``
    Every string field (names, domains, op types, doc strings, metadata keys and values,
    symbolic dimensions, string attributes; subgraphs and functions included) is valid
    UTF-8, so the model can be saved: onnx.proto is proto2, protobuf reads invalid UTF-8
    in a string field without complaint and the checker accepts it, but serializing the
    model fails (:mod:`graphtag.core.strings`).
``tag-format``
    Some node is tagged, and every ``pkg.graphtag.module`` is a well-formed tag.
``tags-in-hierarchy``
    The model stores a readable hierarchy and every node tag names one of its modules.
``node-coverage``
    Every node (main graph, subgraphs, functions) has a tag.
``parameter-coverage``
    Every parameter recorded in the hierarchy (``parameters`` and
    ``inherited_parameters`` of every module) is accounted for, as one of:

    * an *initializer* (or graph input) of that name;
    * *alias*: an initializer named through another name of its module: a module object
      registered under two names (``a.s`` and ``b.inner``) has one tag and records its
      parameters under its first name, while the exporter may use the other;
    * *folded*: named in a recorded origin of a folded value
      (``pkg.onnxscript.optimizer.folded_from``, or graphtag's origin key when defined:
      graphtag's TorchScript export records it on a constant folded from a parameter,
      :mod:`graphtag.exporter.folded_parameters`);
    * *merged*: the output of an ``Identity`` chain copying an initializer -- the
      TorchScript exporter keeps one initializer for parameters of identical value and
      writes ``Identity(n1.weight) -> n2.weight`` for the others
      (:func:`graphtag.analysis.parameters.initializer_copies`). The copy is the
      merged parameter's own access: it is no evidence of a tie (below);
    * *unused*: its module did not execute during export (``executed`` is false);
    * *tied*: its module (or a descendant) consumes a parameter recorded for another
      module that nodes of two or more modules consume, directly or through a folded copy
      recording it as its origin -- torch.export keeps one name for a tied weight
      (GPT-2's ``lm_head.weight`` / ``transformer.wte.weight``);
    * *removed by the optimizer*: the optimizer rewrote it into other constants without
      recording an origin (batch-norm fused into a convolution): its module (or a
      descendant) consumes a derived floating-point initializer -- one that is neither a
      recorded parameter nor a recorded buffer and holds more than one element; a fused
      node consumes for the modules of its ``fused`` contexts, and a node reading one
      for the modules below its own that read its output (TorchScript folds a batch norm
      into the convolution feeding it and records no context) -- or has no node left at
      all; or the torch-optimizer pass recorded that the optimizer dropped it
      (``pkg.graphtag.optimizer_removed``: a zero bias whose ``Add`` it removed). These
      are expected and counted in the detail.

    Two cases fail the rule: a parameter *stored under another name* (an initializer's
    name ends with ``.<parameter>``, e.g. a wrapper's prefix leaked into the names), and a
    *missing* one: its module still has nodes, yet nothing they read can carry its value.
    SKIP when the model has no hierarchy.
``orphan-nodes``
    Every node contributes to a graph output (of its graph, subgraph or function),
    except the named nodes listed in ``pkg.graphtag.exporter_dead_nodes``: dead nodes
    torch's exporter or optimizer left, which graphtag keeps (same topology as torch);
    they are listed in the PASS detail.
``cycles``
    The graph is acyclic (Kahn's algorithm per graph; a node holding subgraphs depends
    on everything its subgraphs read from the enclosing graph).
``consumers``
    Every ``pkg.graphtag.consumers`` entry is readable and equals the set of tags of
    the nodes consuming the value: the key is a record the multi-consumer pass writes,
    the graph is the truth. SKIP when no value has the key.

The rules share one analysis scope (:mod:`graphtag.analysis.manager`): the hierarchy and
the parameter usage (:mod:`graphtag.analysis.parameters`) are computed once.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Set
from pathlib import Path

import onnx
import onnx_ir as ir

from graphtag.analysis.kahn import unorderable_nodes
from graphtag.analysis.liveness import dead_nodes
from graphtag.analysis.manager import analysis_scope, hierarchy
from graphtag.analysis.parameters import (
    initializer_copies,
    parameter_usage,
    recorded_origins,
    recorded_parameters,
)
from graphtag.analysis.summary import node_label
from graphtag.checks.invariants import TagCheck, check_tags, listing, run_onnx_checker
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError, first_line
from graphtag.core.graphs import (
    iter_all_nodes,
    iter_graphs,
    iter_initializers,
    iter_values,
)
from graphtag.core.hierarchy import Hierarchy, is_ancestor_or_self, tag_parent
from graphtag.core.strings import invalid_strings

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclasses.dataclass
class RuleResult:
    rule: str
    status: str  # PASS, FAIL or SKIP
    detail: str  # one line
    items: list[str] = dataclasses.field(default_factory=list)  # every offending item

    def to_json_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ValidationReport:
    results: list[RuleResult]

    @property
    def passed(self) -> bool:
        return all(r.status != FAIL for r in self.results)

    def counts(self) -> dict[str, int]:
        counts = Counter(r.status for r in self.results)
        return {s: counts.get(s, 0) for s in (PASS, FAIL, SKIP)}

    def to_json_dict(self) -> dict:
        return {
            "passed": self.passed,
            "counts": self.counts(),
            "rules": [r.to_json_dict() for r in self.results],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_json_dict(), indent=indent, sort_keys=True)


@dataclasses.dataclass
class _Context:
    model: ir.Model
    hierarchy: Hierarchy | None
    hierarchy_error: str | None
    path: Path | None
    tags: TagCheck


def validate(model: ir.Model, *, path: str | os.PathLike | None = None) -> ValidationReport:
    """Run every rule on ``model``; a rule that raises is reported as FAIL, not re-raised.

    ``path``, the file ``model`` was loaded from, lets the ONNX checker read the file
    itself (external data resolved beside it) instead of a re-serialized copy.
    """
    with analysis_scope(model):
        tree, error = None, None
        try:
            tree = hierarchy(model)
        except GraphtagError as exc:  # says what is unreadable and why
            error = str(exc)
        except Exception as exc:
            error = f"unreadable {metadata.HIERARCHY} ({type(exc).__name__}: {exc})"
        where = Path(path) if path is not None else None
        context = _Context(model, tree, error, where, check_tags(model, tree))
        results = []
        for name, rule in RULES.items():
            try:
                status, detail, items = rule(context)
            except Exception as exc:
                status, detail, items = FAIL, f"rule crashed: {type(exc).__name__}: {exc}", []
            results.append(RuleResult(name, status, detail, items))
    return ValidationReport(results)


def _labelled_nodes(model: ir.Model) -> Iterator[tuple[str, ir.Node]]:
    for index, node in enumerate(iter_all_nodes(model)):
        yield node_label(node, index), node


# -- rules: each returns (status, detail, items) --------------------------------------------

Outcome = tuple[str, str, list[str]]


def _checker(ctx: _Context) -> Outcome:
    if ctx.path is not None:
        try:
            onnx.checker.check_model(str(ctx.path), full_check=True)
            problem = None
        except Exception as exc:
            problem = f"onnx.checker: {first_line(exc)}"
    else:
        problem = run_onnx_checker(ctx.model)
    return (FAIL, problem, [problem]) if problem else (PASS, "full_check passed", [])


def _strings(ctx: _Context) -> Outcome:
    bad = invalid_strings(ctx.model)
    if bad:
        return FAIL, listing(len(bad), "strings are not valid UTF-8", bad), bad
    return PASS, "every string is valid UTF-8", []


def _tag_format(ctx: _Context) -> Outcome:
    tagged, bad = ctx.tags.tagged, ctx.tags.malformed
    if not tagged:
        return FAIL, f"no node has {metadata.MODULE} (not tagged by graphtag?)", []
    if bad:
        return FAIL, listing(len(bad), "malformed tags", bad), bad
    return PASS, f"{tagged} tags well-formed", []


def _tags_in_hierarchy(ctx: _Context) -> Outcome:
    if ctx.hierarchy_error:
        return FAIL, ctx.hierarchy_error, []
    if ctx.hierarchy is None:
        return FAIL, f"no {metadata.HIERARCHY} metadata (not exported by graphtag?)", []
    if ctx.tags.unknown:  # malformed tags are tag-format's
        items = ctx.tags.unknown_items()
        return FAIL, listing(len(items), "tags not in the hierarchy", items), items
    return PASS, f"all tags among the {len(ctx.hierarchy)} modules of the hierarchy", []


def _node_coverage(ctx: _Context) -> Outcome:
    total, missing = 0, []
    for label, node in _labelled_nodes(ctx.model):
        total += 1
        if metadata.node_tag(node) is None:
            missing.append(label)
    if missing:
        return FAIL, listing(len(missing), f"of {total} nodes untagged", missing), missing
    return PASS, f"{total}/{total} nodes tagged", []


def _parameter_coverage(ctx: _Context) -> Outcome:
    if ctx.hierarchy is None:
        return SKIP, "no hierarchy to take the parameters from", []
    kinds = parameter_kinds(ctx.model, ctx.hierarchy)
    if not kinds:
        return PASS, "no parameters recorded", []
    counts = Counter(kinds.values())
    summary = f"{len(kinds)} parameters: " + ", ".join(
        f"{counts[k]} {label}" for k, label in _KIND_LABELS if counts[k]
    )
    bad = [n for n, kind in kinds.items() if kind == "missing"]
    renamed = _by_dotted_suffix(_present(ctx.model))
    bad += [f"{n} (stored as {renamed[n]})" for n, kind in kinds.items() if kind == "renamed"]
    if bad:
        return FAIL, summary + "; " + listing(len(bad), "not found", bad), bad
    return PASS, summary, [name for name, kind in kinds.items() if kind == "removed"]


def _present(model: ir.Model) -> set[str]:
    """The names a parameter may be held under: initializers and graph inputs (with and
    without a wrapper's prefix)."""
    return _with_unprefixed(
        {v.name for v in iter_initializers(model)}
        | {v.name for g in model.graphs() for v in g.inputs},
        metadata.parameter_prefix(model),
    )


def parameter_kinds(model: ir.Model, hierarchy: Hierarchy) -> dict[str, str]:
    """Every parameter the hierarchy records -> how ``model`` holds it (the kinds of the
    parameter-coverage rule: "initializer", "alias", "folded", "merged", "tied", "unused",
    "removed", "outside", "renamed", "missing")."""
    owners = recorded_parameters(hierarchy)
    if not owners:
        return {}
    prefix = metadata.parameter_prefix(model)
    present = _present(model)
    copies = {v.name: v for v in initializer_copies(model) if v.name}
    merged = _with_unprefixed(set(copies), prefix)
    folded = recorded_origins(model)
    renamed = _by_dotted_suffix(present)
    extracted = model.metadata_props.get(metadata.EXTRACTED_MODULE)
    aliases = hierarchy.alias_roots()
    kinds: dict[str, str] = {}
    pending: dict[str, list[str]] = {}  # owner tag -> parameters to explain structurally
    for name, owner in owners.items():
        if extracted and not is_ancestor_or_self(extracted, owner):
            kinds[name] = "outside"  # an extracted module keeps the whole hierarchy
        elif name in present:
            kinds[name] = "initializer"
        elif any(other in present for other in _alias_names(hierarchy, aliases, name, owner)):
            kinds[name] = "alias"
        elif name in folded:
            kinds[name] = "folded"
        elif name in merged:
            kinds[name] = "merged"
        elif name in renamed:
            kinds[name] = "renamed"
        elif hierarchy.modules[owner].executed is False:
            kinds[name] = "unused"
        else:
            pending.setdefault(owner, []).append(name)
    accesses = {v.producer() for n, v in copies.items() if metadata.unprefixed(n, prefix) in owners}
    evidence = _owner_evidence(model, hierarchy, owners, set(pending), accesses)
    dropped = _with_unprefixed(_optimizer_removed(model), prefix)
    for owner, names in pending.items():
        for name in names:  # the optimizer pass saw it go: removed, not lost
            missing = evidence[owner] == "missing"
            kinds[name] = "removed" if missing and name in dropped else evidence[owner]
    return {name: kinds[name] for name in owners}


def _alias_names(
    hierarchy: Hierarchy, aliases: dict[str, list[str]], name: str, owner: str
) -> list[str]:
    """``name``, a parameter of module ``owner``, through the module's other names (the
    exporter may name the tensor after the path it met first)."""
    base = hierarchy.modules[owner].name
    if not base or not name.startswith(base + "."):
        return []
    return [alias + name[len(base) :] for alias in aliases.get(owner, ())]


def _optimizer_removed(model: ir.Model) -> set[str]:
    text = model.metadata_props.get(metadata.OPTIMIZER_REMOVED)
    return set(metadata.parse_name_list(text) or ()) if text else set()


def _with_unprefixed(names: set[str], prefix: str) -> set[str]:
    """``names`` and, for those starting with a wrapper's ``prefix``, the rest."""
    return names | {metadata.unprefixed(n, prefix) for n in names}


def _by_dotted_suffix(names: set[str]) -> dict[str, str]:
    """Every proper dotted suffix of the names ("model.a.w" -> "a.w", "w") -> the name."""
    suffixes: dict[str, str] = {}
    for name in sorted(names):
        start = name.find(".")
        while start != -1:
            suffixes.setdefault(name[start + 1 :], name)
            start = name.find(".", start + 1)
    return suffixes


_KIND_LABELS = (
    ("initializer", "initializers"),
    ("alias", "under another name of their module"),
    ("folded", "folded (recorded origin)"),
    ("merged", "merged into an identical parameter"),
    ("tied", "tied to a shared parameter"),
    ("unused", "of modules that did not run"),
    ("removed", "removed by the optimizer"),
    ("outside", "of modules outside the extracted one"),
    ("renamed", "stored under another name"),
    ("missing", "missing"),
)


def _owner_evidence(
    model: ir.Model,
    hierarchy: Hierarchy,
    owners: dict[str, str],
    wanted: set[str],
    accesses: set[ir.Node],
) -> dict[str, str]:
    """For each wanted module tag: "tied", "removed" or "missing" (see parameter-coverage).

    ``accesses``: the copies of initializers that are merged parameters; reading one is
    no evidence of a tie."""
    if not wanted:
        return {}
    buffers = {b for info in hierarchy for b in [*info.buffers, *info.inherited_buffers]}
    result: dict[str, str] = {}
    has_nodes: set[str] = set()

    def credit(tag: str | None, kind: str | None, owner: str | None = None) -> None:
        # Evidence for every wanted module containing ``tag`` (except those containing the
        # owner of a tied parameter: that parameter is their own); "tied" beats "removed".
        while tag is not None:
            if tag in wanted and not (owner and is_ancestor_or_self(tag, owner)):
                if kind is None:
                    has_nodes.add(tag)
                elif result.get(tag) != "tied":
                    result[tag] = kind
            tag = tag_parent(tag)

    readers = _Readers(model)
    for tag in readers.node_tags(iter_all_nodes(model)):
        credit(tag, None)
    values = {v.name: v for v in iter_initializers(model)}
    extracted = model.metadata_props.get(metadata.EXTRACTED_MODULE)
    for name, use in parameter_usage(model).items():
        if name not in owners:
            continue
        owner = owners[name]
        tags: set[str] = set()
        for held in use.initializers:
            if held in values:
                tags |= readers.tags(values[held], skip=accesses)
        # Evidence of a tie (torch.export keeps one name for a tied weight): two or more
        # modules read it, or it belongs outside the module extracted here and a module
        # inside reads it (the other side of the tie stayed behind).
        if len(tags) >= 2 or (extracted and not is_ancestor_or_self(extracted, owner)):
            for tag in tags:
                credit(tag, "tied", owner)
    for value in iter_initializers(model):
        if value.name not in owners and value.name not in buffers and _is_derived_weight(value):
            # A fused node acts for the modules it fused (its ``fused`` contexts).
            reading = readers.tags(value) | _fused_modules(value)
            for tag in reading | _fed_submodules(value, reading):
                credit(tag, "removed")
    for tag in wanted:
        if tag not in has_nodes:
            result.setdefault(tag, "removed")  # its computation was folded or fused away
    return {tag: result.get(tag, "missing") for tag in wanted}


class _Readers:
    """Tags of the nodes reading a value, seen through calls of local functions, as if
    the calls were inlined: a value passed to a function (an outlined module) is read by
    the body's nodes that read that input, each tag moved from the template instance
    the body was copied from (``pkg.graphtag.template``) to the calling instance.
    Memoised per function input: linear in the size of the inlined model's tag sets."""

    def __init__(self, model: ir.Model) -> None:
        self._functions = model.functions
        self._inputs: dict[tuple[ir.OperatorIdentifier, int], set[str]] = {}
        self._bodies: dict[ir.OperatorIdentifier, set[str]] = {}

    def _function(self, node: ir.Node) -> ir.Function | None:
        return self._functions.get((node.domain, node.op_type, node.overload))

    @staticmethod
    def _moved(tags: set[str], function: ir.Function, call: ir.Node) -> set[str]:
        template = function.metadata_props.get(metadata.FUNCTION_TEMPLATE)
        instance = metadata.node_tag(call)
        if not template or not instance or template == instance:
            return tags
        return {
            instance + tag[len(template) :] if is_ancestor_or_self(template, tag) else tag
            for tag in tags
        }

    def tags(self, value: ir.Value, skip: Set[ir.Node] = frozenset()) -> set[str]:
        found: set[str] = set()
        for use in value.uses():
            node = use.node
            if node in skip:
                continue
            function = self._function(node)
            if function is None or use.idx >= len(function.inputs):
                if (tag := metadata.node_tag(node)) is not None:
                    found.add(tag)
                continue
            slot = (function.identifier(), use.idx)
            if slot not in self._inputs:
                self._inputs[slot] = set()  # a recursive call reads nothing more
                self._inputs[slot] = self.tags(function.inputs[use.idx])
            found |= self._moved(self._inputs[slot], function, node)
        return found

    def node_tags(self, nodes: Iterable[ir.Node]) -> set[str]:
        """Tags of ``nodes`` and, for calls, of the called bodies' nodes (moved)."""
        found: set[str] = set()
        for node in nodes:
            if (tag := metadata.node_tag(node)) is not None:
                found.add(tag)
            function = self._function(node)
            if function is not None:
                key = function.identifier()
                if key not in self._bodies:
                    self._bodies[key] = set()  # recursion guard
                    self._bodies[key] = self.node_tags(
                        ir.traversal.RecursiveGraphIterator(function)
                    )
                found |= self._moved(self._bodies[key], function, node)
        return found


def _fed_submodules(value: ir.Value, reading: set[str]) -> set[str]:
    """Modules below a reader of ``value`` that read what that node computes.

    TorchScript's constant folding merges a module into the node before it without
    recording contexts: a batch norm folded into the convolution that feeds it, whose
    module keeps its other nodes (an activation). The convolution is tagged with the
    parent of both, the batch norm's module only reads its output."""
    fed: set[str] = set()
    for use in value.uses():
        for output in use.node.outputs:
            for consumer in output.uses():
                tag = metadata.node_tag(consumer.node)
                below = tag is not None and tag not in reading
                if below and any(is_ancestor_or_self(outer, tag) for outer in reading):
                    fed.add(tag)
    return fed


def _fused_modules(value: ir.Value) -> set[str]:
    return {
        entry["module"]
        for use in value.uses()
        for entry in metadata.contexts(use.node)
        if entry["role"] == metadata.FUSED_ROLE
    }


def _is_derived_weight(value: ir.Value) -> bool:
    tensor = value.const_value
    dtype = value.dtype if value.dtype is not None else (tensor.dtype if tensor else None)
    shape = value.shape if value.shape is not None else (tensor.shape if tensor else None)
    if dtype is None or not dtype.is_floating_point() or shape is None:
        return False
    size = 1
    for dim in shape:
        if not isinstance(dim, int):
            return True  # symbolic: not a scalar constant
        size *= dim
    return size > 1


def _orphan_nodes(ctx: _Context) -> Outcome:
    dead = dead_nodes(ctx.model)
    if not dead:
        return PASS, "every node reaches an output", []
    labels = {node: label for label, node in _labelled_nodes(ctx.model)}
    known = metadata.exporter_dead_nodes(ctx.model)
    unexplained = [labels[node] for node in dead if node.name not in known]
    if unexplained:
        return FAIL, listing(len(unexplained), "nodes reach no output", unexplained), unexplained
    kept = [labels[node] for node in dead]
    detail = listing(len(kept), "nodes torch's exporter left reaching no output, kept", kept)
    return PASS, f"every other node reaches an output; {detail}", kept


def _cycles(ctx: _Context) -> Outcome:
    model = ctx.model
    stuck: list[str] = []
    labels = {node: label for label, node in _labelled_nodes(model)}
    for container in iter_graphs(model):
        nodes = unorderable_nodes(list(container))
        stuck.extend(labels.get(n, n.op_type) for n in nodes)
    if stuck:
        return FAIL, listing(len(stuck), "nodes on or behind a cycle", stuck), stuck
    return PASS, "acyclic", []


def _consumers(ctx: _Context) -> Outcome:
    checked, wrong = 0, []
    for value in iter_values(ctx.model):
        if metadata.CONSUMERS not in value.metadata_props:
            continue
        checked += 1
        actual = metadata.consumer_tags(value)
        try:
            recorded = metadata.consumers(value)
        except ValueError as exc:
            wrong.append(f"{value.name}: unreadable ({exc})")
            continue
        if recorded != actual:
            extra, lacking = sorted(recorded - actual), sorted(actual - recorded)
            wrong.append(f"{value.name}: recorded but not consuming {extra}, missing {lacking}")
    if not checked:
        return SKIP, f"no value has {metadata.CONSUMERS}", []
    if wrong:
        return FAIL, listing(len(wrong), f"of {checked} entries disagree", wrong), wrong
    return PASS, f"{checked} entries match the graph", []


RULES: dict[str, Callable[[_Context], Outcome]] = {
    "onnx-checker": _checker,
    "strings": _strings,
    "tag-format": _tag_format,
    "tags-in-hierarchy": _tags_in_hierarchy,
    "node-coverage": _node_coverage,
    "parameter-coverage": _parameter_coverage,
    "orphan-nodes": _orphan_nodes,
    "cycles": _cycles,
    "consumers": _consumers,
}
