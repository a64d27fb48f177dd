"""Splice a rewritten extraction back into its model, in place of the nodes it came from.

The inverse of :mod:`graphtag.surgery.extraction` for scoped passes: a module (any set
of main-graph nodes) is extracted as a standalone model, a pass rewrites that model,
and :meth:`Splicer.splice` puts the rewritten nodes where the original ones were.

Rules:

* the boundary stays: the rewritten model's outputs must be the extraction's outputs
  (same names, element types, ranks and static sizes), its inputs a subset of the
  extraction's inputs; anything else is a :class:`~graphtag.core.errors.GraphtagError`
  naming the pass and the value. Outside nodes then read the new producers under the
  same names; the boundary values keep the model's own types, shapes and metadata;
* the rewritten nodes read the model's own values: inputs by name, initializers that
  still hold the very tensor they were extracted with, and the model's Constant nodes
  the extraction copied in (a copy left unchanged is dropped again);
* initializers the pass created or changed are added (original initializers only the
  replaced nodes read are removed); values and nodes whose names clash with the rest
  of the model are renamed (names stay unique across the main graph and its bodies);
* rewritten nodes (and nodes in their bodies) without a tag get the scope's tag
  (``pkg.graphtag.tag_source = inferred:scope``); tags the pass left or wrote stay;
* opset imports the pass added are merged; functions it added are added; a pass that
  changes the version of an imported opset or the body of a function the model already
  has raises (both are shared with the rest of the model). Model and graph metadata
  the pass wrote on the extraction are not carried over.

Two kinds of rewrite are applied to the model's own nodes instead, which
:meth:`Splicer.splice` does when the extraction's origins were given
(``ExtractedIO.of(..., origins)``): the same result, O(scope), with nothing moved or
renamed:

* one that kept every node and edge of the extraction (same nodes, same values, same
  names; it edited attributes, metadata, doc strings or types) is copied onto them;
* one that only *pruned* it (removed nodes, and made the others read values the
  extraction already had, each defined before its reader; what common-subexpression
  elimination does) also removes the model's nodes it dropped and rewires the kept
  ones; the reads it added are returned (``SpliceResult.new_reads``) so the caller can
  tell whether one points forward in an unsorted scope.

The rewritten nodes are inserted before the first original node; the caller sorts the
graph afterwards when the original nodes were interleaved with outside nodes
(:class:`graphtag.pipeline.scoped.Scoped` does). Cost: O(nodes, edges and uses of the
scope and its rewrite), plus one O(model) walk to index names, once per
:class:`Splicer`.
"""

from __future__ import annotations

__all__ = ["SCOPE_TAG_SOURCE", "ExtractedIO", "SpliceResult", "Splicer"]

import dataclasses
from collections.abc import Callable, Iterable, Iterator

import onnx_ir as ir

from graphtag.analysis.boundaries import ModuleBoundary
from graphtag.analysis.signature import Signer
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.core.graphs import subgraph_owners, subgraphs_of

SCOPE_TAG_SOURCE = "inferred:scope"  # tag source of nodes tagged with their scope's module


def _deep(nodes: Iterable[ir.Node]) -> Iterator[ir.Node]:
    """``nodes`` and every node inside their bodies (pre-order)."""
    return iter(_walk(nodes)[0])


def _walk(nodes: Iterable[ir.Node]) -> tuple[list[ir.Node], list[ir.Value]]:
    """``nodes`` and the nodes inside their bodies (pre-order), and every value they
    define (node outputs, body inputs and initializers), in one walk."""
    found: list[ir.Node] = []
    values: list[ir.Value] = []
    stack = list(nodes)[::-1]
    while stack:
        node = stack.pop()
        found.append(node)
        values.extend(node.outputs)
        if node.attributes.data:
            for graph in reversed(subgraphs_of(node)):
                values.extend(graph.inputs)
                values.extend(graph.initializers.values())
                stack.extend(reversed(list(graph)))
    return found, values


