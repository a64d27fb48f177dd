"""Check every extracted module of a tagged export against PyTorch, module by module.

``verify_modules(module, inputs)`` exports ``module`` with graphtag (``auto`` route; by
default ``optimize=False``, so tags are exact), then:

1. PyTorch: one eager run (with the implementation switches the export route set, e.g.
   eager attention) with a forward hook on every kept module (hierarchy ``name``
   -> module) records each call's outputs (tensors found in nested tuples, lists,
   mappings such as ModelOutput, and dataclasses), copied at once so later in-place ops
   cannot change them. Outputs that are one of the call's own inputs passed through, or
   one of the module's own parameters/buffers, are left out (same tensor object, or same
   storage, shape and strides): no node of the module produces them. The same run
   records its dataflow (graphtag.exporter.dataflow), which tells for every captured
   tensor whether the model's result depends on it (*live*), whether a live
   operation after the call reads it (*used outside* the call) and whether it depends
   on the model's inputs at all (else it is a *constant* of the traced program).
   Higher-order operators (``torch.cond``, ``while_loop``, ...) are recorded inside;
   one the recorder cannot see into makes every captured tensor live, used outside
   and input-dependent (a warning says so).
2. ONNX: one onnxruntime run of the full model with every intermediate value exposed as
   an output (on a serialized copy) gives every value of the graph.
3. Every module is extracted (graphtag.surgery.extraction), run alone in onnxruntime on
   the boundary values of step 2 with every value it computes exposed as an output, and
   each captured tensor must be reproduced (same shape, every element within
   ``atol * max(1, max|torch tensor|) + rtol * |torch value|``, see compare_arrays) by:

   * one of the extracted model's outputs when it is used outside the call;
   * any value the extracted model computes when only the call itself uses it (an
     encoder returning every layer's hidden state: layer 0's output is read by layer 1
     inside the encoder, so it is internal to the encoder's subgraph) or nothing does.

   A captured tensor that the model's result does not depend on (attention
   probabilities a layer returns and its caller drops) and that no value matches is
   UNUSED: the exporter removed dead code. Liveness comes from the PyTorch run, not
   from the ONNX graph under test, so a wrong export cannot make a live tensor UNUSED.

   A live captured tensor that does not depend on the model's inputs (a module
   returning ``torch.zeros(...)`` that the next module reuses, T5's zero position
   bias) and that the module's subgraph does not reproduce where required is a
   CONSTANT when a stored constant of the ONNX graph (an initializer, or the output of
   a node reading nothing, as Constant) matches it: the exporter folded it into its
   consumers (TorchScript copies such a constant into every module that reads it, so
   none is an output of the module that returned it). Both conditions are needed: an
   input-dependent tensor, or a constant no ONNX constant reproduces (a wrong folded
   value), is still a MISMATCH. Values *computed* from constants do not count: nodes
   compute them, and the module those nodes are tagged with must show them (a position
   embedding's lookup at fixed positions moved to another module by wrong tags is a
   MISMATCH, not a folded constant).

Modules called more than once: every call is captured and checked. ONNX gives all calls
one tag, so the extracted model holds them all and, when one call feeds the next, the
earlier call's result is internal to it: an earlier call's tensors may match any value
the extracted model computes.

Statuses: OK; UNUSED (every live tensor matched, some dead ones have no node); CONSTANT
(every live tensor matched, some input-independent ones only by a constant of the graph
outside the module's outputs); REORDERED (every live tensor matched, some only once
sorted along one axis: an operation with unspecified output order, as top-k without
sorting, ordered them differently); TRANSPOSED (every live tensor matched, some only
with their axes permuted: the exporter merged the module's closing transpose with its
consumer's opening one, so the tensor exists only in the consumer's layout, as in
channels-last blocks under TorchScript); MISMATCH (a live tensor has no match); NOT-EXECUTED (no
call in the eager run); NO-NODES (executed, but no node of the main graph carries its
tag or a descendant's, e.g. folded away by the optimizer, or computed inside a
control-flow body, which is not extracted alone); ERROR (extraction or onnxruntime
failed; ``reason``). A module with nothing to compare (all outputs passed through) is
OK with 0/0.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import onnx_ir as ir
import torch

from graphtag.core import metadata
from graphtag.core.errors import GraphtagError, first_line
from graphtag.core.graphs import subgraphs_of
from graphtag.core.hierarchy import Hierarchy, is_ancestor_or_self, name_within, tag_parent
from graphtag.exporter.dataflow import DataflowRecorder
from graphtag.exporter.eager import require_hooks, state_kept
from graphtag.exporter.example_inputs import ExampleInputs
from graphtag.exporter.switches import implementation_switches

logger = logging.getLogger(__name__)

# float32 onnxruntime against float32 PyTorch: kernels sum in different orders, so the
# error grows with the magnitude of the values and with depth (compare_arrays). Some
# kernels differ by more: ORT's cubic Resize is up to 2e-5 of the tensor's scale off
# torch's bicubic interpolate, and every module downstream reads that through its
# inputs (a patch embedding of the resized image: 2e-5 of scale), hence atol 1e-4.
RTOL = 1e-3
ATOL = 1e-4
STATUSES = (  # in the order reports list them: not failing first
    "OK",
    "UNUSED",
    "CONSTANT",
    "REORDERED",
    "TRANSPOSED",
    "RANDOM",
    "MISMATCH",
    "ERROR",
    "NO-NODES",
    "NOT-EXECUTED",
)


@dataclasses.dataclass
class ModuleCheck:
    """The verdict for one kept module."""

    tag: str
    name: str  # dotted module name in PyTorch
    class_name: str
    status: str  # one of STATUSES
    matched: int = 0  # captured tensors reproduced by the extracted module
    total: int = 0  # captured tensors compared (over all calls)
    unused: int = 0  # dead captured tensors no value reproduces (no node computes them)
    internal: int = 0  # of the matched, reproduced by a value internal to the module
    constant: int = 0  # of the matched, input-independent and reproduced by a constant
    reordered: int = 0  # of the matched, equal only up to the order along one axis
    transposed: int = 0  # of the matched, equal only with their axes permuted
    max_abs_diff: float | None = None  # worst best-candidate |onnx - torch|; None: none
    max_rel_diff: float | None = None  # same, relative to max |torch| of that tensor
    calls: int = 0
    # ERROR: the failure; MISMATCH: the first unmatched tensors; UNUSED: the first unused
    # ones; CONSTANT: the first folded constants and the values matching them;
    # REORDERED: the first tensors equal only up to order and their values; TRANSPOSED:
    # the first tensors equal only with their axes permuted, the values and axes; RANDOM: the
    # first outputs PyTorch gave differently on two runs with the same inputs; NO-NODES:
    # where its computation went ("fused into <tag>", "folded into constant <name>"),
    # when known.
    reason: str = ""
    unmatched: list[str] = dataclasses.field(default_factory=list)
    unused_outputs: list[str] = dataclasses.field(default_factory=list)
    constant_outputs: list[str] = dataclasses.field(default_factory=list)
    reordered_outputs: list[str] = dataclasses.field(default_factory=list)
    transposed_outputs: list[str] = dataclasses.field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status in ("MISMATCH", "ERROR")

    def status_text(self) -> str:
        shown = self.status in _EXPLAINED and bool(self.reason)
        return f"{self.status}: {self.reason}" if shown else self.status


_EXPLAINED = ("ERROR", "NO-NODES", "UNUSED", "CONSTANT", "REORDERED", "TRANSPOSED", "RANDOM")


@dataclasses.dataclass
class _Captured:
    label: str  # where the tensor sits in the output, e.g. "[0]" or ".last_hidden_state"
    array: np.ndarray
    live: bool = True  # the model's result depends on it
    outside: bool = True  # a live operation after the call reads it (or it is a result)
    constant: bool = False  # it does not depend on the model's inputs

    def describe(self) -> str:
        return f"output{self.label} {tuple(self.array.shape)}"


def verify_modules(
    module: torch.nn.Module,
    inputs: ExampleInputs | tuple | Mapping,
    *,
    optimize: bool = False,
    rtol: float = RTOL,
    atol: float = ATOL,
    filter_config: Any = None,
    progress: Callable[[str], None] | None = None,
    transform: Callable[[ir.Model], None] | None = None,
    exporter: Any = "auto",
    **export_options: Any,
) -> list[ModuleCheck]:
    """Export ``module``, extract every kept module and compare it with PyTorch.

    ``inputs``: ExampleInputs, a tuple of positional arguments or a mapping of keyword
    arguments. ``exporter`` and ``export_options`` go to graphtag.export (e.g.
    ``opset_version``); PyTorch then runs with the implementation switches the export
    used (graphtag.exporter.switches), so both sides compute the same thing.
    ``rtol``/``atol``: a tensor matches when every element is within
    ``atol * max(1, max|torch tensor|) + rtol * |torch value|`` (compare_arrays).
    ``transform`` edits the exported model in place before any ONNX run (for tests:
    tampering with an initializer must turn its modules into MISMATCH). Returns one
    check per kept module, in hierarchy order.
    """
    from graphtag.exporter.tagged_export import export

    _check_tolerance(rtol, atol)
    require_hooks(module, "verify")
    inputs = _as_example_inputs(inputs)
    say = progress or (lambda _text: None)
    say(f"exporting ({exporter}, optimize={optimize})")
    export_options.setdefault("verbose", False)
    export_options.setdefault("check_fallback", False)  # every module is checked below
    result = export(
        module,
        inputs.args,
        inputs.kwargs,
        exporter=exporter,
        optimize=optimize,
        filter_config=filter_config,
        **export_options,
    )
    say(f"exported by the {result.route} route")
    return check_export(
        result, module, inputs, rtol=rtol, atol=atol, progress=say, transform=transform
    )


def check_export(
    result: Any,
    module: torch.nn.Module,
    inputs: ExampleInputs | tuple | Mapping,
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
    progress: Callable[[str], None] | None = None,
    transform: Callable[[ir.Model], None] | None = None,
    captured: Mapping[str, list[list[_Captured]]] | None = None,
) -> list[ModuleCheck]:
    """Steps 1-3 on an existing export (an ExportResult of ``module``, any route); PyTorch
    runs with the implementation switches the export used.

    ``captured`` (from :func:`capture_calls`) skips the PyTorch run, e.g. to check
    several tampered copies of one export against one eager run. When a module
    mismatches, PyTorch runs once more: a module whose outputs differ between the two
    runs is RANDOM (not a failure), the others stay MISMATCH.
    """
    _check_tolerance(rtol, atol)
    require_hooks(module, "verify")
    inputs = _as_example_inputs(inputs)
    say = progress or (lambda _text: None)
    model, hierarchy = result.model, result.hierarchy
    if transform is not None:
        transform(model)
    if captured is None:
        say(f"running PyTorch with hooks on {len(hierarchy)} modules")
        with implementation_switches(module, result.switches):
            captured = capture_calls(module, inputs, {info.tag: info.name for info in hierarchy})
    say("running the full model in onnxruntime")
    feeds = graph_feeds(model, module, inputs)
    values = {**run_all_values(model, feeds), **feeds}
    checks = compare_modules(model, hierarchy, captured, values, rtol=rtol, atol=atol, say=say)
    mismatching = {check.tag: check.name for check in checks if check.status == "MISMATCH"}
    if mismatching:
        say("running PyTorch again: do the mismatching modules repeat their outputs?")
        with implementation_switches(module, result.switches):
            again = capture_calls(module, inputs, mismatching)  # hooks on those modules only
        _mark_random(checks, captured, again, rtol, atol)
    return checks


def _mark_random(
    checks: list[ModuleCheck],
    first: Mapping[str, list[list[_Captured]]],
    second: Mapping[str, list[list[_Captured]]],
    rtol: float,
    atol: float,
) -> None:
    """MISMATCH -> RANDOM for the modules whose outputs differ between two PyTorch runs
    on the same inputs and state (random sampling inside, e.g. a random patch mask): no
    ONNX run can reproduce them, so the comparison says nothing about the export."""
    for check in checks:
        if check.status != "MISMATCH":
            continue
        calls, repeated = first.get(check.tag, []), second.get(check.tag, [])
        differing = [
            item.describe()
            for call, call_again in zip(calls, repeated)
            for item, again in zip(call, call_again)
            if not _repeated(item.array, again.array, rtol, atol)
        ]
        if len(calls) != len(repeated) or differing:
            check.status = "RANDOM"
            check.reason = (
                "PyTorch returned "
                + (", ".join(differing[:3]) if differing else "a different number of calls")
                + " differently on two runs with the same inputs: nothing to compare"
            )


def _repeated(first: np.ndarray, again: np.ndarray, rtol: float, atol: float) -> bool:
    """Whether a second PyTorch run on the same inputs gave ``first`` again."""
    return first.shape == again.shape and compare_arrays(again, first, rtol, atol).within


def _check_tolerance(rtol: float, atol: float) -> None:
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(value, (int, float)) and value >= 0 and np.isfinite(value)):
            raise GraphtagError(f"{name} must be a finite number >= 0, got {value}")


def compare_modules(
    model: ir.Model,
    hierarchy: Iterable,
    captured: Mapping[str, list[list[_Captured]]],
    values: Mapping[str, np.ndarray],
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
    say: Callable[[str], None] = lambda _text: None,
) -> list[ModuleCheck]:
    """One ModuleCheck per module of ``hierarchy`` (torch-free: numpy and onnxruntime)."""
    from graphtag.analysis.boundaries import module_boundaries
    from graphtag.surgery.extraction import Extractor

    foreign = _hosts_foreign_calls(hierarchy)
    hierarchy = list(hierarchy)
    boundaries = module_boundaries(model)
    extractor = Extractor(model, boundaries)
    absorbed = {**_inside_bodies(model), **_fused_into(model)}
    ambiguous = _ambiguous_scopes(model)
    constants = _ConstantPool(model, values)
    checks = []
    for index, info in enumerate(hierarchy, 1):
        say(f"[{index}/{len(hierarchy)}] {info.tag}")
        calls = captured.get(info.tag, [])
        check = ModuleCheck(info.tag, info.name, info.class_name, "OK", calls=len(calls))
        checks.append(check)
        if not calls:
            check.status = "NOT-EXECUTED"
            continue
        check.total = sum(len(call) for call in calls)
        boundary = boundaries.get(info.tag)
        if boundary is None or not boundary.nodes:
            _without_nodes(check, calls, model, info, absorbed, values, rtol, atol)
            if check.reason == _ELSEWHERE and info.tag in ambiguous:
                check.reason = ambiguous[info.tag]  # why other modules' nodes compute it
            continue
        try:
            sub = extractor.extract(info.tag)
            outputs = [v.name for v in sub.graph.outputs]
            feeds = {v.name: values[v.name] for v in sub.graph.inputs if v.name in values}
            missing = [v.name for v in sub.graph.inputs if v.name not in values]
            if missing:
                raise GraphtagError(f"no value computed for input(s) {', '.join(missing[:3])}")
            computed = run_all_values(sub, feeds)
        except Exception as exc:
            check.status = "ERROR"
            check.reason = first_line(exc, 200, typed=True)
            continue
        final = {name: computed[name] for name in outputs}
        _match_calls(check, calls, final, computed, rtol, atol, constants, info.tag in foreign)
    return checks


def _hosts_foreign_calls(hierarchy: Any) -> set[str]:
    """Tags of the modules whose subtree holds nodes of calls made from outside them.

    A module object registered under two names (``a.s`` and ``b.inner``) has one tag, its
    first name's (graphtag.exporter.module_tree): the call made through ``b.inner`` is
    tagged inside ``a``. So ``a``'s subgraph computes ``b``'s call too, and an output of
    ``a`` that ``b.inner`` reads is read *inside* that subgraph: it need not be one of its
    outputs. For each alias name (one not below the dotted name of the module it maps
    to), every module containing that tag but not that name hosts a foreign call."""
    if not isinstance(hierarchy, Hierarchy):
        return set()  # a plain list of modules knows no names
    modules = hierarchy.modules
    hosts: set[str] = set()
    for name, tag in hierarchy.name_to_tag.items():
        if not hierarchy.is_alias(name):
            continue  # a canonical name (or one of a module folded into its kept parent)
        current: str | None = tag
        while current is not None and current in modules:
            if not name_within(name, modules[current].name):
                hosts.add(current)
            current = tag_parent(current)
    return hosts


_ELSEWHERE = "its outputs are computed by nodes of other modules"


def _without_nodes(check, calls, model, info, absorbed, values, rtol, atol) -> None:
    """Verdict for an executed module that no node is tagged with.

    OK when it only passes its inputs through (nothing to compute, 0/0); UNUSED when
    nothing the model returns depends on its outputs; NO-NODES when the
    optimizer fused or folded it (the reason says where) or when other modules' nodes
    compute its live outputs; MISMATCH when some live output is computed nowhere (its
    nodes were lost, not moved).
    """
    items = [item for call in calls for item in call]
    live = [item for item in items if item.live]
    if not items:  # every output passed through (an identity in eval mode): nothing to do
        return
    if not live:  # nothing the model returns depends on it: removed as dead code
        check.status, check.unused = "UNUSED", len(items)
        check.unused_outputs = [item.describe() for item in items]
        check.reason = "no node: nothing uses its outputs"
        return
    check.status = "NO-NODES"
    check.reason = absorbed.get(info.tag) or _folded_into(model, info)
    if check.reason:
        return
    constants = (
        (value.name, value.const_value.numpy())
        for value in model.graph.initializers.values()
        if value.const_value is not None
    )
    pool = [*values.items(), *constants]
    lost = []
    for item in live:
        best, _name = best_match(item.array, pool, rtol, atol)
        if best is None or not best.within:
            lost.append(item.describe())
    if lost:
        check.status, check.unmatched = "MISMATCH", lost
        check.reason = "no node carries its tag and no value matches " + ", ".join(lost[:3])
    else:
        check.reason = _ELSEWHERE


def _fused_into(model: ir.Model) -> dict[str, str]:
    """Module tag -> "fused into <tag>" for modules an optimizer fused into another's node.

    Only ``fused`` contexts count: producer/consumer/shared contexts name neighbours
    whose own nodes still exist.
    """
    found: dict[str, str] = {}
    for node in model.graph:
        tag = metadata.node_tag(node)
        if not tag:
            continue
        for context in metadata.contexts(node):
            module = context["module"]
            if context["role"] == metadata.FUSED_ROLE and module != tag:
                found.setdefault(module, f"fused into {tag}")
    return found


def _inside_bodies(model: ir.Model) -> dict[str, str]:
    """Module tag -> where its nodes run, for modules computed inside a control-flow body.

    A body belongs to the node holding it (graphtag.analysis.boundaries): it is not
    extracted alone, so a module whose nodes all sit in one (a ``torch.cond`` branch
    calling it) has no subgraph of its own to compare.
    """
    found: dict[str, str] = {}
    for node in model.graph:
        bodies = subgraphs_of(node)
        if not bodies:
            continue
        outer = metadata.node_tag(node) or ""
        where = f"computed inside a control-flow body of {node.op_type} node {node.name!r}"
        for body in bodies:
            for inner in ir.traversal.RecursiveGraphIterator(body):
                tag = metadata.node_tag(inner)
                while tag and not is_ancestor_or_self(tag, outer):
                    found.setdefault(tag, f"{where} ({outer or 'untagged'})")
                    tag = tag_parent(tag)
    return found


def _ambiguous_scopes(model: ir.Model) -> dict[str, str]:
    """Module tag -> why its nodes carry an ancestor's tag, for the modules of TorchScript
    scopes that several modules write alike (see graphtag.analysis.attribution)."""
    from graphtag.analysis.attribution import TorchScriptScopeResolver
    from graphtag.core.graphs import iter_all_nodes

    hierarchy = Hierarchy.from_model(model)
    if hierarchy is None or model.metadata_props.get(metadata.EXPORT_ROUTE) != "torchscript":
        return {}
    prefix = model.metadata_props.get(metadata.PARAMETER_PREFIX, "").rstrip(".")
    resolver = TorchScriptScopeResolver(hierarchy, prefix)
    found: dict[str, str] = {}
    for node in iter_all_nodes(model):
        name = node.name or ""
        if not name.startswith("/"):
            continue  # no scope
        tag = resolver.tag(name)
        scope = name[: name.rfind("/")]
        names = resolver.ambiguous.get(scope, ())
        for module in names:
            found.setdefault(
                hierarchy.name_to_tag[module],
                f"TorchScript scope {scope} names {len(names)} modules alike "
                f"({', '.join(names)}): their nodes carry the common module {tag}",
            )
    return found


def _folded_into(model: ir.Model, info) -> str:
    """ "folded into constant <name>" when an initializer holds the module's parameters."""
    own = {*info.parameters, *info.buffers, *info.inherited_parameters, *info.inherited_buffers}
    for value in model.graph.initializers.values():
        origin = value.metadata_props.get(metadata.ORIGIN)
        if own and origin and value.name not in own and own & set(json.loads(origin)):
            return f"folded into constant {value.name}"
    return ""


