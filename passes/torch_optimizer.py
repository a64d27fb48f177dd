"""Run the ONNX optimization torch.onnx runs, then reconcile the tags it disturbed.

torch.onnx.export (dynamo, ``optimize=True``) runs onnxscript's optimizer after
translating the graph (``ONNXProgram.optimize``, which calls
``onnxscript._framework_apis.torch_2_11.optimize`` in torch 2.11-2.13). The optimizer
fuses nodes (copying the metadata of one source node), folds constants and creates
nodes without metadata, so tags read from the optimized graph would be wrong or
missing. graphtag therefore exports with ``optimize=False`` (exact metadata on every
node), tags, and runs this pass: the very same optimization, then the merge policy
below. torch runs its optimizer before renaming graph inputs/outputs to the caller's
``input_names``/``output_names``; this pass undoes those renames (torch records each
original name in ``pkg.torch.onnx.original_node_name``), optimizes, and redoes them the
way torch does, so the topology equals a plain optimized export.

Merge policy for graphtag's keys after optimizing:

* a node that survived the optimizer (the same node object) keeps its tag;
* a node the optimizer created gets the tags of its *source* nodes: the nodes of the
  unoptimized graph lying between its inputs and its outputs. With two or more sources
  its tag is their lowest common ancestor, ``pkg.graphtag.tag_source`` is ``fused`` and,
  when the sources span several modules, ``pkg.graphtag.contexts`` lists each module with
  role ``fused``; with one source it takes that node's tag (``tag_source``
  ``rewritten``);
* a created node without tagged sources keeps no graphtag key; tag propagation tags it
  from its neighbours.

Sources are found structurally. Before optimizing, a snapshot records every node's input
values and tag and every value's producer (by object identity; the snapshot keeps the
objects alive so identities stay unique). Created nodes connected through values the
optimizer created form a group (one rewrite may emit several nodes). A value a group
hands to a surviving node stands for the value that node consumed before (the rewriter
renames it after the old value, but it is a new object), and a graph output for the old
graph output at its position. From those old values the search walks back through
removed nodes, stopping at values the group still consumes, at surviving producers and at
graph inputs/initializers; of the removed nodes found, the sources are those reached
forward from the values the group still consumes (constant-only chains folded into a new
initializer are not sources). Each removed node is visited by the groups that absorbed
it, so the work is linear in practice.
"""

from __future__ import annotations

__all__ = [
    "FUSED",
    "REWRITTEN",
    "ReconcileStats",
    "Snapshot",
    "TorchOptimizerPass",
    "detach_removed",
    "reconcile_tags",
]

import dataclasses
import importlib
import json
import logging
import re
from collections import deque
from typing import Annotated

import onnx_ir as ir

from graphtag.analysis.liveness import dead_node_names
from graphtag.analysis.parameters import recorded_origins
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.core.graphs import connected_groups, iter_all_nodes, iter_graphs, iter_values
from graphtag.core.hierarchy import tag_lca
from graphtag.core.pass_result import PassResult

logger = logging.getLogger(__name__)

# pkg.graphtag.tag_source of nodes the optimizer created.
FUSED = "fused"
REWRITTEN = "rewritten"
# Written by torch's rename_inputs / rename_outputs on the renamed graph inputs/outputs.
ORIGINAL_NAME = "pkg.torch.onnx.original_node_name"
# onnxscript's stable API modules for torch (torch_2_11 serves torch 2.11 to 2.13).
_FRAMEWORK_API = re.compile(r"^torch_\d+_\d+$")