@dataclasses.dataclass(frozen=True)
class _Port:
    name: str
    type: ir.TypeProtocol | None
    shape: ir.Shape | None

    @classmethod
    def of(cls, value: ir.Value) -> _Port:
        shape = value.shape.copy() if value.shape is not None else None
        return cls(value.name or "", value.type, shape)

    def difference(self, value: ir.Value) -> str | None:
        """How ``value`` differs from this port (symbolic dimension names may differ, and
        an unknown type, rank or size matches anything), None when compatible."""
        if self.type is not None and value.type is not None and self.type != value.type:
            return f"type {self.type} -> {value.type}"
        old, new = self.shape, value.shape
        if old is None or new is None:
            return None
        if len(old) != len(new):
            return f"shape {old} -> {new}"
        for a, b in zip(old, new):
            if isinstance(a, int) and isinstance(b, int) and a != b:
                return f"shape {old} -> {new}"
        return None


@dataclasses.dataclass
class ExtractedIO:
    """An extraction as given to the pass: its inputs, outputs and the Constant nodes it
    copied from outside the scope (taken before the pass runs; it may edit the model)."""

    inputs: dict[str, _Port]
    outputs: list[_Port]
    # output name -> (the copy in the extraction, its fingerprint when it was made)
    constant_copies: dict[str, tuple[ir.Node, tuple]]
    functions: frozenset[ir.OperatorIdentifier] = frozenset()  # copied from the model
    # input name -> the outputs it is computed from outside the scope (see
    # graphtag.analysis.boundaries.reentrant_inputs): paths the pass must not close.
    reentries: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    wiring: _Wiring | None = None  # given the extraction's origins

    @classmethod
    def of(
        cls,
        extracted: ir.Model,
        boundary: ModuleBoundary,
        reentries: dict[str, set[str]] | None = None,
        origins: list[ir.Node] | None = None,
    ) -> ExtractedIO:
        """``origins``: the source node of each extracted node (Extractor.extract_traced);
        with them, a rewrite that keeps the wiring is copied back onto those nodes."""
        graph = extracted.graph
        nodes = list(graph)
        copied = {v.name for v in boundary.constants if not v.is_initializer()}
        copies: dict[str, tuple[ir.Node, tuple]] = {}
        if copied:
            for node in nodes:
                if not node.inputs and node.outputs and all(v.name in copied for v in node.outputs):
                    fingerprint = _fingerprint(node)
                    for value in node.outputs:
                        copies[value.name or ""] = (node, fingerprint)
        return cls(
            {v.name or "": _Port.of(v) for v in graph.inputs},
            [_Port.of(v) for v in graph.outputs],
            copies,
            frozenset(extracted.functions),
            dict(reentries or {}),
            _Wiring.of(graph, nodes, origins) if origins is not None else None,
        )