def _match_calls(
    check: ModuleCheck,
    calls: list[list[_Captured]],
    final: Mapping[str, np.ndarray],
    computed: Mapping[str, np.ndarray],
    rtol: float,
    atol: float,
    constants: _ConstantPool | None = None,
    foreign: bool = False,
) -> None:
    """``foreign``: the module's subgraph also computes calls made from outside it
    (:func:`_hosts_foreign_calls`), so what they read after this call may stay inside."""
    worst_abs: float | None = None
    worst_rel: float | None = None
    for number, call in enumerate(calls, 1):
        where = f"call {number} " if len(calls) > 1 else ""
        last = number == len(calls)
        for item in call:
            # A tensor used after the call must leave the module's subgraph; one only the
            # call itself uses (or nothing uses) may be any value the subgraph computes.
            pool = final if last and item.outside and not foreign else computed
            best, name = best_match(item.array, pool.items(), rtol, atol)
            folded = reordered = False
            axes: tuple[int, ...] | None = None
            if item.live and item.constant and constants is not None and not _within(best):
                # Input-independent: the exporter may have folded it into its consumers.
                found, where_found = best_match(item.array, constants.items(), rtol, atol)
                if _within(found):
                    best, name, folded = found, where_found, True
            if item.live and not _within(best):
                # An operation whose output order is unspecified (top-k without sorting)
                # may order its result differently in PyTorch and onnxruntime.
                found, where_found = best_match_unordered(item.array, pool.items(), rtol, atol)
                if _within(found):
                    best, name, reordered = found, where_found, True
            if item.live and not _within(best):
                # The exporter may have merged the module's closing transpose with its
                # consumer's opening one: the tensor then exists only in another layout.
                found, where_found, axes = best_match_transposed(
                    item.array, pool.items(), rtol, atol
                )
                if _within(found):
                    best, name = found, where_found
                else:
                    axes = None
            if best is not None and (best.within or item.live):
                worst_abs = best.abs if worst_abs is None else max(worst_abs, best.abs)
                worst_rel = best.rel if worst_rel is None else max(worst_rel, best.rel)
            if folded:
                check.matched += 1
                check.constant += 1
                check.constant_outputs.append(f"{where}{item.describe()} = {name}")
            elif axes is not None:
                check.matched += 1
                check.transposed += 1
                check.internal += name not in final
                check.transposed_outputs.append(
                    f"{where}{item.describe()} ~ {name} with axes {axes}"
                )
            elif reordered:
                check.matched += 1
                check.reordered += 1
                check.internal += name not in final
                check.reordered_outputs.append(f"{where}{item.describe()} ~ {name}")
            elif best is not None and best.within:
                check.matched += 1
                check.internal += name not in final
            elif not item.live:
                check.unused += 1
                check.unused_outputs.append(where + item.describe())
            else:
                check.unmatched.append(where + item.describe())
    check.max_abs_diff, check.max_rel_diff = worst_abs, worst_rel
    if check.unmatched:
        check.status = "MISMATCH"
        check.reason = "no match for " + ", ".join(check.unmatched[:3])
    elif check.unused:
        check.status = "UNUSED"
        check.reason = ", ".join(check.unused_outputs[:3]) + " not used by the model"
    if check.constant_outputs and not check.unmatched:  # UNUSED wins, naming both
        check.status = "UNUSED" if check.unused else "CONSTANT"
        folded = (
            "folded constant "
            + ", ".join(check.constant_outputs[:3])
            + " (input-independent: the exporter copied it into its consumers)"
        )
        _add_reason(check, folded)
    # UNUSED and CONSTANT win; REORDERED before TRANSPOSED; every kind is named.
    _matched_only_as(
        check,
        "REORDERED",
        check.reordered_outputs,
        "equal only up to the order of elements along one axis (an operation whose output "
        "order is unspecified, such as top-k without sorting)",
    )
    _matched_only_as(
        check,
        "TRANSPOSED",
        check.transposed_outputs,
        "equal only with the axes permuted (the exporter merged the module's closing "
        "transpose with its consumer's: the tensor exists only in that layout)",
    )


