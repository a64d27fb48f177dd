"""Give every node of a model rewritten by another tool the tag it deserves, from a tagged
reference (ONNX Runtime's optimized graph, onnxruntime.transformers fusions, onnxslim,
onnx-graphsurgeon surgery, ...)."""

from __future__ import annotations

__all__ = ["RetagPass", "RetagReport", "node_tags_by_name", "retag"]

import dataclasses
import logging
import os
from collections import Counter
from typing import Annotated

import onnx_ir as ir

from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.core.graphs import iter_all_nodes, iter_values
from graphtag.core.io import load
from graphtag.core.pass_result import PassResult
from graphtag.passes import _correspondence, _fusion_regions
from graphtag.passes.function_inlining import FunctionInliningPass
from graphtag.passes.tag_propagation import TagPropagationPass

logger = logging.getLogger(__name__)

# pkg.graphtag.tag_source written by retag, one per match kind.
VALUE = "retag:value"
STRUCTURAL = "retag:structural"
FUSED = "retag:fused"
REWRITTEN = "retag:rewritten"
UNTAGGED = "untagged"
KINDS = (VALUE, STRUCTURAL, FUSED, REWRITTEN)
_SOURCE_OF = {_correspondence.VALUE: VALUE, _correspondence.STRUCTURAL: STRUCTURAL}

# Node keys retag owns on the rewritten model (rewritten from scratch on every run).
_NODE_KEYS = (metadata.MODULE, metadata.TAG_SOURCE, metadata.CONTEXTS)
# Model keys copied from the reference: everything graphtag records about the model, except
# analyses of the reference graph's own values.
_NOT_COPIED = (metadata.BOUNDARIES,)
_PREFIX = "pkg.graphtag."

DEFAULT_MIN_MATCH_RATE = 0.33


@dataclasses.dataclass
class RetagReport:
    """What :func:`retag` did.

    ``kinds`` maps each node (by object id) to how it got its tag: one of :data:`KINDS`,
    ``inferred:<rule>`` (tag propagation) or ``untagged``; ``counts`` totals them.
    """

    model: ir.Model
    counts: dict[str, int]
    unmatched: list[str]  # "name (op) -> tag [kind]" for nodes tag propagation had to tag
    values_matched: int
    values_total: int
    ambiguous: int  # structural matches picked among identical reference candidates
    flattened: bool  # the reference's outlined functions were inlined to match
    modified: bool
    kinds: dict[int, str] = dataclasses.field(repr=False, default_factory=dict)

    @property
    def match_rate(self) -> float:
        """Share of the rewritten model's named values found in the reference.

        A value counts when its name (or position, for graph inputs and outputs) exists
        in the reference with the same type and, for a node output, the structure agrees:
        the node is a reference node with an input in common, or a group whose reference
        region is reached from its inputs. Names alone do not count: exports of different
        models share many generated names (``val_12``, ``linear_3``).
        """
        return self.values_matched / self.values_total if self.values_total else 1.0

    @property
    def nodes(self) -> int:
        return sum(self.counts.values())

    def stats(self) -> dict[str, int]:
        return {
            "nodes": self.nodes,
            **{kind: self.counts.get(kind, 0) for kind in KINDS},
            "inferred": sum(n for k, n in self.counts.items() if k.startswith("inferred:")),
            UNTAGGED: self.counts.get(UNTAGGED, 0),
            "values_matched": self.values_matched,
            "values_total": self.values_total,
            "ambiguous": self.ambiguous,
        }

    def tags_by_node_name(self) -> dict[str, str]:
        """Node name -> tag over the retagged model (see :func:`node_tags_by_name`)."""
        return node_tags_by_name(self.model)