class _Wiring:
    """The extraction's nodes and edges as the pass received them, each node paired with
    the model node it was copied from: what tells a rewrite that kept every node and
    edge (it edited attributes, metadata, types) from one that restructured.

    An extraction holding a control-flow body is never "kept" (bodies are not followed).
    """

    def __init__(
        self, nodes: list[ir.Node], origins: list[ir.Node], graph: ir.Graph, edges: list[tuple]
    ) -> None:
        self.nodes = nodes
        self.pairs = list(zip(nodes, origins))
        self.graph_io = (tuple(graph.inputs), tuple(graph.outputs))
        self.initializers = [(v, v.name, v.const_value) for v in graph.initializers.values()]
        self.opsets = dict(graph.opset_imports)
        self.edges = edges
        self.values = [v for edge in self.edges for v in edge[5]]  # outputs, node order
        self.names = [v.name for v in self.values]

    @classmethod
    def of(cls, graph: ir.Graph, nodes: list[ir.Node], origins: list[ir.Node]) -> _Wiring | None:
        """``nodes``: the graph's, in order."""
        if len(nodes) != len(origins):
            return None
        edges = _edges(nodes)
        return None if edges is None else cls(nodes, origins, graph, edges)

    def renamed(self) -> bool:
        """Whether the pass renamed a value the extraction's nodes wrote."""
        return [v.name for v in self.values] != self.names

    def kept(self, graph: ir.Graph) -> bool:
        """Whether ``graph`` (the rewrite) has the same nodes, in the same order, reading
        and writing the same values under the same names, with the same interface."""
        if (tuple(graph.inputs), tuple(graph.outputs)) != self.graph_io:
            return False
        if dict(graph.opset_imports) != self.opsets:
            return False
        initializers = graph.initializers
        if len(initializers) != len(self.initializers) or any(
            initializers.get(name) is not value or value.const_value is not tensor
            for value, name, tensor in self.initializers
        ):
            return False
        nodes = list(graph)  # Nodes and Values compare by identity
        return nodes == self.nodes and _edges(nodes) == self.edges and not self.renamed()

    def pruned(self, graph: ir.Graph) -> list[tuple[ir.Node, ir.Node]] | None:
        """The (rewritten, model) node pairs when ``graph`` (the rewrite) only removed
        nodes and made the others read values the extraction already had (what
        common-subexpression elimination does): the rest of its nodes in their order,
        each with the same op, name and outputs, reading only values defined before it;
        the same outputs; inputs and initializers among the extraction's. None for any
        other rewrite."""
        if tuple(graph.outputs) != self.graph_io[1] or dict(graph.opset_imports) != self.opsets:
            return None
        nodes = list(graph)
        if len(nodes) >= len(self.nodes) or self.renamed():
            return None
        defined: set[ir.Value | None] = {None, *self.graph_io[0]}
        if not defined.issuperset(graph.inputs):
            return None
        original = {name: (value, tensor) for value, name, tensor in self.initializers}
        for name, value in graph.initializers.items():
            if original.get(name) != (value, value.const_value):
                return None
        defined.update(graph.initializers.values())
        index = {node: i for i, node in enumerate(self.nodes)}
        edges, pairs = self.edges, []
        last = -1
        for node in nodes:
            i = index.get(node, -1)
            if i <= last:  # a new node, or one moved
                return None
            last = i
            op, domain, overload, name, inputs, outputs = edges[i]
            reads = node.inputs
            if (
                node.op_type != op
                or node.domain != domain
                or node.overload != overload
                or node.name != name
                or node.outputs != outputs
                or len(reads) != len(inputs)
                or not defined.issuperset(reads)
                or (node.attributes.data and subgraphs_of(node))  # the plain dict: cheaper
            ):
                return None
            defined.update(outputs)
            pairs.append(self.pairs[i])
        return pairs if defined.issuperset(graph.outputs) else None


def _edges(nodes: list[ir.Node]) -> list[tuple] | None:
    """Per node: its op and name, and the values it reads and writes; None when a node
    holds a control-flow body (its wiring is not followed)."""
    edges = []
    for n in nodes:
        if n.attributes.data and subgraphs_of(n):  # the plain dict: cheap for most nodes
            return None
        edges.append((n.op_type, n.domain, n.overload, n.name, n.inputs, n.outputs))
    return edges


def _fingerprint(node: ir.Node) -> tuple:
    """The node's op and its attribute and output objects: the same while a pass has not
    replaced or edited it (onnx_ir replaces attributes and values, it does not edit them).
    The fingerprint holds the objects, so a replacement cannot reuse a freed one's id;
    compare with :func:`_same_fingerprint`."""
    attributes = tuple((k, a, a.value) for k, a in node.attributes.items())
    outputs = tuple((v, v.name) for v in node.outputs)
    return (node.domain, node.op_type, node.overload, attributes, outputs)