class TorchOptimizerPass(ir.passes.InPlacePass):
    """Run torch.onnx's ONNX optimizer (onnxscript) and reconcile the tags it disturbed.

    Reads: an unoptimized dynamo export (``torch.onnx.export(..., optimize=False)``), node
    ``pkg.graphtag.module`` tags (untagged nodes are fine: they stay untagged), and
    ``pkg.torch.onnx.original_node_name`` on graph inputs/outputs torch renamed.
    Writes: the optimized graph (exactly what ``ONNXProgram.optimize`` makes, with the
    renamed inputs/outputs renamed again the way torch does after optimizing); on nodes
    the optimizer created, ``pkg.graphtag.module``, ``pkg.graphtag.tag_source``
    (``fused``/``rewritten``) and ``pkg.graphtag.contexts`` (role ``fused``) by the merge
    policy in the module docstring; on the model, ``pkg.graphtag.optimizer_removed``:
    the initializers it dropped without a ``folded_from`` record (a zero bias whose
    ``Add`` it removed), and ``pkg.graphtag.exporter_dead_nodes``: the named nodes the
    optimizer left reaching no output (kept: the topology is torch's). Nodes the
    optimizer removed stop using values, the nodes inside their bodies too
    (:func:`detach_removed`), so ``Value.uses()`` is the graph's. Imports onnxscript,
    never torch.

    Invariants: surviving nodes keep their tags; a fused node's tag is the lowest common
    ancestor of its sources' tags; ``modified`` is False when the optimizer left every
    node, edge and initializer as it was. Linear in practice (see module docstring).
    """

    def __init__(
        self,
        *,
        framework_api: Annotated[
            str, "onnxscript._framework_apis module torch uses (torch_2_11 serves torch 2.11-2.13)"
        ] = "torch_2_11",
    ) -> None:
        super().__init__()
        if not _FRAMEWORK_API.match(framework_api):
            raise ValueError(f"framework_api must look like torch_2_11, got {framework_api!r}")
        self.framework_api = framework_api

    def call(self, model: ir.Model) -> PassResult:
        optimize = _optimizer(self.framework_api)
        renamed = _undo_renames(model)
        snapshot = Snapshot.take(model)
        before = _outside_nodes(model)
        try:
            optimized = optimize(model)
        except Exception as exc:
            raise GraphtagError(
                f"torch's ONNX optimizer failed ({type(exc).__name__}: {exc}); "
                "export with optimize=False to skip it"
            ) from exc
        stats = reconcile_tags(optimized, snapshot)
        detached = detach_removed(optimized, snapshot)
        if detached:
            logger.info("torch-optimizer: %d stale use(s) of removed nodes detached", detached)
        _record_removed(optimized, snapshot.initializer_names)
        # What torch's optimizer leaves dead stays (the topology is torch's); say so.
        metadata.set_exporter_dead_nodes(optimized, dead_node_names(optimized))
        _redo_renames(optimized, renamed)
        modified = bool(stats.created or stats.removed) or not _unchanged(
            optimized, snapshot, before
        )
        if modified:  # nodes were replaced: recorded consumers follow the new graph
            metadata.refresh_consumers(iter_values(optimized))
            # The optimizer may append a node before its producer (seen on TorchScript
            # exports): ONNX wants graphs sorted. onnx_ir's sort is stable (sorted stays).
            _register_dangling_constants(optimized.graph)
            try:
                optimized.graph.sort()
            except ValueError as exc:  # a cycle: not ours to fix; validate reports it
                logger.info("torch-optimizer: graph left unsorted (%s)", exc)
        return PassResult(optimized, modified, stats=dataclasses.asdict(stats))


def _register_dangling_constants(graph: ir.Graph) -> None:
    """Make initializers of values the optimizer gave a constant value but neither a
    producer nor a place in the graph (seen on TorchScript exports: a folded shape):
    saved as they are, their readers would read an undefined name."""
    for node in graph:
        for value in node.inputs:
            if (
                value is not None
                and value.const_value is not None
                and value.producer() is None
                and value.name
                and not value.is_initializer()
                and not value.is_graph_input()
                and value.name not in graph.initializers
            ):
                graph.register_initializer(value)


def _optimizer(framework_api: str):
    try:
        module = importlib.import_module(f"onnxscript._framework_apis.{framework_api}")
    except ImportError as exc:
        raise GraphtagError(
            f"torch-optimizer: onnxscript has no framework API {framework_api!r} ({exc})"
        ) from exc
    return module.optimize


def _outside_nodes(model: ir.Model) -> list:
    """What the optimizer may change besides nodes and edges: initializers with their
    tensors, and graph outputs (objects, compared by identity)."""
    found: list = []
    for value in model.graph.initializers.values():
        found.extend((value, value.const_value))
    found.extend(model.graph.outputs)
    return found


def _unchanged(model: ir.Model, snapshot: Snapshot, before: list) -> bool:
    """True when no node, edge, initializer or graph output changed. The snapshot and
    ``before`` keep the old objects alive, so identities are comparable."""
    post = list(iter_all_nodes(model))
    if len(post) != len(snapshot.nodes):
        return False
    for node, old, inputs in zip(post, snapshot.nodes, snapshot.inputs, strict=True):
        if node is not old or not _same_objects(node.inputs, inputs):
            return False
    return _same_objects(_outside_nodes(model), before)


def _same_objects(a, b) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _undo_renames(model: ir.Model) -> dict[str, dict[int, str]]:
    """Give torch-renamed graph inputs/outputs their exporter names back.

    Returns, per side, position -> the caller's name, for :func:`_redo_renames`.
    """
    renamed: dict[str, dict[int, str]] = {"inputs": {}, "outputs": {}}
    for side in ("outputs", "inputs"):  # torch renamed inputs first: undo in reverse
        for position, value in enumerate(getattr(model.graph, side)):
            original = value.metadata_props.pop(ORIGINAL_NAME, None)
            if original is None:
                continue
            renamed[side][position] = str(value.name)
            if original != "None":  # torch writes "None" for a value that had no name
                value.name = original
    return renamed