class RetagPass(ir.passes.InPlacePass):
    """Tag a rewritten model's nodes from a tagged reference it was derived from.

    Reads: the reference (``reference=PATH``, or :meth:`from_model`): its node tags,
    contexts and value/model metadata; the rewritten model's graph structure and names.
    Writes, on every node of the rewritten model (main graph, subgraphs, functions):
    ``pkg.graphtag.module``, ``pkg.graphtag.tag_source`` and ``pkg.graphtag.contexts``,
    replacing whatever was there:

    * ``retag:value``: the node is a reference node (same outputs, same operator): its
      tag and contexts;
    * ``retag:structural``: the same, found through renamed values (same operator and
      matched inputs, forward from the graph inputs and initializers);
    * ``retag:fused`` / ``retag:rewritten``: the node (with the new nodes connected to it
      through new values) replaced two or more / one reference node: the lowest common
      ancestor of their tags, and with several modules ``fused`` contexts naming them
      (the export's convention for optimizer fusions);
    * ``inferred:<rule>``: anything else, through ``tag-propagation``.

    Also copies the reference's ``pkg.graphtag.*`` model metadata (hierarchy, version,
    filter; not the reference's boundaries), the origin of initializers matched by name,
    and recomputes ``pkg.graphtag.consumers`` when the reference records them (removes
    stale ones otherwise). ``exact=true`` copies every metadata entry of matched nodes and
    values instead (a lossless round trip through a tool that drops metadata).

    When the reference holds functions made by function-outlining that the rewritten
    model no longer has (ONNX Runtime inlines them), the reference is matched inlined.

    Invariants: the graph, names and tensors are untouched (metadata only); the reference
    is never modified; fewer than ``min_match_rate`` of the rewritten values found in the
    reference raises :class:`GraphtagError` before anything is written (``force=true``
    retags anyway); near-linear in the size of both models; running it twice gives
    ``modified=False``. Stats: nodes per match kind, matched/total values.
    """

    whole_model = "it matches the whole model against its reference"  # not scopable

    def __init__(
        self,
        *,
        reference: Annotated[str, "the tagged ONNX file the model was derived from"] = "",
        force: Annotated[bool, "retag even when few values match the reference"] = False,
        min_match_rate: Annotated[
            float, "share of values that must be found in the reference"
        ] = DEFAULT_MIN_MATCH_RATE,
        exact: Annotated[bool, "copy all metadata of matched nodes and values"] = False,
    ) -> None:
        super().__init__()
        self.reference = reference
        self.force = force
        self.min_match_rate = min_match_rate
        self.exact = exact
        self._reference_model: ir.Model | None = None

    @classmethod
    def from_model(cls, reference: ir.Model, **options) -> RetagPass:
        """A pass using an in-memory reference model (never modified)."""
        instance = cls(**options)
        instance._reference_model = reference
        return instance

    def call(self, model: ir.Model) -> PassResult:
        reference = self._reference_model
        if reference is None:
            if not self.reference:
                raise GraphtagError("retag: no reference given (retag{reference=PATH})")
            reference = load(self.reference)
        report = _retag(
            model,
            reference,
            force=self.force,
            min_match_rate=self.min_match_rate,
            exact=self.exact,
            reference_name=self.reference or "the reference",
        )
        return PassResult(
            model,
            report.modified,
            stats=report.stats(),
            diagnostics=[f"not matched: {line}" for line in report.unmatched],
        )


def retag(
    reference: ir.Model | str | os.PathLike,
    rewritten: ir.Model | str | os.PathLike,
    *,
    force: bool = False,
    min_match_rate: float = DEFAULT_MIN_MATCH_RATE,
    exact: bool = False,
    reference_name: str | None = None,
) -> RetagReport:
    """Tag ``rewritten`` (a model, modified in place, or a file, loaded) from ``reference``.

    ``reference`` is a model exported by graphtag (or a path to one); it is not modified.
    See :class:`RetagPass` for what is written. Raises :class:`GraphtagError` for a
    reference without tags, or when fewer than ``min_match_rate`` of the rewritten
    model's values are found in the reference (the wrong reference?) unless ``force``.
    ``reference_name`` names the reference in those errors.
    """
    name = reference_name or (
        "the reference" if isinstance(reference, ir.Model) else str(reference)
    )
    ref_model = reference if isinstance(reference, ir.Model) else load(reference)
    model = rewritten if isinstance(rewritten, ir.Model) else load(rewritten)
    return _retag(
        model,
        ref_model,
        force=force,
        min_match_rate=min_match_rate,
        exact=exact,
        reference_name=name,
    )


def node_tags_by_name(model: ir.Model) -> dict[str, str]:
    """Node name -> tag for every named, tagged node (main graph, subgraphs, functions).

    The main graph's nodes come first and win over a function body's node of the same
    name: profilers (ONNX Runtime's) name the nodes of the graph they run.
    """
    found: dict[str, str] = {}
    for node in iter_all_nodes(model):
        name = node.name
        if name and name not in found:
            tag = node.metadata_props.get(metadata.MODULE)
            if tag is not None:
                found[name] = tag
    return found


# ------------------------------------------------------------------------------ the work