def _same_fingerprint(a: tuple, b: tuple) -> bool:
    """Equal op, the same attribute objects (by identity) and the same outputs."""
    if a[:3] != b[:3] or len(a[3]) != len(b[3]) or len(a[4]) != len(b[4]):
        return False
    same_attributes = all(
        k1 == k2 and x1 is x2 and y1 is y2 for (k1, x1, y1), (k2, x2, y2) in zip(a[3], b[3])
    )
    return same_attributes and all(v1 is v2 and n1 == n2 for (v1, n1), (v2, n2) in zip(a[4], b[4]))


@dataclasses.dataclass
class SpliceResult:
    """What a splice did: the new main-graph nodes (graph order) and its counts."""

    nodes: list[ir.Node]
    removed: int  # original nodes taken out
    retagged: int  # new nodes given the scope's tag
    renamed: int  # values and nodes renamed to keep names unique
    initializers_added: int
    initializers_removed: int
    # The rewrite kept (or only pruned) the wiring: applied to the same nodes, none moved.
    in_place: bool = False
    # The new nodes come in dependency order and hold no bodies: where the replaced nodes
    # were contiguous in a sorted graph, the graph stays sorted.
    in_order: bool = False
    # In place: the (node, value) reads a pruning rewrite added; the graph stays sorted
    # if each value is produced before its reader.
    new_reads: list[tuple[ir.Node, ir.Value]] = dataclasses.field(default_factory=list)