def _matched_only_as(check: ModuleCheck, status: str, outputs: list[str], why: str) -> None:
    """Name the ``outputs`` matched only in a weaker sense; the status when none stronger."""
    if not outputs or check.unmatched:
        return
    if check.status == "OK":
        check.status = status
    _add_reason(check, ", ".join(outputs[:3]) + " " + why)


def _add_reason(check: ModuleCheck, text: str) -> None:
    check.reason = f"{check.reason}; {text}" if check.reason else text


def _closer(found: Difference, best: Difference | None) -> bool:
    """Whether ``found`` is a better match than ``best``: less excess, then less error."""
    return best is None or (found.excess, found.abs) < (best.excess, best.abs)


def _within(found: Difference | None) -> bool:
    return found is not None and found.within


class _ConstantPool:
    """The constants stored in ``model``'s main graph, by name: initializers (not graph
    inputs) and the outputs of nodes reading nothing (Constant; nodes with subgraphs
    excluded). Built on first use."""

    def __init__(self, model: ir.Model, values: Mapping[str, np.ndarray]) -> None:
        self._model, self._values = model, values
        self._items: list[tuple[str, np.ndarray]] | None = None

    def items(self) -> list[tuple[str, np.ndarray]]:
        if self._items is None:
            self._items = list(_constant_values(self._model, self._values))
        return self._items


