"""Extract a module of a tagged model as a standalone ONNX model (torch-free).

The extracted model of module ``T`` (see :mod:`graphtag.analysis.boundaries`):

* inputs: ``T``'s external inputs, outputs: its external outputs, both under their
  original value names, typed and shaped (from the values, a Constant's output from its
  tensor, else from ONNX shape inference on the full model, run at most once per
  :class:`Extractor`);
* nodes: ``T``'s nodes in graph (topological) order, with their control-flow bodies;
* initializers ``T`` reads stay initializers (the tensor objects are shared with the
  source model, never copied); outputs of input-free nodes outside ``T`` (Constant) are
  copied in as nodes, so they never become inputs;
* the model's opset imports, ir_version, producer, metadata and node/value metadata, the
  local functions its nodes call (transitively), plus ``pkg.graphtag.extracted_module``;
  ``pkg.graphtag.consumers``, where a value carries it, is rewritten for the extracted
  graph (the modules outside are gone: an output is used by nothing inside it), so the
  extracted model validates like any other;
* not the source graph's own metadata: it describes that whole graph (torch's exporter
  stores the program's signature there, every parameter and input: O(model) bytes in
  each extracted file, and wrong for the extraction).

The source model is never modified: the result is a clone (``ir.GraphView.clone``),
O(size of the module). Weights loaded lazily from a data file beside the source stay
references to that file: nothing reads them here, and ``graphtag.save`` copies the ones
the module uses (only those byte ranges) into the extracted model's own data file.

A module called more than once carries the same tag on every call (the exporter records
the same scope), so its extraction holds all the calls: the first call's output feeds
the second inside the extracted model. Nodes inside control-flow bodies belong to the
enclosing node: a tag found only inside bodies cannot be extracted on its own (the error
says so), nor can a module whose outputs nothing outside it reads.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import io
import os
from collections.abc import Iterable, Iterator, Mapping

import onnx_ir as ir

from graphtag.analysis.boundaries import (
    ModuleBoundary,
    ancestors_and_self,
    compute_boundaries,
    module_boundaries,
)
from graphtag.analysis.kahn import CycleError, topological_order
from graphtag.analysis.manager import hierarchy
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError, first_line
from graphtag.core.graphs import iter_all_nodes, iter_values, subgraph_owners, subgraphs_of
from graphtag.core.hierarchy import Hierarchy

__all__ = ["EXTRACTED_MODULE", "Extractor", "extract_all", "extract_module"]

EXTRACTED_MODULE = metadata.EXTRACTED_MODULE  # re-exported: the key extraction writes
# Model metadata keys that describe the source model only and are dropped on extraction.
_SOURCE_ONLY_KEYS = (metadata.BOUNDARIES,)


def extract_module(
    model: ir.Model, tag: str, *, boundaries: Mapping[str, ModuleBoundary] | None = None
) -> ir.Model:
    """The module tagged ``tag`` as a standalone model (``model`` is left unchanged).

    ``boundaries`` (from :func:`graphtag.analysis.boundaries.compute_boundaries`) avoids a
    recomputation when extracting several modules. Raises GraphtagError for an unknown
    tag (naming the closest existing ones) or a module that has no nodes.
    """
    if boundaries is None:
        boundaries = compute_boundaries(model, [tag])
    return Extractor(model, boundaries).extract(tag)


def extract_all(
    model: ir.Model,
    tags: Iterable[str] | None = None,
    *,
    boundaries: Mapping[str, ModuleBoundary] | None = None,
) -> Iterator[tuple[str, ir.Model]]:
    """``(tag, extracted model)`` for every module (or the given ``tags``), parents first.

    Boundaries are computed once for all modules (the cached analysis
    :func:`~graphtag.analysis.boundaries.module_boundaries`); the total cost is
    O((nodes + edges) x hierarchy depth). ``model`` must not change meanwhile.
    """
    if boundaries is None:
        boundaries = module_boundaries(model)
    extractor = Extractor(model, boundaries)
    for tag in list(boundaries) if tags is None else list(tags):
        yield tag, extractor.extract(tag)


class Extractor:
    """Extracts modules of one model; shares shape inference and the function index."""

    def __init__(self, model: ir.Model, boundaries: Mapping[str, ModuleBoundary]) -> None:
        self.model = model
        self.boundaries = boundaries
        self._inferred: dict[str, dict[str, tuple[ir.TypeProtocol | None, ir.Shape | None]]] = {}

    def extract(self, tag: str) -> ir.Model:
        return self.extract_traced(tag)[0]

    def extract_traced(
        self, tag: str, *, for_rewrite: bool = False, with_hierarchy: bool = True
    ) -> tuple[ir.Model, list[ir.Node]]:
        """:meth:`extract`, plus the source node of each node of the extracted main graph
        (graph order): the modules' own nodes and the outside Constants copied in.

        ``for_rewrite``: the extraction is handed to a pass and spliced back, never
        saved. Consumer records are then made true only where the extraction changed
        who reads a value (its inputs, outputs, initializers and copied Constants); an
        internal value has the same readers as in the source, so it keeps the source's
        record, as the pass would see it on the whole model. ``with_hierarchy=False``:
        no module hierarchy, for a pass that does not read it.
        """
        boundary = self.boundaries.get(tag)
        if boundary is None or not boundary.nodes:
            raise missing_module_error(self.model, tag, self.boundaries)
        if not boundary.outputs:
            raise GraphtagError(
                f"module {tag}: none of its {len(boundary.nodes)} node(s) produces a value "
                "used outside it or a graph output; there is nothing to extract"
            )
        source = self.model
        initializers = [v for v in boundary.constants if v.is_initializer()]
        constant_nodes: list[ir.Node] = []
        seen: set[int] = set()
        for value in boundary.constants:
            producer = value.producer()
            if not value.is_initializer() and producer is not None and id(producer) not in seen:
                seen.add(id(producer))
                constant_nodes.append(producer)
        for value in [*boundary.inputs, *boundary.outputs]:
            if not value.name:
                raise GraphtagError(f"module {tag}: a boundary value has no name")
        origins = _ordered(tag, [*constant_nodes, *boundary.nodes])
        view = ir.GraphView(
            boundary.inputs,
            boundary.outputs,
            nodes=origins,
            initializers=initializers,
            opset_imports=dict(source.graph.opset_imports),
            name=tag,
        )
        try:
            graph = view.clone()
        except (RuntimeError, ValueError) as exc:
            # onnx_ir refuses a value owned by two graphs: the input wires a value of a
            # subgraph into another graph (a damaged file), the model's problem, not ours.
            cause = exc.__cause__ or exc
            reason = first_line(cause)
            raise GraphtagError(
                f"module {tag}: cannot be extracted, the graph is malformed ({reason})"
            ) from exc
        self._complete_types(tag, [*graph.inputs, *graph.outputs])
        props = {k: v for k, v in source.metadata_props.items() if k not in _SOURCE_ONLY_KEYS}
        extracted = ir.Model(
            graph,
            ir_version=source.ir_version,
            producer_name=source.producer_name,
            producer_version=source.producer_version,
            domain=source.domain,
            model_version=source.model_version,
            doc_string=source.doc_string,
            functions=[f.clone() for f in self._functions_called(boundary.nodes)],
            metadata_props=props,
        )
        if with_hierarchy:
            tree = self._hierarchy_of(extracted, tag)
            if tree is not None:
                tree.attach(extracted)
        else:
            extracted.metadata_props.pop(metadata.HIERARCHY, None)
        metadata.set_extracted_module(extracted, tag)
        # Only the module's nodes use its values now (its outputs: nothing inside it).
        if for_rewrite:
            copies = {id(n) for n in constant_nodes}
            metadata.refresh_consumers(
                [
                    *graph.inputs,
                    *graph.outputs,
                    *graph.initializers.values(),
                    *(v for n, o in zip(graph, origins) if id(o) in copies for v in n.outputs),
                ]
            )
        else:
            metadata.refresh_consumers(iter_values(extracted))
        return extracted, origins

    @functools.cached_property
    def _hierarchy_index(self) -> _HierarchyIndex | None:
        """The source's hierarchy indexed once: outside an analysis scope hierarchy()
        parses the JSON anew."""
        tree = hierarchy(self.model)
        return None if tree is None else _HierarchyIndex(tree)

    def _hierarchy_of(self, extracted: ir.Model, tag: str) -> Hierarchy | None:
        """The source's hierarchy cut to the module's subtree, the modules whose tags the
        extracted nodes carry (a copied Constant keeps its own) and their ancestors, with
        their module names: what a pass on the extraction can see.

        The whole hierarchy in every file would make ``extract --all`` quadratic: on a
        100k-node model it is ~4 MB, written once per module. O(subtree + nodes x depth)
        per call after an O(hierarchy) index built once per source.
        """
        index = self._hierarchy_index
        if index is None:
            return None
        return index.cut(tag, _tags_and_ancestors(iter_all_nodes(extracted)))

    def _functions_called(self, nodes: Iterable[ir.Node]) -> list[ir.Function]:
        """Local functions called by ``nodes`` or their bodies, transitively, model order."""
        functions = self.model.functions
        if not functions:
            return []
        needed: set[ir.OperatorIdentifier] = set()
        stack = list(nodes)
        while stack:
            node = stack.pop()
            for graph in subgraphs_of(node):
                stack.extend(graph)
            key = node.op_identifier()
            if key in functions and key not in needed:
                needed.add(key)
                stack.extend(functions[key])
        return [f for key, f in functions.items() if key in needed]

    def _complete_types(self, tag: str, values: list[ir.Value]) -> None:
        """Give boundary values lacking a type or shape the ones shape inference finds.

        ONNX requires both of a model's inputs and outputs (a shape may have unknown
        dimensions, not an unknown rank). ONNX's inference first; for what it leaves
        without a shape (a Loop's loop-carried outputs), ONNX Runtime's symbolic one.
        """
        missing = [v for v in values if v.type is None or v.shape is None]
        for value in missing:  # a Constant's output: its tensor says (no model-wide inference)
            tensor = _constant_tensor(value)
            if tensor is not None:
                if value.type is None:
                    value.type = ir.TensorType(tensor.dtype)
                if value.shape is None:
                    value.shape = ir.Shape(tensor.shape)
        missing = [v for v in missing if v.type is None or v.shape is None]
        for symbolic in (False, True):
            if not missing:
                return
            inferred = self._inferred_types(symbolic)
            for value in missing:
                found_type, found_shape = inferred.get(value.name or "", (None, None))
                if value.type is None:
                    value.type = found_type
                if value.shape is None and found_shape is not None:
                    value.shape = found_shape
            missing = [v for v in missing if v.type is None or v.shape is None]
        untyped = [v.name for v in missing if v.type is None]
        unshaped = [v.name for v in missing if v.type is not None]
        for names, what in ((untyped, "type"), (unshaped, "shape (rank)")):
            if names:
                shown = ", ".join(map(str, names[:5])) + (" ..." if len(names) > 5 else "")
                raise GraphtagError(
                    f"module {tag}: no {what} known for boundary value(s) {shown}, even after "
                    "shape inference on the full model; add value_info for them"
                )

    def _inferred_types(
        self, symbolic: bool = False
    ) -> dict[str, tuple[ir.TypeProtocol | None, ir.Shape | None]]:
        key = "symbolic" if symbolic else "onnx"
        if key not in self._inferred:
            self._inferred[key] = infer_main_graph_types(self.model, symbolic=symbolic)
        return self._inferred[key]


class _HierarchyIndex:
    """A hierarchy's pre-order positions, children and module names, for cutting it."""

    def __init__(self, tree: Hierarchy) -> None:
        self.tree = tree
        self.position = {t: i for i, t in enumerate(tree.modules)}
        self.children: dict[str, list[str]] = {}
        self.names: dict[str, list[str]] = {}
        for t, info in tree.modules.items():
            if info.parent is not None:
                self.children.setdefault(info.parent, []).append(t)
        for name, owner in tree.name_to_tag.items():
            self.names.setdefault(owner, []).append(name)

    def cut(self, tag: str, needed: set[str]) -> Hierarchy:
        """``tag``'s subtree, the root and ``needed``, in the hierarchy's order."""
        tree = self.tree
        keep = {tree.root, *needed}
        stack = [tag] if tag in tree.modules else []
        while stack:
            current = stack.pop()
            keep.add(current)
            stack.extend(self.children.get(current, ()))
        kept = sorted((t for t in keep if t in self.position), key=self.position.__getitem__)
        return Hierarchy(
            {t: tree.modules[t] for t in kept},
            {name: t for t in kept for name in self.names.get(t, ())},
            tree.filter_config,
        )


def _constant_tensor(value: ir.Value) -> ir.TensorProtocol | None:
    """The tensor a Constant node (or an initializer) gives ``value``; None for anything
    else, or a Constant onnx_ir cannot read (a sparse value, a malformed node)."""
    try:
        return ir.convenience.get_const_tensor(value)
    except ValueError:
        return None


def _ordered(tag: str, nodes: list[ir.Node]) -> list[ir.Node]:
    """The module's nodes in dependency order (the source graph may not be sorted)."""
    try:
        return topological_order(nodes)
    except CycleError as error:
        names = ", ".join(nodes[i].name or nodes[i].op_type for i in error.cycle[:5])
        raise GraphtagError(
            f"module {tag}: its nodes form a cycle ({names}); the graph is not a valid "
            "ONNX model (graphtag validate: cycles)"
        ) from None


def infer_main_graph_types(
    model: ir.Model, *, symbolic: bool = False
) -> dict[str, tuple[ir.TypeProtocol | None, ir.Shape | None]]:
    """Value name -> (type, shape) from ONNX shape inference, without touching ``model``.

    Large initializers are passed as typed graph inputs so no weight is serialized. With
    ``symbolic``, ONNX Runtime's symbolic shape inference runs instead: slower, but it
    keeps the rank of a Loop's loop-carried outputs, which ONNX's drops. On failure the
    result is empty (callers then report the untyped values).
    """
    import onnx

    graph = model.graph
    small, large = [], []
    for value in graph.initializers.values():
        tensor = value.const_value
        typed = value.type is not None and value.shape is not None
        heavy = tensor is None or tensor.nbytes > 1024
        if heavy and typed and not value.is_graph_input():
            large.append(value)
        else:
            small.append(value)
    view = ir.GraphView(
        [*graph.inputs, *large],
        graph.outputs,
        nodes=graph,
        initializers=small,
        opset_imports=dict(graph.opset_imports),
        name=graph.name,
    )
    light = ir.Model(
        view,
        ir_version=model.ir_version,
        functions=list(model.functions.values()),
    )
    try:
        proto = ir.serde.serialize_model(light)
        if symbolic:
            proto = _symbolic_shape_inference(proto)
            if proto is None:  # it returns None when it gives up
                return {}
        else:
            proto = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # inference is best effort; the caller names what stays untyped
        return {}
    found: dict[str, tuple[ir.TypeProtocol | None, ir.Shape | None]] = {}
    for info in [*proto.graph.value_info, *proto.graph.output, *proto.graph.input]:
        if info.HasField("type"):
            found[info.name] = (
                ir.serde.deserialize_type_proto_for_type(info.type),
                ir.serde.deserialize_type_proto_for_shape(info.type),
            )
    return found


# ONNX Runtime's symbolic shape inference saves the model under this name in the current
# directory when it cannot infer every shape, then raises.
_ORT_LEFTOVER = "sym_shape_infer_temp.onnx"


def _symbolic_shape_inference(proto):
    """ONNX Runtime's symbolic shape inference on ``proto``, without its leftovers: what it
    prints when it gives up, and the copy of the model it writes into the current
    directory then (removed unless a file of that name was there before)."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    existed = os.path.lexists(_ORT_LEFTOVER)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return SymbolicShapeInference.infer_shapes(proto, auto_merge=True)
    finally:
        if not existed:
            with contextlib.suppress(OSError):
                os.remove(_ORT_LEFTOVER)


def missing_module_error(
    model: ir.Model, tag: str, boundaries: Mapping[str, ModuleBoundary]
) -> GraphtagError:
    """Why ``tag`` cannot be extracted: no nodes, only inside bodies, or unknown."""
    known = set(boundaries) | _main_graph_tags(model)
    if tag in known and tag not in boundaries:
        return GraphtagError(f"module {tag}: not in the boundaries given (computed for other tags)")
    if tag in known:
        return GraphtagError(f"module {tag} has no nodes in the graph; there is nothing to extract")
    enclosing = _body_owners(model, tag)
    if enclosing:
        names = ", ".join(sorted(enclosing)[:3])
        return GraphtagError(
            f"module {tag} only tags nodes inside control-flow bodies (of node(s) {names}); "
            "a body belongs to its enclosing node: extract that node's module instead"
        )
    tree = hierarchy(model)
    if tree is not None and tag in tree:
        return GraphtagError(
            f"module {tag} has no nodes in the graph (it was not executed, or its "
            "computation was folded away); there is nothing to extract"
        )
    candidates = sorted(known | (set(tree.modules) if tree else set()))
    close = difflib.get_close_matches(tag, candidates, n=5, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else ""
    if not candidates:
        hint = "; the model has no tagged nodes"
    return GraphtagError(f"unknown module tag {tag!r}{hint}")


def _main_graph_tags(model: ir.Model) -> set[str]:
    return _tags_and_ancestors(model.graph)


def _tags_and_ancestors(nodes: Iterable[ir.Node]) -> set[str]:
    """The tags ``nodes`` carry and every ancestor of them: O(nodes + distinct tags x depth)."""
    tags: set[str] = set()
    for node in nodes:
        tag = metadata.node_tag(node)
        if tag and tag not in tags:
            tags.update(ancestors_and_self(tag))
    return tags


def _body_owners(model: ir.Model, tag: str) -> set[str]:
    """Names (or tags) of main-graph nodes whose bodies hold nodes inside module ``tag``."""
    return {
        owner.name or metadata.node_tag(owner) or owner.op_type
        for inner, owner in subgraph_owners(model.graph).items()
        if (inner_tag := metadata.node_tag(inner)) and tag in ancestors_and_self(inner_tag)
    }
