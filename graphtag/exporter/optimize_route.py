"""Tag before torch.onnx's ONNX optimizer runs, then reconcile the tags it disturbed.

torch.onnx.export (dynamo, ``optimize=True``) runs onnxscript's optimizer after
translating the graph. The optimizer fuses nodes (copying the metadata of one source
node), folds constants and creates nodes without metadata, so tags read from the
optimized graph would be wrong or missing. The optimizer route instead exports with
``optimize=False`` (exact metadata on every node), tags, and runs the very optimization
torch runs (:meth:`torch.onnx.ONNXProgram.optimize`, what torch's exporter calls), in
torch's order: after the opset conversion (done inside torch.onnx.export either way)
and before the input/output renames, which are undone first and redone after. Two
steps of torch's still run before the optimizer here, not after: the renaming of dynamic
axes to the caller's names (a one-to-one renaming of symbolic dims, which the optimizer
only compares for equality, so the order does not matter; the tests check it) and
``verify``/``report``, which see the unoptimized graph.

Merge policy for graphtag's keys after optimizing:

* a node that survived the optimizer (the same node object) keeps its tag;
* a node the optimizer created gets the tags of its *source* nodes: the nodes of the
  unoptimized graph lying between its inputs and its outputs. With two or more sources
  its tag is their lowest common ancestor, ``pkg.graphtag.tag_source`` is ``fused`` and,
  when the sources span several modules, ``pkg.graphtag.contexts`` lists each module with
  role ``fused``; with one source it takes that node's tag (``tag_source`` ``rewritten``);
* a created node without tagged sources keeps no graphtag key; tag propagation (in the
  export pipeline) tags it from its neighbours.

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

import dataclasses
import json
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence

import onnx_ir as ir

from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.core.hierarchy import tag_lca

# pkg.graphtag.tag_source of nodes the optimizer created.
FUSED = "fused"
REWRITTEN = "rewritten"
FUSED_ROLE = "fused"
# Written by torch's rename_inputs / rename_outputs on the renamed graph inputs/outputs.
_ORIGINAL_NAME = "pkg.torch.onnx.original_node_name"


def wants_optimizer_route(dynamo: bool, torch_options: Mapping) -> bool:
    """True when torch.onnx.export would run its optimizer (dynamo, ``optimize`` default)."""
    return bool(dynamo) and bool(torch_options.get("optimize", True))


def unoptimized_options(torch_options: Mapping) -> dict:
    """The caller's torch options with torch's optimizer off (graphtag runs it later)."""
    return {**torch_options, "optimize": False}


@dataclasses.dataclass
class OptimizeStats:
    nodes_before: int
    nodes_after: int
    created: int  # nodes the optimizer created
    fused: int  # created nodes tagged from two or more source nodes
    rewritten: int  # created nodes tagged from one source node
    seconds: float


def optimize_like_torch(model: ir.Model, torch_options: Mapping) -> tuple[ir.Model, OptimizeStats]:
    """Run torch.onnx's optimizer on a tagged, unoptimized export and reconcile the tags.

    ``model`` is what ``torch.onnx.export(..., dynamo=True, optimize=False, **options)``
    returned, already tagged; ``torch_options`` are the caller's options (for the
    ``input_names``/``output_names`` renames, which torch applies after optimizing).
    """
    start = time.perf_counter()
    input_names = list(torch_options.get("input_names") or ())
    output_names = list(torch_options.get("output_names") or ())
    _undo_renames(model, input_names, output_names)
    snapshot = _Snapshot.take(model)
    optimized = _torch_optimize(model)
    stats = reconcile_tags(optimized, snapshot)
    _redo_renames(optimized, input_names, output_names)
    stats.seconds = time.perf_counter() - start
    return optimized, stats


def _torch_optimize(model: ir.Model) -> ir.Model:
    """The optimization torch.onnx.export runs: ``ONNXProgram.optimize`` (in place)."""
    import torch

    program = torch.onnx.ONNXProgram(model, None)
    try:
        program.optimize()
    except Exception as exc:
        raise GraphtagError(
            f"torch's ONNX optimizer failed ({type(exc).__name__}: {exc}); "
            "export with optimize=False (CLI: --no-optimize) to skip it"
        ) from exc
    return program.model


def _rename_passes():
    try:  # torch's own passes, exactly what torch.onnx.export runs
        from torch.onnx._internal.exporter import _ir_passes

        return _ir_passes.rename_inputs, _ir_passes.rename_outputs
    except ImportError:  # pragma: no cover - torch moved them: same behaviour
        return _rename_inputs, _rename_outputs


def _rename_inputs(model: ir.Model, names: Sequence[str]) -> None:
    _rename(model.graph.inputs, names)


def _rename_outputs(model: ir.Model, names: Sequence[str]) -> None:
    _rename(model.graph.outputs, names)


def _rename(values: Iterable[ir.Value], names: Sequence[str]) -> None:
    for value, name in zip(values, names):
        value.metadata_props[_ORIGINAL_NAME] = str(value.name)
        value.name = name


def _undo_renames(model: ir.Model, input_names: list[str], output_names: list[str]) -> None:
    """Give renamed graph inputs/outputs their exporter names back (reverse order)."""
    for values, names in ((model.graph.outputs, output_names), (model.graph.inputs, input_names)):
        for value, _ in zip(values, names):
            original = value.metadata_props.pop(_ORIGINAL_NAME, None)
            if original is not None and original != "None":
                value.name = original


def _redo_renames(model: ir.Model, input_names: list[str], output_names: list[str]) -> None:
    rename_inputs, rename_outputs = _rename_passes()
    if input_names:
        rename_inputs(model, input_names)
    if output_names:
        rename_outputs(model, output_names)


@dataclasses.dataclass
class _Snapshot:
    """The unoptimized graph's structure and tags; holds every object so ids stay unique."""

    nodes: list[ir.Node]
    inputs: list[tuple[ir.Value | None, ...]]
    tags: list[str | None]
    index: dict[int, int]  # id(node) -> position in nodes
    producer: dict[int, int]  # id(value) -> index of the node producing it
    values: list[ir.Value]  # every value seen, kept alive
    graph_outputs: dict[int, tuple[ir.Value, ...]]  # id(graph) -> its outputs

    @classmethod
    def take(cls, model: ir.Model) -> _Snapshot:
        snap = cls([], [], [], {}, {}, [], {})
        for graph in _all_graphs(model):
            snap.graph_outputs[id(graph)] = tuple(graph.outputs)
            snap.values.extend(graph.inputs)
            snap.values.extend(graph.outputs)
        snap.values.extend(model.graph.initializers.values())
        for node in metadata.iter_all_nodes(model):
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