def _constant_values(
    model: ir.Model, values: Mapping[str, np.ndarray]
) -> Iterator[tuple[str, np.ndarray]]:
    graph = model.graph
    inputs = {value.name for value in graph.inputs}
    for name, value in graph.initializers.items():
        if name not in inputs and value.const_value is not None:
            yield name, value.const_value.numpy()
    for node in graph:
        if any(v is not None for v in node.inputs) or subgraphs_of(node):
            continue
        for value in node.outputs:
            if value.name and value.name in values:
                yield value.name, values[value.name]


# ---------------------------------------------------------------------------- comparison


@dataclasses.dataclass(frozen=True)
class Difference:
    """How far an ONNX value is from the PyTorch one."""

    abs: float  # max |onnx - torch|
    rel: float  # max |onnx - torch| / max |torch|: relative to the tensor's scale
    excess: float  # max of |onnx - torch| - bound (see compare_arrays); <= 0: within

    @property
    def within(self) -> bool:
        return self.excess <= 0.0


def compare_arrays(
    expected: np.ndarray, actual: np.ndarray, rtol: float, atol: float
) -> Difference:
    """Elementwise ``|actual - expected| <= atol * max(1, max|expected|) + rtol * |expected|``.

    numpy.allclose (NaN equals NaN, infinities equal themselves), except that the
    absolute term is in units of the tensor's largest magnitude once that exceeds 1:
    float32 rounding errors scale with the values being summed, so an element near zero
    that comes out of a sum of large terms (a deep CNN's activations reach thousands)
    carries an error proportional to those terms, not to itself. Integers and booleans
    compare exactly. Same-shaped arrays.
    """
    if expected.size == 0:
        return Difference(0.0, 0.0, -np.inf)
    try:
        x, y = expected.astype(np.float64), actual.astype(np.float64)
    except (TypeError, ValueError):
        same = np.array_equal(expected, actual)
        return Difference(*((0.0, 0.0, -1.0) if same else (np.inf, np.inf, np.inf)))
    with np.errstate(invalid="ignore", over="ignore"):
        equal = (x == y) | (np.isnan(x) & np.isnan(y))  # inf == inf, nan == nan
        diff = np.nan_to_num(np.where(equal, 0.0, np.abs(x - y)), nan=np.inf)
        magnitude = np.abs(np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0))
        scale = float(magnitude.max())
        floating = np.issubdtype(expected.dtype, np.floating) or np.issubdtype(
            actual.dtype, np.floating
        )
        bound = atol * max(1.0, scale) + rtol * magnitude if floating else 0.0
        worst = float(diff.max())
        rel = worst / scale if scale > 0 else (0.0 if worst == 0 else np.inf)
        return Difference(worst, rel, float((diff - bound).max()))