def _redo_renames(model: ir.Model, renamed: dict[str, dict[int, str]]) -> None:
    """Rename as torch's rename_inputs/rename_outputs do (recording the original name)."""
    for side in ("inputs", "outputs"):
        values = getattr(model.graph, side)
        for position, name in renamed[side].items():
            if position < len(values):
                value = values[position]
                value.metadata_props[ORIGINAL_NAME] = str(value.name)
                value.name = name


@dataclasses.dataclass
class ReconcileStats:
    nodes_before: int
    nodes_after: int
    created: int  # nodes the optimizer created
    removed: int  # nodes the optimizer removed
    fused: int  # created nodes tagged from two or more source nodes
    rewritten: int  # created nodes tagged from one source node


@dataclasses.dataclass
class Snapshot:
    """The unoptimized graph's structure and tags; holds every object so ids stay unique."""

    nodes: list[ir.Node]
    inputs: list[tuple[ir.Value | None, ...]]
    tags: list[str | None]
    index: dict[int, int]  # id(node) -> position in nodes
    producer: dict[int, int]  # id(value) -> index of the node producing it
    values: list[ir.Value]  # every value seen, kept alive
    graph_outputs: dict[int, tuple[ir.Value, ...]]  # id(graph) -> its outputs
    initializer_names: list[str] = dataclasses.field(default_factory=list)  # main graph's

    @classmethod
    def take(cls, model: ir.Model) -> Snapshot:
        snap = cls([], [], [], {}, {}, [], {}, list(model.graph.initializers))
        for graph in iter_graphs(model):
            snap.graph_outputs[id(graph)] = tuple(graph.outputs)
            snap.values.extend(graph.inputs)
            snap.values.extend(graph.outputs)
        snap.values.extend(model.graph.initializers.values())
        for node in iter_all_nodes(model):
            position = len(snap.nodes)
            snap.index[id(node)] = position
            snap.nodes.append(node)
            snap.inputs.append(tuple(node.inputs))
            snap.tags.append(metadata.node_tag(node))
            for value in node.outputs:
                snap.producer[id(value)] = position
                snap.values.append(value)
        snap.values.extend(v for inputs in snap.inputs for v in inputs if v is not None)
        return snap


def detach_removed(model: ir.Model, snapshot: Snapshot) -> int:
    """Make the nodes the optimizer removed stop using values; returns the uses dropped.

    onnx_ir's ``Graph.remove(safe=True)`` detaches a removed node's own inputs, but not
    those of the nodes inside its subgraphs: when the optimizer drops an ``If`` or a
    ``Loop`` (a constant condition, an inlined branch), every outer value its bodies read
    keeps those nodes in ``Value.uses()``. Consumer records and boundaries built from
    ``uses()`` would then name modules that no longer read the value (the saved file,
    read back, has no such use). Removed nodes are garbage: their inputs are cleared.
    """
    alive = {id(node) for node in iter_all_nodes(model)}
    dropped = 0
    for node in snapshot.nodes:
        if id(node) in alive:
            continue
        for index, value in enumerate(node.inputs):
            if value is not None:
                node.replace_input_with(index, None)
                dropped += 1
    return dropped


def _record_removed(model: ir.Model, before: list[str]) -> None:
    """Name in ``pkg.graphtag.optimizer_removed`` the initializers the optimizer dropped
    without recording them in any ``folded_from`` (added to what an earlier run
    recorded): validate's parameter-coverage then knows they went, not got lost."""
    kept = set(model.graph.initializers)
    folded = recorded_origins(model)
    gone = {name for name in before if name not in kept and name not in folded}
    text = model.metadata_props.get(metadata.OPTIMIZER_REMOVED)
    earlier = set(metadata.parse_name_list(text) or ()) if text else set()
    if gone - earlier:
        model.metadata_props[metadata.OPTIMIZER_REMOVED] = json.dumps(sorted(earlier | gone))


def reconcile_tags(model: ir.Model, snapshot: Snapshot) -> ReconcileStats:
    """Apply the merge policy to ``model`` (optimized in place from ``snapshot``'s graph)."""
    post = list(iter_all_nodes(model))
    alive = {id(node) for node in post if id(node) in snapshot.index}
    created = [node for node in post if id(node) not in snapshot.index]
    old_values = {id(v) for v in snapshot.values}
    graph_outputs = _graph_outputs(model)
    fused = rewritten = 0
    for group in _groups(created):
        sources = _sources(group, snapshot, alive, old_values, graph_outputs)
        kind = _apply(group, [snapshot.tags[i] for i in sources], len(sources))
        fused += kind == FUSED
        rewritten += kind == REWRITTEN
    return ReconcileStats(
        nodes_before=len(snapshot.nodes),
        nodes_after=len(post),
        created=len(created),
        removed=len(snapshot.nodes) - len(alive),
        fused=fused,
        rewritten=rewritten,
    )