def _all_graphs(model: ir.Model) -> list:
    graphs: list = [model.graph, *model.functions.values()]
    for node in metadata.iter_all_nodes(model):
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                graphs.append(attr.value)
            elif attr.type == ir.AttributeType.GRAPHS:
                graphs.extend(attr.value)
    return graphs


def reconcile_tags(model: ir.Model, snapshot: _Snapshot) -> OptimizeStats:
    """Apply the merge policy to ``model`` (optimized in place from ``snapshot``'s graph)."""
    post = list(metadata.iter_all_nodes(model))
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
    return OptimizeStats(
        nodes_before=len(snapshot.nodes),
        nodes_after=len(post),
        created=len(created),
        fused=fused,
        rewritten=rewritten,
        seconds=0.0,
    )


def _graph_outputs(model: ir.Model) -> dict[int, tuple[int, ir.Graph]]:
    """id(value) -> (position, graph) for every graph output, subgraphs included."""
    found = {}
    for graph in _all_graphs(model):
        for position, value in enumerate(graph.outputs):
            found.setdefault(id(value), (position, graph))
    return found


def _groups(created: list[ir.Node]) -> list[list[ir.Node]]:
    """Created nodes joined through values that a created node produced.

    One rewrite may emit several connected nodes. Two rewrites next to each other also
    join (their values cannot be told apart when no surviving node consumes them): the
    group then gets the LCA of both, which is coarser but never wrong.
    """
    members = {id(node): node for node in created}
    parent = {key: key for key in members}

    def find(key: int) -> int:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for node in created:
        for value in node.inputs:
            producer = value.producer() if value is not None else None
            if producer is not None and id(producer) in members:
                parent[find(id(producer))] = find(id(node))
    groups: dict[int, list[ir.Node]] = {}
    for node in created:
        groups.setdefault(find(id(node)), []).append(node)
    return list(groups.values())


def _sources(group, snapshot: _Snapshot, alive, old_values, graph_outputs) -> list[int]:
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


def _old_equivalents(value: ir.Value, in_group, snapshot: _Snapshot, graph_outputs):
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


def _walk_back(starts, snapshot: _Snapshot, alive, stops) -> set[int]:
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


def _reached_from(stops: set[int], region: set[int], snapshot: _Snapshot) -> set[int]:
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
    for node in group:
        props = node.metadata_props
        props[metadata.MODULE] = tag
        props[metadata.TAG_SOURCE] = kind
        if len(distinct) >= 2:
            contexts = [{"module": t, "role": FUSED_ROLE} for t in distinct]
            props[metadata.CONTEXTS] = json.dumps(contexts, separators=(",", ":"))
        else:
            props.pop(metadata.CONTEXTS, None)
    return kind


def count_exporter_tags(model: ir.Model) -> tuple[int, int]:
    """(nodes tagged from exporter metadata, all nodes) after optimizing.

    Nodes created by the optimizer count when their tag came from their sources.
    """
    tagged = total = 0
    for node in metadata.iter_all_nodes(model):
        total += 1
        source = node.metadata_props.get(metadata.TAG_SOURCE)
        if metadata.node_tag(node) and source in (None, FUSED, REWRITTEN):
            tagged += 1
    return tagged, total