def best_match(
    expected: np.ndarray, candidates: Iterable[tuple[str, Any]], rtol: float, atol: float
) -> tuple[Difference | None, str | None]:
    """The same-shaped candidate closest to ``expected`` (smallest excess) and its name."""
    best: Difference | None = None
    name: str | None = None
    for key, value in candidates:
        if not isinstance(value, np.ndarray) or value.shape != expected.shape:
            continue
        found = compare_arrays(expected, value, rtol, atol)
        if _closer(found, best):
            best, name = found, key
            if best.abs == 0.0:
                break
    return best, name


def best_match_unordered(
    expected: np.ndarray, candidates: Iterable[tuple[str, Any]], rtol: float, atol: float
) -> tuple[Difference | None, str | None]:
    """:func:`best_match` of the arrays sorted along one axis (each axis of length 2 or
    more in turn, the last first): equal up to the order of the elements along it, as
    when an operation with unspecified output order (top-k without sorting) ordered
    them differently, or rows were processed in that order. None when no order can
    differ."""
    axes = [a for a in reversed(range(expected.ndim)) if expected.shape[a] >= 2]
    same_shape = [
        (key, value)
        for key, value in candidates
        if isinstance(value, np.ndarray) and value.shape == expected.shape
    ]
    best: Difference | None = None
    name: str | None = None
    for axis in axes:
        try:
            ordered = np.sort(expected, axis=axis)
        except TypeError:  # not orderable
            return None, None
        found, where = best_match(
            ordered, ((key, np.sort(value, axis=axis)) for key, value in same_shape), rtol, atol
        )
        if found is not None and _closer(found, best):
            best, name = found, where
            if best.within:
                break
    return best, name