class Splicer:
    """Splices rewritten extractions into one model; indexes its names once."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        # Built from the model as it is when first needed (a rewrite bringing a name its
        # scope did not have; most keep or drop names), then kept up to date by every
        # splice's commit.
        self._values = _NameIndex(lambda: _value_names(model.graph))
        self._nodes = _NameIndex(lambda: {n.name for n in _walk(model.graph)[0] if n.name})

    def splice(
        self,
        boundary: ModuleBoundary,
        before: ExtractedIO,
        rewritten: ir.Model,
        *,
        tag: str,
        pass_name: str,
    ) -> SpliceResult:
        """Replace ``boundary.nodes`` by the nodes of ``rewritten`` (see the module doc).

        ``before`` describes the extraction the pass received. Raises GraphtagError
        before touching the model when the boundary, an opset or a function changed.
        """
        model, graph = self.model, self.model.graph
        where = f"pass '{pass_name}' on module {tag}"
        new_graph = rewritten.graph
        outputs = self._check_outputs(where, before, new_graph)
        self._check_inputs(where, before, new_graph)
        _check_reentries(where, before, new_graph)
        new_opsets = self._check_opsets(where, rewritten)
        new_functions = self._check_functions(where, before, rewritten)
        wiring = before.wiring
        if wiring is not None and not new_functions:
            if wiring.kept(new_graph):
                done = self._copy_back(before, rewritten, wiring.pairs, tag)
            elif (pairs := wiring.pruned(new_graph)) is not None:
                done = self._copy_back(before, rewritten, pairs, tag, boundary)
            else:
                done = None
            if done is not None:
                return done

        originals = {v.name: v for v in boundary.inputs}
        constants = {v.name: v for v in boundary.constants}
        mapping: list[tuple[ir.Value, ir.Value]] = [
            (v, originals[v.name]) for v in new_graph.inputs
        ]
        created: list[ir.Value] = []  # initializers to add to the model
        for value in new_graph.initializers.values():
            old = constants.get(value.name)
            if old is not None and old.is_initializer() and value.const_value is old.const_value:
                mapping.append((value, old))
            else:
                created.append(value)
        kept: list[ir.Node] = []
        for node in new_graph:
            copy = before.constant_copies.get(node.outputs[0].name or "") if node.outputs else None
            if (
                copy is not None
                and copy[0] is node
                and not node.inputs
                and _same_fingerprint(_fingerprint(node), copy[1])
            ):  # an outside Constant's copy the pass left alone: the original serves
                mapping.extend((v, constants[v.name]) for v in node.outputs)
            else:
                kept.append(node)

        # Detach everything from the rewritten model, then wire it to the model's values.
        new_graph.outputs.clear()
        new_graph.inputs.clear()
        new_graph.initializers.clear()
        new_graph.remove(list(new_graph))
        for new, old in mapping:
            ir.convenience.replace_all_uses_with(new, old)

        old_nodes = boundary.nodes
        (old_deep, old_values), (new_deep, new_values) = _walk(old_nodes), _walk(kept)
        freed_values = {v.name for v in old_values if v.name}
        freed_nodes = {n.name for n in old_deep if n.name}
        values_taken = _Taken(self._values, freed_values)
        nodes_taken = _Taken(self._nodes, freed_nodes)
        renamed = _unique_names(new_deep, new_values, values_taken, nodes_taken)

        graph.insert_before(old_nodes[0], kept)
        # The replaced nodes stop using the model's values and the outputs handed over
        # below; the other values they read die with them.
        dying = {id(n) for n in old_deep}
        handed = {id(v) for v in boundary.outputs}
        for node in old_deep:
            for i, value in enumerate(node.inputs):
                if value is not None and (id(value.producer()) not in dying or id(value) in handed):
                    node.replace_input_with(i, None)
        for old, (new, port) in zip(boundary.outputs, outputs):
            del port  # checked above; the model's own view of the value wins
            new.type, new.doc_string = old.type, old.doc_string
            new.shape = old.shape.copy() if old.shape is not None else None
            new.metadata_props.clear()
            new.metadata_props.update(old.metadata_props)
            ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
        graph.remove(old_nodes)

        removed_initializers = _drop_unread_initializers(graph, boundary.constants, values_taken)
        for value in created:  # an output the pass made a constant is one of them
            if value.name in values_taken or value.name in graph.initializers:
                value.name = values_taken.fresh(value.name or "initializer", graph.initializers)
                renamed += 1
            graph.register_initializer(value)
            values_taken.add(value.name)

        for domain, version in new_opsets.items():
            model.opset_imports[domain] = version
        renamed += self._add_functions(new_functions, new_deep)
        model.ir_version = max(model.ir_version, rewritten.ir_version)

        retagged = 0
        for node in new_deep:
            if metadata.node_tag(node) is None:
                metadata.set_tag(node, tag, SCOPE_TAG_SOURCE)
                retagged += 1

        values_taken.commit()
        nodes_taken.commit()
        return SpliceResult(
            kept,
            len(old_nodes),
            retagged,
            renamed,
            len(created),
            removed_initializers,
            in_order=len(new_deep) == len(kept) and _in_order(kept),
        )

    def _copy_back(
        self,
        before: ExtractedIO,
        rewritten: ir.Model,
        pairs: list[tuple[ir.Node, ir.Node]],
        tag: str,
        pruned: ModuleBoundary | None = None,
    ) -> SpliceResult | None:
        """A rewrite that kept the wiring, or only ``pruned`` it (removed nodes, made the
        others read values the scope already had), applied to the model's own nodes:
        ``pairs`` are the (rewritten, model) nodes kept. The same result as the full
        splice, without moving nodes or re-indexing names. None (nothing changed) when
        the pass edited a copied outside Constant: such a copy becomes the scope's own,
        which only the full splice does (one it dropped leaves the original alone)."""
        wiring = before.wiring
        assert wiring is not None
        copies = {id(node): mark for node, mark in before.constant_copies.values()}
        kept = {id(new) for new, _ in pairs}
        if any(  # the few copies, not every kept node
            id(node) in kept and not _same_fingerprint(_fingerprint(node), mark)
            for node, mark in before.constant_copies.values()
        ):
            return None
        to_model: dict[ir.Value | None, ir.Value | None] = {None: None}
        if pruned is not None:  # where each value the rewrite reads lives in the model
            # The extraction's values (a node's outputs never change), in node order.
            to_model.update(zip(wiring.values, (v for _, old in wiring.pairs for v in old.outputs)))
            outside = {v.name: v for v in pruned.inputs}
            outside.update((v.name, v) for v in pruned.constants if v.is_initializer())
            graph = rewritten.graph
            to_model.update((v, outside[v.name]) for v in graph.inputs)
            to_model.update((v, outside[v.name]) for v in graph.initializers.values())
        handed = set(rewritten.graph.outputs)  # the model's view of them stays
        nodes: list[ir.Node] = []
        reads: list[tuple[ir.Node, ir.Value]] = []
        retagged = 0
        for new, old in pairs:
            if id(new) in copies:  # an outside Constant's copy left alone: the original serves
                continue
            if pruned is not None:
                for i, (value, own) in enumerate(zip(new.inputs, old.inputs)):
                    target = to_model[value]
                    if own is not target:
                        old.replace_input_with(i, target)
                        if target is not None:
                            reads.append((old, target))
            _copy_node(new, old)
            for value, own in zip(new.outputs, old.outputs):
                if value not in handed:
                    _copy_value(value, own)
            if metadata.node_tag(old) is None:
                metadata.set_tag(old, tag, SCOPE_TAG_SOURCE)
                retagged += 1
            nodes.append(old)
        # A dropped copy of an outside Constant leaves the original where it is.
        removed = [
            old for new, old in wiring.pairs if id(new) not in kept and id(new) not in copies
        ]
        removed_initializers = 0
        if removed:
            graph = self.model.graph
            # Only removed nodes read their outputs: what outside the scope reads is a
            # boundary output, which pruned() found on a kept node. So no use check, only
            # the detaching of their inputs that safe=True would also do.
            for node in removed:
                for i in range(len(node.inputs)):
                    node.replace_input_with(i, None)
            graph.remove(removed)
            if pruned is not None:
                removed_initializers = _drop_unread_initializers(
                    graph, pruned.constants, self._values
                )
        self.model.ir_version = max(self.model.ir_version, rewritten.ir_version)
        return SpliceResult(
            nodes,
            len(removed),
            retagged,
            0,
            0,
            removed_initializers,
            in_place=True,
            in_order=True,
            new_reads=reads,
        )

    # -- checks (nothing is changed before they pass) -------------------------------------

    @staticmethod
    def _check_outputs(
        where: str, before: ExtractedIO, graph: ir.Graph
    ) -> list[tuple[ir.Value, _Port]]:
        by_name = {v.name: v for v in graph.outputs}
        expected = {p.name for p in before.outputs}
        for value in graph.outputs:
            if value.name not in expected:
                raise GraphtagError(
                    f"{where}: added the boundary output '{value.name}' (a scoped pass must "
                    "keep the module's outputs)"
                )
        found = []
        for port in before.outputs:
            value = by_name.get(port.name)
            if value is None:
                raise GraphtagError(
                    f"{where}: removed or renamed the boundary value '{port.name}' (a scoped "
                    "pass must keep the module's outputs)"
                )
            change = port.difference(value)
            if change:
                raise GraphtagError(f"{where}: changed the boundary value '{port.name}': {change}")
            if value.is_graph_input():
                raise GraphtagError(
                    f"{where}: made the boundary value '{port.name}' the module's input "
                    "(outside nodes would read it under another name)"
                )
            found.append((value, port))
        if len(graph.outputs) != len(before.outputs):
            raise GraphtagError(f"{where}: changed the number of the module's outputs")
        return found

    @staticmethod
    def _check_inputs(where: str, before: ExtractedIO, graph: ir.Graph) -> None:
        for value in graph.inputs:
            port = before.inputs.get(value.name or "")
            if port is None:
                raise GraphtagError(
                    f"{where}: added the input '{value.name}' to the module (a scoped pass "
                    "must keep the module's inputs)"
                )
            change = port.difference(value)
            if change:
                raise GraphtagError(f"{where}: changed the boundary value '{value.name}': {change}")

    def _check_opsets(self, where: str, rewritten: ir.Model) -> dict[str, int]:
        added = {}
        for domain, version in rewritten.opset_imports.items():
            current = self.model.opset_imports.get(domain)
            if current is None:
                added[domain] = version
            elif current != version:
                label = domain or "ai.onnx"
                raise GraphtagError(
                    f"{where}: changed the opset of domain '{label}' from {current} to "
                    f"{version}; the rest of the model keeps {current}"
                )
        return added

    def _check_functions(
        self, where: str, before: ExtractedIO, rewritten: ir.Model
    ) -> list[ir.Function]:
        """The functions the pass created; raises when it changed one the model shares."""
        added = []
        for key, function in rewritten.functions.items():
            if key not in before.functions:
                added.append(function)
                continue
            current = self.model.functions.get(key)
            if current is not None and _function_signature(current) != _function_signature(
                function
            ):
                raise GraphtagError(
                    f"{where}: changed the local function '{function.name}', which the "
                    "rest of the model shares; a scoped pass leaves functions alone"
                )
        return added

    def _add_functions(self, functions: list[ir.Function], deep_nodes: list[ir.Node]) -> int:
        """Add the pass's new functions, renaming those whose name the model already uses
        (another scope's function of the same name); returns how many were renamed."""
        if not functions:
            return 0
        model = self.model
        renames: dict[ir.OperatorIdentifier, str] = {}
        taken = {key[:2] for key in model.functions}
        for function in functions:
            key = function.identifier()
            if (key[0], key[1]) in taken:
                suffix = 1
                while (key[0], f"{key[1]}_{suffix}") in taken:
                    suffix += 1
                renames[key] = f"{key[1]}_{suffix}"
                function.name = renames[key]
            taken.add(function.identifier()[:2])
        if renames:  # the calls follow their function
            for node in [*deep_nodes, *(n for f in functions for n in _deep(f))]:
                new_name = renames.get(node.op_identifier())
                if new_name is not None:
                    node.op_type = new_name
        for function in functions:
            model.functions[function.identifier()] = function
        return len(renames)


def _in_order(nodes: list[ir.Node]) -> bool:
    """Whether no node reads a value that a later one of ``nodes`` produces."""
    later = {id(n) for n in nodes}
    for node in nodes:
        later.discard(id(node))
        for value in node.inputs:
            if value is not None and id(value.producer()) in later:
                return False
    return True


def _copy_node(new: ir.Node, old: ir.Node) -> None:
    """What a rewrite keeping the wiring may have changed on ``new``, onto ``old``."""
    attributes, edited = old.attributes.data, new.attributes.data  # Attr's == reads values
    changed = len(attributes) != len(edited)
    if not changed:
        for key, attribute in edited.items():  # a loop, not any(): one per kept node
            if attributes.get(key) is not attribute:
                changed = True
                break
    if changed:
        old.attributes.clear()
        old.attributes.update(edited)
    props, new_props = old.metadata_props, new.metadata_props
    if props != new_props:
        props.clear()
        props.update(new_props)
    old.doc_string = new.doc_string


def _copy_value(new: ir.Value, old: ir.Value) -> None:
    old.type, old.doc_string = new.type, new.doc_string
    old.shape = new.shape
    if old.const_value is not new.const_value:
        old.const_value = new.const_value
    props, new_props = old.metadata_props, new.metadata_props
    if props != new_props:
        props.clear()
        props.update(new_props)


def _check_reentries(where: str, before: ExtractedIO, graph: ir.Graph) -> None:
    """Raise when the rewrite reads an input on the way to an output that, outside the
    scope, computes that input: spliced back, the graph would have a cycle."""
    if not before.reentries:
        return
    owners: dict[ir.Node, ir.Node] | None = None
    for value in graph.inputs:
        targets = before.reentries.get(value.name or "")
        if not targets:
            continue
        seen: set[int] = set()
        stack = [value]
        while stack:
            current = stack.pop()
            if current.name in targets and current.is_graph_output():
                raise GraphtagError(
                    f"{where}: made the output '{current.name}' depend on the input "
                    f"'{value.name}', which outside the module is computed from that output "
                    "(the module runs more than once, or its data leaves and re-enters it); "
                    "spliced back, the graph would have a cycle"
                )
            for use in current.uses():
                node = use.node
                if node.graph is not graph:
                    if owners is None:
                        owners = subgraph_owners(graph)
                    node = owners.get(node, node)
                if id(node) not in seen:
                    seen.add(id(node))
                    stack.extend(node.outputs)


def _value_names(graph: ir.Graph) -> set[str]:
    """Every value name of ``graph`` and its bodies."""
    names = {v.name for v in graph.inputs if v.name}
    names.update(name for name in graph.initializers if name)
    names.update(v.name for v in _walk(graph)[1] if v.name)
    return names


def _drop_unread_initializers(
    graph: ir.Graph, constants: Iterable[ir.Value], names: _NameIndex | _Taken
) -> int:
    """Remove the initializers among ``constants`` that nothing reads any more (and that
    are not graph inputs or outputs), their names from ``names``; returns how many."""
    removed = 0
    for value in constants:
        if (
            value.is_initializer()
            and not value.uses()
            and not value.is_graph_input()
            and not value.is_graph_output()
        ):
            graph.initializers.pop(value.name)
            names.discard(value.name)
            removed += 1
    return removed


class _NameIndex:
    """The names in use in a model, built on first use."""

    def __init__(self, build: Callable[[], set[str]]) -> None:
        self._build = build
        self.names: set[str] | None = None

    def get(self) -> set[str]:
        if self.names is None:
            self.names = self._build()
        return self.names

    def discard(self, name: str | None) -> None:
        """``name`` is no longer in use (nothing to do while the index is not built)."""
        if self.names is not None:
            self.names.discard(name or "")


class _Taken:
    """The names in use in the model while a splice runs: the ``index`` minus the
    ``freed`` ones of the replaced nodes, plus those the splice adds (no O(model) copy;
    a name the replaced nodes had is free without looking at the index)."""

    def __init__(self, index: _NameIndex, freed: set[str]) -> None:
        self.index, self.freed = index, freed
        self.added: set[str] = set()

    def __contains__(self, name: object) -> bool:
        if name in self.added:
            return True
        return name not in self.freed and name in self.index.get()

    def add(self, name: str | None) -> None:
        if name:
            self.added.add(name)

    def discard(self, name: str | None) -> None:
        """``name`` is no longer in use (a removed initializer's)."""
        self.added.discard(name or "")
        self.index.discard(name)

    def fresh(self, name: str, *also: Iterable[str]) -> str:
        """``name_1``, ``name_2``, ... the first not in use (nor in ``also``)."""
        suffix = 1
        while (candidate := f"{name}_{suffix}") in self or any(candidate in s for s in also):
            suffix += 1
        self.added.add(candidate)
        return candidate

    def commit(self) -> None:
        """Make the index, if built, the model's names after the splice."""
        names = self.index.names
        if names is not None:
            names -= self.freed
            names |= self.added


def _unique_names(
    deep_nodes: list[ir.Node], defined: list[ir.Value], values: _Taken, node_names: _Taken
) -> int:
    """Rename the values ``defined`` by ``deep_nodes`` (a :func:`_walk`), and the nodes,
    whose names the rest of the model uses; record every name kept. Returns the renames."""
    renamed = 0
    own = {v.name for v in defined if v.name}
    for value in defined:
        if value.name and value.name in values:
            value.name = values.fresh(value.name, own)
            renamed += 1
        else:
            values.add(value.name)
    for node in deep_nodes:
        if node.name and node.name in node_names:
            node.name = node_names.fresh(node.name)
            renamed += 1
        else:
            node_names.add(node.name)
    return renamed


def _function_signature(function: ir.Function) -> str:
    return Signer(by_name=True).graph(function)