def _retag(
    model: ir.Model,
    reference: ir.Model,
    *,
    force: bool,
    min_match_rate: float,
    exact: bool,
    reference_name: str,
) -> RetagReport:
    if not any(metadata.MODULE in n.metadata_props for n in iter_all_nodes(reference)):
        raise GraphtagError(
            f"{reference_name} has no graphtag tags ({metadata.MODULE}): "
            "retag needs a model exported by graphtag as the reference"
        )
    view, flattened = _matchable_reference(reference, model)
    found = _correspondence.match(model, view)
    nodes = list(iter_all_nodes(model))
    residual = [
        node
        for node in nodes
        if (ref := found.nodes.get(id(node))) is None or metadata.MODULE not in ref.metadata_props
    ]
    regions = [
        _fusion_regions.region_of(group, found.values, found.nodes, found.claimed)
        for group in _fusion_regions.groups(residual, found.values)
    ]
    backed = _backed_values(model, nodes, found, regions)
    rate = backed / found.total_values if found.total_values else 1.0
    if rate < min_match_rate and not force:
        raise GraphtagError(
            f"only {rate:.0%} of the rewritten model's values ({backed} of "
            f"{found.total_values}) are found in {reference_name} (at least "
            f"{min_match_rate:.0%} expected): is it the model this one was made from? "
            "Use --force (force=true) to retag anyway"
        )
    all_values = list(iter_values(model))
    before = _state(model, nodes, all_values, exact)
    kinds: dict[int, str] = {}
    for node in nodes:
        for key in _NODE_KEYS:
            node.metadata_props.pop(key, None)
    for node in nodes:
        ref = found.nodes.get(id(node))
        if ref is not None and metadata.MODULE in ref.metadata_props:
            kind = _SOURCE_OF[found.kinds[id(node)]]
            _copy_node(node, ref, kind, exact)
            kinds[id(node)] = kind
    for region in regions:
        kind = _apply_region(region)
        if kind is not None:
            kinds.update((id(node), kind) for node in region.nodes)
    _copy_model_metadata(model, reference, exact)
    _copy_value_metadata(all_values, found, exact)
    _propagate(model, nodes, kinds)
    _refresh_consumers(all_values, reference, found, exact)
    counts = Counter(kinds.get(id(node), UNTAGGED) for node in nodes)
    unmatched = [
        f"{_label(node)} -> {metadata.node_tag(node)} [{kinds.get(id(node), UNTAGGED)}]"
        for node in nodes
        if not kinds.get(id(node), UNTAGGED).startswith("retag:")
    ]
    for line in unmatched:
        logger.info("retag: not matched: %s", line)
    return RetagReport(
        model=model,
        counts=dict(counts),
        unmatched=unmatched,
        values_matched=backed,
        values_total=found.total_values,
        ambiguous=found.ambiguous,
        flattened=flattened,
        modified=_state(model, nodes, all_values, exact) != before,
        kinds=kinds,
    )


def _backed_values(model, nodes, found, regions) -> int:
    """Matched values backed by structure (see :attr:`RetagReport.match_rate`)."""
    values = found.values
    backed: set[int] = set()
    for container in [model.graph, *model.functions.values()]:
        for graph in _correspondence.iter_scope_graphs(container):
            initializers = getattr(graph, "initializers", None) or {}
            for value in (*graph.inputs, *graph.outputs, *initializers.values()):
                if id(value) in values:
                    backed.add(id(value))
    producers = [node for node in nodes if id(node) in found.confirmed]
    producers.extend(node for region in regions if region.connected for node in region.nodes)
    for node in producers:
        backed.update(id(v) for v in node.outputs if id(v) in values)
    return len(backed)


def _matchable_reference(reference: ir.Model, model: ir.Model) -> tuple[ir.Model, bool]:
    """The reference, or an inlined copy when the rewritten model inlined its functions."""
    outlined = [
        key for key, f in reference.functions.items() if metadata.FUNCTION_CLASS in f.metadata_props
    ]
    if not outlined or any(key in model.functions for key in outlined):
        return reference, False
    logger.info(
        "retag: matching against the reference with its %d functions inlined", len(outlined)
    )
    copy = reference.clone(deep_copy=True)
    FunctionInliningPass()(copy)
    return copy, True


def _copy_node(node: ir.Node, ref: ir.Node, source: str, exact: bool) -> None:
    props = node.metadata_props
    if exact:
        props.clear()
        props.update(ref.metadata_props)
        return
    metadata.set_tag(node, ref.metadata_props[metadata.MODULE], source)
    text = ref.metadata_props.get(metadata.CONTEXTS)
    if text is not None:
        props[metadata.CONTEXTS] = text


def _apply_region(region: _fusion_regions.Region) -> str | None:
    tags = region.tags()
    if not tags:
        logger.info(
            "retag: no tagged reference node found for %s", ", ".join(map(_label, region.nodes))
        )
        return None
    kind = FUSED if len(region.sources) >= 2 else REWRITTEN
    tag = region.tag()
    assert tag is not None  # tags is not empty
    entries = [{"module": t, "role": metadata.FUSED_ROLE} for t in tags] if len(tags) > 1 else []
    for node in region.nodes:
        metadata.set_tag(node, tag, kind)
        metadata.set_contexts(node, entries)
    return kind