def _graph_outputs(model: ir.Model) -> dict[int, tuple[int, ir.Graph]]:
    """id(value) -> (position, graph) for every graph output, subgraphs included."""
    found = {}
    for graph in iter_graphs(model):
        for position, value in enumerate(graph.outputs):
            found.setdefault(id(value), (position, graph))
    return found


def _groups(created: list[ir.Node]) -> list[list[ir.Node]]:
    """Created nodes joined through values that a created node produced.

    One rewrite may emit several connected nodes. Two rewrites next to each other also
    join (their values cannot be told apart when no surviving node consumes them): the
    group then gets the LCA of both, which is coarser but never wrong.
    """
    return connected_groups(created)


def _sources(group, snapshot: Snapshot, alive, old_values, graph_outputs) -> list[int]:
    """Indices (in the snapshot) of the removed nodes the group was made from."""
    in_group = {id(node) for node in group}
    stops = {
        id(v)
        for node in group
        for v in node.inputs
        if v is not None and id(v) in old_values and not _made_by(v, in_group)
    }
    starts = [
        old
        for node in group
        for v in node.outputs
        for old in _old_equivalents(v, in_group, snapshot, graph_outputs)
    ]
    region = _walk_back(starts, snapshot, alive, stops)
    reached = _reached_from(stops, region, snapshot)
    return sorted(reached if reached else region)


def _made_by(value: ir.Value, in_group: set[int]) -> bool:
    producer = value.producer()
    return producer is not None and id(producer) in in_group


def _old_equivalents(value: ir.Value, in_group, snapshot: Snapshot, graph_outputs):
    """The old values a created value replaced (seen from its surviving consumers)."""
    if id(value) in snapshot.producer:
        yield value  # an old value object kept by a created node (rare)
        return
    for use in value.uses():
        position = snapshot.index.get(id(use.node))
        if position is None or id(use.node) in in_group:
            continue
        before = snapshot.inputs[position]
        if use.idx < len(before) and before[use.idx] is not None and before[use.idx] is not value:
            yield before[use.idx]
    where = graph_outputs.get(id(value))
    if where is not None:
        position, graph = where
        outputs = snapshot.graph_outputs.get(id(graph), ())
        if position < len(outputs):
            yield outputs[position]


def _walk_back(starts, snapshot: Snapshot, alive, stops) -> set[int]:
    """Removed nodes reached backwards from ``starts``, not crossing ``stops``.

    The producer of a replaced value counts even when it survived (a rule that keeps the
    nodes it matched); deeper surviving producers are boundaries, not sources.
    """
    region: set[int] = set()
    queue = deque((value, True) for value in starts)
    while queue:
        value, replaced = queue.popleft()
        if value is None or id(value) in stops:
            continue
        position = snapshot.producer.get(id(value))
        if position is None or position in region:
            continue
        if not replaced and id(snapshot.nodes[position]) in alive:
            continue  # a surviving node: still in the graph, not absorbed
        region.add(position)
        queue.extend((v, False) for v in snapshot.inputs[position])
    return region


def _reached_from(stops: set[int], region: set[int], snapshot: Snapshot) -> set[int]:
    """Region nodes on a path from a value in ``stops`` (the group's own inputs)."""
    consumers: dict[int, list[int]] = {}
    for position in region:
        for value in snapshot.inputs[position]:
            if value is not None:
                consumers.setdefault(id(value), []).append(position)
    reached: set[int] = set()
    queue = deque(p for key in stops for p in consumers.get(key, ()))
    while queue:
        position = queue.popleft()
        if position in reached:
            continue
        reached.add(position)
        for value in snapshot.nodes[position].outputs:
            queue.extend(consumers.get(id(value), ()))
    return reached


def _apply(group: list[ir.Node], tags: list[str | None], sources: int) -> str | None:
    """Write the group's tag from its sources' tags; returns the tag_source written."""
    known = [t for t in tags if t]
    if not known:
        return None
    distinct = sorted(set(known))
    kind = FUSED if sources >= 2 else REWRITTEN
    tag = tag_lca(distinct)
    contexts = (
        [{"module": t, "role": metadata.FUSED_ROLE} for t in distinct] if len(distinct) >= 2 else []
    )
    for node in group:
        metadata.set_tag(node, tag, kind)
        metadata.set_contexts(node, contexts)
    return kind