def best_match_transposed(
    expected: np.ndarray, candidates: Iterable[tuple[str, Any]], rtol: float, atol: float
) -> tuple[Difference | None, str | None, tuple[int, ...] | None]:
    """:func:`best_match` among the candidates of another shape that holds the same axis
    lengths in another order, each transposed into ``expected``'s shape (every axis
    permutation that fits, the identity excluded); the difference, the name and the
    permutation (``numpy.transpose`` of the candidate). (None, None, None) when none fits.
    """
    if expected.ndim < 2:
        return None, None, None
    best: Difference | None = None
    name: str | None = None
    chosen: tuple[int, ...] | None = None
    lengths = sorted(expected.shape)
    for key, value in candidates:
        if (
            not isinstance(value, np.ndarray)
            or value.shape == expected.shape
            or sorted(value.shape) != lengths
        ):
            continue
        for axes in _fitting_permutations(value.shape, expected.shape):
            found = compare_arrays(expected, np.transpose(value, axes), rtol, atol)
            if _closer(found, best):
                best, name, chosen = found, key, axes
    return best, name, chosen


def _fitting_permutations(
    shape: tuple[int, ...], target: tuple[int, ...]
) -> Iterator[tuple[int, ...]]:
    """Axis orders ``axes`` of ``shape`` with ``shape[axes[i]] == target[i]`` (the
    identity excluded), built axis by axis: only the fitting ones are enumerated."""

    def extend(prefix: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
        if len(prefix) == len(target):
            if prefix != tuple(range(len(target))):
                yield prefix
            return
        want = target[len(prefix)]
        for axis, length in enumerate(shape):
            if length == want and axis not in prefix:
                yield from extend((*prefix, axis))

    yield from extend(())


# ---------------------------------------------------------------------------- PyTorch side


def capture_calls(
    module: torch.nn.Module, inputs: ExampleInputs, names: Mapping[str, str]
) -> dict[str, list[list[_Captured]]]:
    """Tag -> one list per call of the tensors the module returned (one eager run).

    The run is recorded (graphtag.exporter.dataflow) to mark each captured tensor
    ``live`` (the result depends on it), ``outside`` (read after the call) and
    ``constant`` (it does not depend on the model's inputs when the call returns).
    """
    by_object: dict[int, list[list[_Captured]]] = {}
    handles = []
    tags_of: dict[int, list[str]] = {}
    recorder = DataflowRecorder()
    pending: list[tuple[_Captured, torch.Tensor, int]] = []  # item, tensor, end of call
    for tag, name in names.items():
        try:
            sub = module.get_submodule(name) if name else module
        except AttributeError:
            continue
        tags_of.setdefault(id(sub), []).append(tag)
        if id(sub) in by_object:
            continue  # the same object under two kept names: one hook, shared calls
        calls = by_object[id(sub)] = []
        hook = _recorder(sub, calls, recorder, pending)
        handles.append(sub.register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad(), state_kept(module), recorder:
            result = module(*inputs.args, **inputs.kwargs)
        liveness = recorder.liveness(t for _, t in _tensors(result, ""))
        dependence = recorder.dependence(t for _, t in _tensors((inputs.args, inputs.kwargs), ""))
        if recorder.opaque:  # the dataflow is incomplete: assume the worst of every tensor
            names = ", ".join(sorted(set(recorder.opaque)))
            logger.warning(
                "the PyTorch run's dataflow is not recorded inside %s: every module output "
                "counts as live, used outside its call and input-dependent "
                "(no UNUSED or CONSTANT)",
                names,
            )
        for item, tensor, end in pending:
            if recorder.opaque:
                item.live, item.outside, item.constant = True, True, False
                continue
            item.live = liveness.is_live(tensor)
            item.outside = liveness.read_after(tensor, end)
            item.constant = not dependence.depends(tensor, end)
    finally:
        for handle in handles:
            handle.remove()
        pending.clear()
        recorder.discard()
    return {tag: by_object[key] for key, tags in tags_of.items() for tag in tags}


def _recorder(sub: torch.nn.Module, calls: list, recorder: DataflowRecorder, pending) -> Callable:
    own = {id(t) for t in (*sub.parameters(), *sub.buffers())}
    own_keys = {_storage_key(t) for t in (*sub.parameters(), *sub.buffers())}

    def hook(_module, args, kwargs, output) -> None:
        end = recorder.position  # operations recorded from here on run after the call
        with recorder.paused():
            given = [t for _, t in _tensors((args, kwargs), "")]
            ids = {id(t) for t in given} | own
            keys = {_storage_key(t) for t in given} | own_keys
            seen: set[int] = set()
            call = []
            for label, tensor in _tensors(output, ""):
                if id(tensor) in ids or id(tensor) in seen or _storage_key(tensor) in keys:
                    continue
                seen.add(id(tensor))
                item = _Captured(label, _to_numpy(tensor))
                call.append(item)
                pending.append((item, tensor, end))
            calls.append(call)

    return hook


def _storage_key(t: torch.Tensor) -> tuple:
    return (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype, t.device.type)


def _tensors(obj: Any, label: str, depth: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """(label, tensor) for every tensor in nested containers, in order."""
    if depth > 20:
        return
    if isinstance(obj, torch.Tensor):
        yield label, obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _tensors(value, f"{label}.{key}", depth + 1)
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            yield from _tensors(value, f"{label}[{index}]", depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for field in dataclasses.fields(obj):
            yield from _tensors(getattr(obj, field.name, None), f"{label}.{field.name}", depth + 1)


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.clone().numpy()


def _as_example_inputs(inputs: Any) -> ExampleInputs:
    if isinstance(inputs, ExampleInputs):
        return inputs
    if isinstance(inputs, Mapping):
        return ExampleInputs(kwargs=dict(inputs))
    if isinstance(inputs, tuple):
        return ExampleInputs(args=inputs)
    return ExampleInputs(args=(inputs,))


def graph_feeds(
    model: ir.Model, module: torch.nn.Module, inputs: ExampleInputs
) -> dict[str, np.ndarray]:
    """The model's graph inputs from the example inputs: by argument name, else in order."""
    return feeds_for([v.name for v in model.graph.inputs], module, inputs)


def feeds_for(
    names: list[str], module: torch.nn.Module, inputs: ExampleInputs
) -> dict[str, np.ndarray]:
    """Graph inputs ``names`` from the example inputs: by argument name, else in order."""
    named: dict[str, Any] = dict(inputs.kwargs)
    try:
        bound = inspect.signature(module.forward).bind_partial(*inputs.args, **inputs.kwargs)
        named.update(bound.arguments)
    except (TypeError, ValueError):
        pass
    if all(isinstance(named.get(name), torch.Tensor) for name in names):
        return {name: _to_numpy(named[name]) for name in names}
    flat = [t for _, t in _tensors((inputs.args, inputs.kwargs), "")]
    if len(flat) == len(names):
        return {name: _to_numpy(t) for name, t in zip(names, flat)}
    raise GraphtagError(
        f"cannot match the example inputs ({len(flat)} tensors) to the model's "
        f"{len(names)} graph inputs ({', '.join(names[:5])})"
    )


# ---------------------------------------------------------------------------- ONNX side


def run_all_values(model: ir.Model, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``model`` in onnxruntime; every value its main-graph nodes compute, by name.

    A serialized copy with every node output listed as a graph output is run, without
    onnxruntime's graph optimizations (the values are those of the graph as written).
    """
    import onnxruntime as ort

    proto = ir.serde.serialize_model(model)
    listed = {o.name for o in proto.graph.output} | {i.name for i in proto.graph.input}
    for node in model.graph:
        for value in node.outputs:
            if value.name and value.name not in listed:
                listed.add(value.name)
                proto.graph.output.append(ir.serde.serialize_value(value))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    # ONNX Runtime's own failures (no CPU kernel for an op and type, such as a bfloat16
    # Gemm) are the model's limits there, not graphtag errors: one line, no traceback.
    try:
        session = ort.InferenceSession(
            proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise GraphtagError(
            f"ONNX Runtime cannot load the exported model on CPU: {first_line(exc, typed=True)}"
        ) from exc
    wanted = {i.name for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    try:
        results = session.run(names, {k: v for k, v in feeds.items() if k in wanted})
    except Exception as exc:
        raise GraphtagError(
            f"ONNX Runtime failed to run the exported model: {first_line(exc, typed=True)}"
        ) from exc
    return dict(zip(names, results))


# ---------------------------------------------------------------------------- whole model


def check_outputs(
    path: str | os.PathLike,
    module: torch.nn.Module,
    inputs: ExampleInputs | tuple | Mapping,
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
) -> str | None:
    """The saved model at ``path`` against PyTorch on the example inputs, outputs only.

    Returns None when every output matches (``compare_arrays``), else one line naming
    the first output that does not. Also None, with the reason logged, when the outputs
    cannot be compared: PyTorch's own outputs differ between two runs (the model
    samples), or their number differs from the graph's. A cheap check for an export
    route that can be silently wrong (torch's TorchScript exporter mistranslates some
    in-place writes to views); ``verify_modules`` finds the module.
    """
    import onnxruntime as ort

    inputs = _as_example_inputs(inputs)
    with torch.no_grad(), state_kept(module):
        first = [t for _, t in _tensors(module(*inputs.args, **inputs.kwargs), "")]
        second = [t for _, t in _tensors(module(*inputs.args, **inputs.kwargs), "")]
    expected = [_to_numpy(t) for t in first]
    repeats = [_repeated(a, _to_numpy(b), rtol, atol) for a, b in zip(expected, second)]
    if len(first) != len(second) or not all(repeats):
        logger.info("the model's outputs are random (two PyTorch runs differ): not compared")
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = feeds_for([i.name for i in session.get_inputs()], module, inputs)
    actual = session.run(None, feeds)
    if len(actual) != len(expected):
        logger.info(
            "the graph has %d outputs, PyTorch returns %d tensors: not compared",
            len(actual),
            len(expected),
        )
        return None
    for index, (want, got) in enumerate(zip(expected, actual)):
        if want.shape != got.shape:
            return f"output {index} has shape {list(got.shape)}, PyTorch's {list(want.shape)}"
        difference = compare_arrays(want, got, rtol, atol)
        if not difference.within:
            return (
                f"output {index} differs by up to {difference.abs:.3g} "
                f"({difference.rel:.2g} of its scale; rtol {rtol:g}, atol {atol:g})"
            )
    return None