def _copy_model_metadata(model: ir.Model, reference: ir.Model, exact: bool) -> None:
    props = model.metadata_props
    for key in [k for k in props if k.startswith(_PREFIX)]:
        del props[key]  # the rewritten model's own copy may be stale
    for key, text in reference.metadata_props.items():
        if exact or (key.startswith(_PREFIX) and key not in _NOT_COPIED):
            props[key] = text
    for key, function in model.functions.items():
        ref = reference.functions.get(key)
        if ref is None:
            continue
        if exact:
            function.metadata_props.clear()
            function.metadata_props.update(ref.metadata_props)
        else:  # which module a function was outlined from (graphtag's keys)
            for name, text in ref.metadata_props.items():
                if name.startswith(_PREFIX):
                    function.metadata_props[name] = text


def _copy_value_metadata(all_values: list[ir.Value], found, exact: bool) -> None:
    """Matched values get the reference's metadata (``exact``) or origin.

    A constant standing for a value the reference computes (the tool folded it, e.g.
    a transposed weight) gets the parameters that computation read as its origin, the
    way the export records the optimizer's folding.
    """
    values = found.values
    for value in all_values:
        ref = values.get(id(value))
        if ref is None:
            continue
        if exact:
            value.metadata_props.clear()
            value.metadata_props.update(ref.metadata_props)
        if value.const_value is None:
            continue
        if ref.const_value is not None:
            if not exact:
                metadata.set_origin(value, metadata.origin(ref))
        else:
            metadata.set_origin(value, sorted(_folded_parameters(ref, found.claimed)))


def _folded_parameters(ref: ir.Value, claimed: set[int]) -> set[str]:
    """Recorded origins of the reference constants ``ref`` was computed from.

    The walk stops at reference nodes the rewritten model still has (their outputs are
    still computed, not folded) and at graph inputs, so it covers only what was folded.
    """
    names: set[str] = set()
    seen: set[int] = set()
    stack = [ref]
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if value.const_value is not None:
            names.update(metadata.origin(value) or ())
            continue
        producer = value.producer()
        if producer is None or id(producer) in claimed:
            continue
        stack.extend(v for v in producer.inputs if v is not None)
    return names


def _propagate(model: ir.Model, nodes: list[ir.Node], kinds: dict[int, str]) -> None:
    if all(id(node) in kinds for node in nodes):
        return
    TagPropagationPass()(model)
    for node in nodes:
        if id(node) not in kinds and metadata.MODULE in node.metadata_props:
            kinds[id(node)] = node.metadata_props.get(metadata.TAG_SOURCE) or "inferred"


def _refresh_consumers(values: list[ir.Value], reference: ir.Model, found, exact: bool) -> None:
    """Recompute the consumers the reference records; drop stale ones if it has none.

    With ``exact``, a value read by the very reference nodes that read it in the reference
    keeps the copied entry as it was.
    """
    recorded = any(metadata.CONSUMERS in v.metadata_props for v in iter_values(reference))
    for value in values:
        if exact and _same_readers(value, found):
            continue
        if recorded:
            tags = {t for use in value.uses() if (t := metadata.node_tag(use.node))}
            metadata.set_consumers(value, tags)
        else:
            metadata.set_consumers(value, None)


def _same_readers(value: ir.Value, found) -> bool:
    ref = found.values.get(id(value))
    if ref is None:
        return False
    mine = set()
    for use in value.uses():
        node = found.nodes.get(id(use.node))
        if node is None:
            return False
        mine.add(id(node))
    return mine == {id(use.node) for use in ref.uses()}


def _state(model: ir.Model, nodes: list[ir.Node], values: list[ir.Value], exact: bool) -> list:
    """Everything retag may write, to tell whether a run changed anything."""
    state: list = [dict(model.metadata_props)]
    if exact:
        state.extend(tuple(n.metadata_props.items()) for n in nodes)
        state.extend(tuple(v.metadata_props.items()) for v in values)
        return state
    for node in nodes:
        props = node.metadata_props
        state.append((props.get(_NODE_KEYS[0]), props.get(_NODE_KEYS[1]), props.get(_NODE_KEYS[2])))
    for value in values:
        props = value.metadata_props
        state.append((props.get(metadata.CONSUMERS), props.get(metadata.ORIGIN)))
    return state


def _label(node: ir.Node) -> str:
    return f"{node.name or '<unnamed>'} ({node.op_type})"
