"""Scoped passes on hand-built models: the splice rules, errors, native passes, parsing."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from cli_helpers import assert_clean_failure, run_cli
from onnx_builders import run_ort
from scoped_builders import FLOAT, called_twice, layers, views, with_body

import graphtag
from graphtag.analysis.boundaries import module_boundaries
from graphtag.analysis.selection import select
from graphtag.checks.compare import compare_topology
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError, PipelineError
from graphtag.core.graphs import iter_values
from graphtag.passes.boundary_detection import BoundaryDetectionPass
from graphtag.passes.multi_consumer import MultiConsumerPass
from graphtag.passes.namespace import NamespacePass
from graphtag.passes.residual_resolution import ResidualResolutionPass
from graphtag.passes.tag_propagation import TagPropagationPass
from graphtag.pipeline import (
    Pipeline,
    Scoped,
    ScopedPassError,
    load_pipeline_toml,
    parse_pipeline,
    registry,
)
from graphtag.surgery.extraction import Extractor
from graphtag.surgery.splice import SCOPE_TAG_SOURCE

FEEDS = {"x": np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)}


def cse() -> ir.passes.PassBase:
    return registry().get("ir.common-subexpression-elimination").create({})


def check_clean(model: ir.Model, reference: ir.Model, feeds=FEEDS) -> None:
    """ONNX checker (full) and ONNX Runtime outputs equal to the reference's."""
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    for got, want in zip(run_ort(model, feeds), run_ort(reference, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def outside_changes(before: dict, after: dict, inside: set[str]) -> list[str]:
    return [name for name, view in before.items() if name not in inside and after.get(name) != view]


# -- the generic path: extract, run, splice ---------------------------------------------


def test_cse_on_one_layer_changes_that_layer_only():
    model, reference = layers(3), layers(3)
    before = views(model)
    inside = {n.name for n in select(model, "*/Layer.1").nodes}
    result = Scoped(cse(), "*/Layer.1")(model)
    assert result.modified
    assert result.stats["scopes"] == 1 and result.stats["nodes_removed"] == 1
    assert result.stats["nodes_added"] == 0  # the duplicate Relu merged, in place
    after = views(model)
    assert not outside_changes(before, after, inside)
    for tag, count in (("/M/Layer.0", 2), ("/M/Layer.1", 1), ("/M/Layer.2", 2)):
        relus = [n for n in model.graph if n.op_type == "Relu" and metadata.node_tag(n) == tag]
        assert len(relus) == count, tag
    # The surviving nodes keep their names, tags and metadata; no node lost its tag.
    assert all(metadata.node_tag(n) for n in model.graph)
    assert set(after) - set(before) == set()
    check_clean(model, reference)
    # Nothing left to merge: modified=False and the model as it was.
    again = views(model)
    assert not Scoped(cse(), "*/Layer.1")(model).modified
    assert views(model) == again


def test_unscoped_cse_would_merge_every_layer():
    model = layers(3)
    cse()(model)
    assert sum(n.op_type == "Relu" for n in model.graph) == 3


def insert_identity(
    graph: ir.Graph, source: ir.Node, name: str, value_name: str, *, at: ir.Node | None = None
) -> None:
    """An untagged Identity of ``source``'s first output, read by all its users instead;
    placed after ``source``, or before ``at``."""
    value = source.outputs[0]
    uses = list(value.uses())
    identity = ir.Node("", "Identity", [value], name=name, num_outputs=1)
    identity.outputs[0].name, identity.outputs[0].type = value_name, value.type
    if at is None:
        graph.insert_after(source, identity)
    else:
        graph.insert_before(at, identity)
    for use in uses:
        use.node.replace_input_with(use.idx, identity.outputs[0])


class InsertIdentityPass(ir.passes.InPlacePass):
    """Put an untagged Identity after the first node of the graph."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        insert_identity(model.graph, next(iter(model.graph)), "inserted", "inserted_out")
        return ir.passes.PassResult(model, True)


def test_new_nodes_get_the_scope_tag_and_unique_names():
    model, reference = layers(2), layers(2)
    Scoped(InsertIdentityPass(), "*/Layer.0|*/Layer.1")(model)
    inserted = [n for n in model.graph if n.op_type == "Identity"]
    assert sorted(n.name for n in inserted) == ["inserted", "inserted_1"]
    assert sorted(metadata.node_tag(n) for n in inserted) == ["/M/Layer.0", "/M/Layer.1"]
    assert {metadata.tag_source(n) for n in inserted} == {SCOPE_TAG_SOURCE}
    names = [v.name for n in model.graph for v in n.outputs]
    assert len(names) == len(set(names))  # the second scope's value was renamed
    check_clean(model, reference)


def test_a_constant_read_from_outside_comes_back_to_the_model_once():
    model, reference = layers(2), layers(2)
    lift = registry().get("ir.lift-constants-to-initializers").create({"size_limit": 1})
    before = views(model)
    result = Scoped(lift, "*/Layer.0")(model)
    assert result.modified
    # The copy of the outside Constant became an initializer of layer 0 only; the
    # Constant node itself (outside) is untouched and still feeds layer 1.
    assert before["n0_Constant"] == views(model)["n0_Constant"]
    lifted = [v for v in model.graph.initializers.values() if v.name.startswith("v0")]
    assert [v.name for v in lifted] == ["v0_1"]
    assert {u.node.name for u in lifted[0].uses()} == {"n6_Mul"}
    check_clean(model, reference)


class DoubleConstantsPass(ir.passes.InPlacePass):
    """Replace the tensor of every Constant by twice its value (a new attribute)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        doubled = 0
        for node in model.graph:
            if node.op_type == "Constant":
                array = node.attributes["value"].as_tensor().numpy() * 2
                node.attributes["value"] = ir.AttrTensor("value", ir.tensor(array))
                doubled += 1
        return ir.passes.PassResult(model, doubled > 0)


def test_a_constant_copy_the_pass_edited_stays_the_scope_own():
    """The copy of an outside Constant is handed back to the original only when the pass
    left it as it was; an edited copy is spliced in, the outside Constant unchanged."""
    model, reference = layers(2), layers(2)
    before = views(model)
    result = Scoped(DoubleConstantsPass(), "*/Layer.0")(model)
    assert result.modified
    after = views(model)
    assert after["n0_Constant"] == before["n0_Constant"]
    (mul,) = [n for n in model.graph if n.name == "n6_Mul"]
    copy = mul.inputs[1].producer()
    assert copy is not None and copy.op_type == "Constant" and copy.name != "n0_Constant"
    assert metadata.node_tag(copy) == "/M"  # the copy keeps the original's tag
    original = next(n for n in model.graph if n.name == "n0_Constant").attributes["value"]
    np.testing.assert_array_equal(
        copy.attributes["value"].as_tensor().numpy(), original.as_tensor().numpy() * 2
    )
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    assert not np.allclose(run_ort(model, FEEDS)[0], run_ort(reference, FEEDS)[0])


class EditInPlacePass(ir.passes.InPlacePass):
    """Keep every node and edge; stamp metadata and doc strings, drop two tags, stamp
    internal values, and stamp the copy of the outside Constant (metadata only)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        for node in model.graph:
            node.metadata_props["test.stamp"] = node.name
            if node.op_type == "Relu":
                node.doc_string = "edited"
            if node.op_type == "Add":
                metadata.set_tag(node, None)
                node.outputs[0].metadata_props["test.value"] = "add"
        return ir.passes.PassResult(model, True)


def _ids(model: ir.Model) -> list[int]:
    return [id(n) for n in model.graph]


def test_a_rewrite_that_keeps_the_wiring_is_copied_onto_the_same_nodes(monkeypatch):
    """Same result as the full splice (forced by hiding the extraction's origins), but
    on the model's own node objects: nothing moves, nothing is re-sorted."""
    from graphtag.surgery import splice

    model, reference = layers(2), layers(2)
    before, ids = views(model), _ids(model)
    inside = {n.name for n in select(model, "*/Layer.0").nodes}
    result = Scoped(EditInPlacePass(), "*/Layer.0")(model)
    assert result.modified
    assert result.stats["scopes"] == 1
    assert result.stats["nodes_removed"] == result.stats["nodes_added"] == 0
    assert result.stats["retagged"] == 2  # the two Adds lost their tag: the scope's again
    assert _ids(model) == ids
    after = views(model)
    assert not outside_changes(before, after, inside)
    assert after["n0_Constant"] == before["n0_Constant"]  # the copy's stamp stays behind
    for name in inside:
        assert after[name] != before[name]
    adds = [n for n in model.graph if n.op_type == "Add" and n.name in inside]
    assert {metadata.tag_source(n) for n in adds} == {SCOPE_TAG_SOURCE}
    assert {n.outputs[0].metadata_props.get("test.value") for n in adds} == {"add"}
    onnx.checker.check_model(ir.to_proto(model), full_check=True)
    for got, want in zip(run_ort(model, FEEDS), run_ort(reference, FEEDS)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

    full = layers(2)
    monkeypatch.setattr(splice._Wiring, "of", classmethod(lambda cls, graph, nodes, origins: None))
    spliced = Scoped(EditInPlacePass(), "*/Layer.0")(full)
    assert spliced.stats["nodes_removed"] == spliced.stats["nodes_added"] == len(inside)
    assert views(full) == after
    assert [[v.metadata_props for v in n.outputs] for n in full.graph] == [
        [v.metadata_props for v in n.outputs] for n in model.graph
    ]


def _scaled_constant() -> ir.Model:
    """``/M/A``: Mul(x, Constant 1.5); ``/M/B``: Relu."""
    from scoped_builders import _Builder

    b = _Builder()
    c = b.node("Constant", [], "/M/A", value=ir.tensor(np.full((4,), 1.5, np.float32)))
    return b.model(b.node("Relu", [b.node("Mul", [b.x, c], "/M/A")], "/M/B"), ["/M/A", "/M/B"])


def test_an_attribute_replaced_in_place_reaches_the_model(monkeypatch):
    from graphtag.surgery import splice

    results = []
    for path in ("in place", "full splice"):
        if path == "full splice":
            monkeypatch.setattr(splice._Wiring, "of", classmethod(lambda cls, g, n, o: None))
        model = _scaled_constant()
        ids = _ids(model)
        Scoped(DoubleConstantsPass(), "/M/A")(model)
        assert (_ids(model) == ids) == (path == "in place")
        onnx.checker.check_model(ir.to_proto(model), full_check=True)
        want = np.maximum(FEEDS["x"] * 3.0, 0)  # the Constant doubled: 1.5 -> 3
        np.testing.assert_allclose(run_ort(model, FEEDS)[0], want, rtol=1e-6)
        results.append(views(model))
    assert results[0] == results[1]


def test_a_restructuring_rewrite_still_goes_through_the_full_splice():
    model = layers(2)
    ids = set(_ids(model))
    result = Scoped(InsertIdentityPass(), "*/Layer.0")(model)
    assert result.stats["nodes_removed"] == 6 and result.stats["nodes_added"] == 7
    assert not ids & {id(n) for n in model.graph if metadata.node_tag(n) == "/M/Layer.0"}


def _scaled_by_one() -> ir.Model:
    """``/M/A``: Relu(Mul(x, ones)) with ``ones`` an initializer only that Mul reads;
    ``/M/B``: Sigmoid."""
    from scoped_builders import _Builder

    b = _Builder()
    ones = b.init("ones", (4,))
    ones.const_value = ir.tensor(np.ones((4,), np.float32), name="ones")
    relu = b.node("Relu", [b.node("Mul", [b.x, ones], "/M/A")], "/M/A")
    return b.model(b.node("Sigmoid", [relu], "/M/B"), ["/M/A", "/M/B"])


def _twin_constants() -> ir.Model:
    """``/M/A``: Add(Mul(x, c1), Mul(x, c2)), where c1 and c2 are equal Constants of
    ``/M`` (outside the scope, copied into its extraction); ``/M/B``: Sigmoid."""
    from scoped_builders import _Builder

    b = _Builder()
    c1, c2 = (
        b.node("Constant", [], "/M", value=ir.tensor(np.full((4,), 0.5, np.float32)))
        for _ in range(2)
    )
    a = b.node("Add", [b.node("Mul", [b.x, c1], "/M/A"), b.node("Mul", [b.x, c2], "/M/A")], "/M/A")
    return b.model(b.node("Sigmoid", [a], "/M/B"), ["/M", "/M/A", "/M/B"])


class DropMulByOnePass(ir.passes.InPlacePass):
    """Remove every ``Mul(v, ones)``, its readers reading ``v``: a pruning rewrite that
    rewires a node to a boundary input and frees an initializer."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in list(model.graph):
            if node.op_type != "Mul" or node.inputs[1].const_value is None:
                continue
            if not np.all(node.inputs[1].const_value.numpy() == 1):
                continue
            ir.convenience.replace_all_uses_with(node.outputs[0], node.inputs[0])
            model.graph.remove(node, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified)


@pytest.mark.parametrize(
    ("build", "pass_", "pattern", "removed", "initializers_left"),
    [
        (lambda: layers(3), cse, "*/Layer.1", 1, 6),  # the duplicate Relu
        (_scaled_by_one, DropMulByOnePass, "/M/A", 1, 0),  # the Mul and its 'ones'
        # The copies merge (the outside Constants both stay), then the two Muls.
        (_twin_constants, cse, "/M/A", 1, 0),
    ],
)
def test_a_pruning_rewrite_is_applied_to_the_same_nodes(
    monkeypatch, build, pass_, pattern, removed, initializers_left
):
    """A rewrite that only removes nodes and rewires the rest to values the scope had
    (CSE): the same result as the full splice (forced), on the model's own node objects,
    with nothing moved and no re-sort."""
    from graphtag.surgery import splice

    model, reference = build(), build()
    survivors = {id(n) for n in model.graph}
    before = views(model)
    inside = {n.name for n in select(model, pattern).nodes}
    result = Scoped(pass_(), pattern)(model)
    assert result.modified
    assert result.stats["nodes_removed"] == removed and result.stats["nodes_added"] == 0
    assert {id(n) for n in model.graph} < survivors  # the same objects, fewer of them
    assert len(model.graph) == len(survivors) - removed
    assert len(model.graph.initializers) == initializers_left
    after = views(model)
    assert not outside_changes(before, after, inside)
    check_clean(model, reference)
    # The rewrite is done: a second run reports no change and changes nothing.
    assert not Scoped(pass_(), pattern)(model).modified
    assert views(model) == after

    full = build()
    monkeypatch.setattr(splice._Wiring, "pruned", lambda self, graph: None)
    spliced = Scoped(pass_(), pattern)(full)
    assert spliced.stats["nodes_added"] > 0  # the full splice did run
    assert views(full) == after
    assert sorted(full.graph.initializers) == sorted(model.graph.initializers)


def test_graph_order_knows_which_added_reads_point_forward():
    from graphtag.pipeline.scoped import _GraphOrder

    model = _interleaved()
    first, between, last = list(model.graph)
    order = _GraphOrder(model)
    assert order.precedes([(last, between.outputs[0]), (between, first.outputs[0])])
    assert order.precedes([(first, model.graph.inputs[0])])  # a graph input
    assert not order.precedes([(first, between.outputs[0])])  # produced after its reader
    added = ir.Node("", "Neg", [model.graph.inputs[0]], num_outputs=1)
    model.graph.insert_before(last, added)
    assert not order.precedes([(last, added.outputs[0])])  # unknown position: re-sort


class PrependIdentityPass(ir.passes.InPlacePass):
    """Put an Identity of the first computed value at the very front of the graph, before
    its producer: a rewrite that is not in dependency order."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        first = next(n for n in model.graph if n.inputs)
        insert_identity(
            model.graph, first, "prepended", "prepended_out", at=next(iter(model.graph))
        )
        return ir.passes.PassResult(model, True)


def _interleaved() -> ir.Model:
    """``/M/A`` = {n0, n2} with ``/M/B``'s n1 between them, reading n0 and read by n2."""
    from scoped_builders import _Builder

    b = _Builder()
    a = b.node("Relu", [b.x], "/M/A")
    between = b.node("Neg", [a], "/M/B")
    return b.model(b.node("Add", [a, between], "/M/A"), ["/M/A", "/M/B"])


@pytest.mark.parametrize(
    ("build", "pass_", "pattern", "sorts"),
    [
        (lambda: layers(3), InsertIdentityPass, "*/Layer.1", 0),  # one run, in order
        (lambda: layers(3), cse, "*/Layer.1", 0),
        (lambda: layers(3), PrependIdentityPass, "*/Layer.1", 1),  # out of order
        (_interleaved, InsertIdentityPass, "/M/A", 1),  # the scope is not one run
        (_interleaved, EditInPlacePass, "/M/A", 0),  # copied in place: nothing moved
    ],
)
def test_the_graph_is_sorted_again_only_when_a_splice_may_have_broken_its_order(
    monkeypatch, build, pass_, pattern, sorts
):
    import graphtag.pipeline.scoped as scoped

    calls = []

    class Counting(scoped.TopologicalSortPass):
        def call(self, model):
            calls.append(1)
            return super().call(model)

    monkeypatch.setattr(scoped, "TopologicalSortPass", Counting)
    model, reference = build(), build()
    assert Scoped(pass_(), pattern)(model).modified
    assert len(calls) == sorts
    check_clean(model, reference)


class CseThenClashPass(ir.passes.InPlacePass):
    """CSE on layer 0 (names are only dropped), then, on layer 1, an Identity whose node
    and value take names used outside the scope (``n0_Constant``, ``v0``)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if model.metadata_props[metadata.EXTRACTED_MODULE] == "/M/Layer.0":
            return cse()(model)
        first = next(n for n in model.graph if n.inputs)
        insert_identity(model.graph, first, "n0_Constant", "v0")
        return ir.passes.PassResult(model, True)


def test_names_stay_unique_when_the_name_index_is_first_needed_by_a_later_scope():
    model, reference = layers(2), layers(2)
    result = Scoped(CseThenClashPass(), "*/Layer.0|*/Layer.1")(model)
    assert result.stats["scopes"] == 2 and result.stats["renamed"] == 2
    nodes = [n.name for n in model.graph]
    values = [v.name for n in model.graph for v in n.outputs]
    values += [*model.graph.initializers, *(v.name for v in model.graph.inputs)]
    assert len(nodes) == len(set(nodes)) and len(values) == len(set(values))
    assert {"n0_Constant_1", "v0_1"} <= {*nodes, *values}
    check_clean(model, reference)


class RecordHierarchyPass(ir.passes.InPlacePass):
    """Record the modules and module names of the hierarchy each model carries."""

    def __init__(self, seen: list) -> None:
        super().__init__()
        self.seen = seen

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        tree = graphtag.Hierarchy.from_model(model)
        self.seen.append((list(tree.modules), sorted(tree.name_to_tag)))
        return ir.passes.PassResult(model, False)


def test_the_pass_sees_the_hierarchy_of_its_scope_only():
    """The scope's subtree, the modules its nodes carry (the copied Constant's ``/M``) and
    their ancestors: no module without a node in the extraction (outlining every module
    of a scope would otherwise report every other module of the model)."""
    model = layers(3)
    seen: list = []
    Scoped(RecordHierarchyPass(seen), "*/Layer.1|/M/Head")(model)
    assert seen == [
        (["/M", "/M/Layer.1"], ["", "layer.1"]),
        (["/M", "/M/Head"], ["", "head"]),
    ]
    # The model's own hierarchy is untouched.
    assert list(graphtag.Hierarchy.from_model(model).modules) == [
        "/M",
        "/M/Layer.0",
        "/M/Layer.1",
        "/M/Layer.2",
        "/M/Head",
    ]


class RecordExtractionPass(ir.passes.InPlacePass):
    """Record whether each model it is given carries a hierarchy."""

    def __init__(self, seen: list) -> None:
        super().__init__()
        self.seen = seen

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.seen.append(metadata.HIERARCHY in model.metadata_props)
        return ir.passes.PassResult(model, False)


class NoHierarchyPass(RecordExtractionPass):
    reads_hierarchy = False  # declared by the pass


class OnnxIrLikePass(RecordExtractionPass):
    pass


OnnxIrLikePass.__module__ = "onnx_ir.passes.common.probe"  # where onnx_ir's passes live


@pytest.mark.parametrize(
    ("pass_class", "expected"),
    [(RecordExtractionPass, True), (NoHierarchyPass, False), (OnnxIrLikePass, False)],
    ids=["default", "declared", "onnx_ir"],
)
def test_the_hierarchy_goes_to_the_passes_that_may_read_it(pass_class, expected):
    """Cutting the hierarchy for each scope is a tenth of an extraction: a pass that says
    it does not read it (``reads_hierarchy = False``), and onnx_ir's own passes, get
    extractions without one; any other pass gets its scope's part."""
    seen: list = []
    Scoped(pass_class(seen), "*/Layer.*")(layers(2))
    assert seen == [expected, expected]


def test_an_extraction_for_a_rewrite_refreshes_the_records_it_changes_only():
    """Handed to a pass, an extraction's consumer records are made true where it changed
    who reads a value (inputs, outputs, initializers, copied Constants); an internal
    value keeps the source's record, as the pass would see it on the whole model. A
    file extraction refreshes every record."""
    model = layers(2)
    values = list(iter_values(model))
    for value in values:
        metadata.set_consumers(value, metadata.consumer_tags(value))
    stale = next(v for v in values if v.name == "v8")  # inside /M/Layer.1
    metadata.set_consumers(stale, {"/M/Elsewhere"})
    extractor = Extractor(model, module_boundaries(model))
    whole = extractor.extract("/M/Layer.1")
    lean, _ = extractor.extract_traced("/M/Layer.1", for_rewrite=True)

    def records(extracted: ir.Model) -> dict:
        return {v.name: metadata.consumers(v) for v in iter_values(extracted)}

    full, partial = records(whole), records(lean)
    assert full["v8"] == {"/M/Layer.1"} and partial["v8"] == {"/M/Elsewhere"}
    del full["v8"], partial["v8"]
    assert full == partial
    assert full["v12"] == set()  # the output: read outside only
    assert full["v0"] == {"/M/Layer.1"}  # the copied Constant: this layer reads it here
    assert full["layer.1.w"] == full["v6"] == {"/M/Layer.1"}
    assert metadata.HIERARCHY in lean.metadata_props  # by default


class CastOutputPass(ir.passes.InPlacePass):
    """Turn the first graph output into float16 under the same name."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        old = graph.outputs[0]
        cast = ir.Node("", "Cast", [old], [ir.AttrInt64("to", 10)], num_outputs=1)
        graph.append(cast)
        name, old.name = old.name, f"{old.name}_float"
        cast.outputs[0].name = name
        cast.outputs[0].type = ir.TensorType(ir.DataType.FLOAT16)
        graph.outputs[0] = cast.outputs[0]
        return ir.passes.PassResult(model, True)


class AddInputPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        model.graph.inputs.append(ir.Value(name="extra", type=FLOAT, shape=ir.Shape([1])))
        return ir.passes.PassResult(model, True)


class RenameOutputPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        model.graph.outputs[0].name = "renamed"
        return ir.passes.PassResult(model, True)


class PassThroughPass(ir.passes.InPlacePass):
    """Return the module's first input as its output."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        old = graph.outputs[0]
        graph.outputs[0] = graph.inputs[0]
        graph.inputs[0].name, old.name = old.name, graph.inputs[0].name
        return ir.passes.PassResult(model, True)


class OpsetPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        model.opset_imports[""] = 20
        return ir.passes.PassResult(model, True)


class CrashPass(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        raise RuntimeError("needs the graph inputs 'input_ids'")


@pytest.mark.parametrize(
    ("pass_", "message"),
    [
        (CastOutputPass(), "changed the boundary value 'v6': type FLOAT -> FLOAT16"),
        (AddInputPass(), "added the input 'extra' to the module"),
        (RenameOutputPass(), "added the boundary output 'renamed'"),
        (PassThroughPass(), "made the boundary value 'v6' the module's input"),
        (OpsetPass(), "changed the opset of domain 'ai.onnx' from 21 to 20"),
        (CrashPass(), "failed on module /M/Layer.0 extracted as a standalone model"),
    ],
    ids=["type", "input", "rename", "passthrough", "opset", "crash"],
)
def test_boundary_changes_are_errors_naming_pass_and_value(pass_, message):
    model = layers(2)
    before = views(model)
    with pytest.raises(ScopedPassError, match="pass 'mine'") as info:
        Scoped(pass_, "*/Layer.0", name="mine")(model)
    assert message in str(info.value)
    assert "/M/Layer.0" in str(info.value)
    assert views(model) == before  # refused before anything was spliced


@pytest.mark.parametrize("was_enabled", [True, False])
def test_the_collector_is_back_as_it_was_after_a_scoped_run(was_enabled):
    """Automatic collection is off while the scopes are rewritten (each scope's garbage is
    collected as it goes), and back as it was afterwards, also after a failure."""
    import gc

    seen = []

    class RecordCollectorPass(ir.passes.InPlacePass):
        def call(self, model):
            seen.append(gc.isenabled())
            return ir.passes.PassResult(model, False)

    (gc.enable if was_enabled else gc.disable)()
    try:
        Scoped(RecordCollectorPass(), "*/Layer.*")(layers(2))
        assert seen == [False, False]
        assert gc.isenabled() == was_enabled
        with pytest.raises(ScopedPassError):
            Scoped(CrashPass(), "*/Layer.0")(layers(2))
        assert gc.isenabled() == was_enabled
    finally:
        gc.enable()


def test_a_pass_closing_a_loop_through_the_outside_is_refused_before_splicing():
    class ReadMiddlePass(ir.passes.InPlacePass):
        """Make the first call's output depend on the second call's input."""

        def call(self, model):
            graph = model.graph
            middle = next(v for v in graph.inputs if v.name == "v2")
            first = next(v for v in graph.outputs if v.name == "v1")
            add = ir.Node("", "Add", [first.producer().inputs[0], middle], num_outputs=1)
            graph.insert_before(first.producer(), add)
            first.producer().replace_input_with(0, add.outputs[0])
            return ir.passes.PassResult(model, True)

    model = called_twice()
    before = views(model)
    with pytest.raises(ScopedPassError, match="made the output 'v1' depend on the input 'v2'"):
        Scoped(ReadMiddlePass(), "*/Shared")(model)
    assert views(model) == before
    # An ordinary pass on the same non-convex scope is fine.
    reference = called_twice()
    assert Scoped(InsertIdentityPass(), "*/Shared")(model).modified
    check_clean(model, reference)


def test_control_flow_bodies_travel_with_their_node():
    model, reference = with_body(), with_body()
    feeds = {**FEEDS, "cond": np.array(True)}
    before = views(model)
    inside = {n.name for n in select(model, "*/Branch").nodes}
    assert Scoped(registry().get("demo-stamp").create({}), "*/Branch")(model).modified
    after = views(model)
    assert not outside_changes(before, after, inside)
    (if_node,) = [n for n in model.graph if n.op_type == "If"]
    branch = if_node.attributes["then_branch"].value
    # The body still reads /M/Pre's output from the main graph (the model's own value).
    pre = next(n for n in model.graph if metadata.node_tag(n) == "/M/Pre").outputs[0]
    assert next(iter(branch)).inputs[0] is pre
    check_clean(model, reference, feeds)


def test_overlapping_scopes_run_once_each_outermost_first(caplog):
    seen: list[str] = []

    class RecordPass(ir.passes.InPlacePass):
        def call(self, model):
            seen.append(model.metadata_props[metadata.EXTRACTED_MODULE])
            return ir.passes.PassResult(model, False)

    model = layers(2)
    with caplog.at_level(logging.INFO, logger="graphtag"):
        result = Scoped(RecordPass(), "*/Layer.1|/M|/M/Head")(model)
    assert seen == ["/M", "/M/Layer.1", "/M/Head"]
    assert "scope /M/Layer.1 lies inside scope /M: each runs once, /M first" in result.diagnostics
    assert "lies inside scope /M" in caplog.text
    # When the outer run rewrites, the inner scope continues from its result.
    model, reference = layers(2), layers(2)
    result = Scoped(cse(), "/M|*/Layer.1")(model)
    assert result.stats == {
        "scopes": 1,
        "unchanged": 1,
        "skipped": 0,
        "nodes_removed": 2,  # one duplicate Relu per layer, pruned in place
        "nodes_added": 0,
        "retagged": 0,
        "renamed": 0,
    }
    check_clean(model, reference)


def test_functions_made_in_two_scopes_get_distinct_names_and_inline_back():
    model, original = layers(2), layers(2)
    outline = registry().get("function-outlining").create({"classes": "Layer"})
    result = Scoped(outline, "*/Layer.0|*/Layer.1")(model)
    assert result.stats["outlined"] == 2 and result.stats["renamed"] == 1
    assert sorted(f.name for f in model.functions.values()) == ["Layer", "Layer_1"]
    calls = [n.op_type for n in model.graph if n.domain == metadata.FUNCTION_DOMAIN]
    assert calls == ["Layer", "Layer_1"]
    check_clean(model, original)
    assert registry().get("function-inlining").create({})(model).modified
    assert compare_topology(model, original).identical


def test_pattern_matching_nothing_and_whole_model_passes():
    with pytest.raises(GraphtagError, match="matches no module; closest: /M/Layer.0"):
        Scoped(cse(), "*/Layr.0")(layers(2))
    with pytest.raises(PipelineError, match="pass 'BoundaryDetectionPass' cannot run scoped"):
        Scoped(BoundaryDetectionPass(store=True), "/M")
    with pytest.raises(PipelineError, match="'retag' cannot run scoped .* needs the whole model"):
        Pipeline.from_text("retag{reference=x.onnx}@/M")
    with pytest.raises(PipelineError, match="empty scope pattern"):
        Scoped(cse(), "|")


# -- native scoping: graphtag's tag passes -----------------------------------------------


def test_native_passes_write_inside_the_scope_only():
    model = layers(3)
    inside = {n.name for n in select(model, "*/Layer.1").nodes}
    before = views(model)
    scoped = Scoped(NamespacePass(), "*/Layer.1")
    assert scoped.preserves == NamespacePass.preserves  # native: the pass's own promise
    result = scoped(model)
    assert result.modified and result.stats["written"] == len(inside)
    after = views(model)
    assert not outside_changes(before, after, inside)
    assert {n.metadata_props.get(metadata.NAMESPACE) for n in model.graph if n.name in inside} == {
        "/M/Layer.1"
    }
    assert not scoped(model).modified  # idempotent
    assert Scoped(cse(), "/M").preserves == frozenset({"hierarchy"})


def test_scoped_tag_propagation_tags_what_falls_in_the_scope():
    model = layers(2)
    cleared = [n for n in model.graph if n.op_type == "Relu"]
    for node in cleared:
        node.metadata_props.pop(metadata.MODULE)
    result = Scoped(TagPropagationPass(), "*/Layer.1")(model)
    assert result.modified
    assert result.stats["outside_scope"] == 2
    tags = [metadata.node_tag(n) for n in cleared]
    assert tags == [None, None, "/M/Layer.1", "/M/Layer.1"]
    assert all(metadata.TAG_SOURCE not in n.metadata_props for n in cleared[:2])
    # Counted by the rule that tagged them, like the unscoped pass does.
    rules = [metadata.tag_source(n).removeprefix("inferred:") for n in cleared[2:]]
    assert sum(result.stats[rule] for rule in set(rules)) == 2 and "" not in result.stats
    result = Scoped(TagPropagationPass(), "*/Layer.1")(model)
    assert not result.modified  # nothing left that falls in the scope


def test_scoped_tag_propagation_puts_back_what_it_did_not_keep():
    """A node inferred outside the scope is put back as it was, its old tag source
    included."""
    model = layers(2)
    cleared = [n for n in model.graph if n.op_type == "Relu"]
    for node in cleared:
        node.metadata_props.pop(metadata.MODULE)
        node.metadata_props[metadata.TAG_SOURCE] = "inferred:earlier"
    Scoped(TagPropagationPass(), "*/Layer.1")(model)
    assert [metadata.node_tag(n) for n in cleared[:2]] == [None, None]
    assert [n.metadata_props.get(metadata.TAG_SOURCE) for n in cleared[:2]] == [
        "inferred:earlier",
        "inferred:earlier",
    ]


def test_scoped_multi_consumer_and_residual_resolution():
    model = layers(2)
    inside = select(model, "*/Layer.0")
    assert Scoped(MultiConsumerPass(), "*/Layer.0")(model).modified
    for node in model.graph:
        for value in node.outputs:
            assert (metadata.consumers(value) is not None) == (node in inside.nodes), value.name
    # The layer's output records its consumer outside the scope.
    assert metadata.consumers(inside.nodes[-1].outputs[0]) == {"/M/Layer.1"}
    before = views(model)
    result = Scoped(ResidualResolutionPass(), "*/Layer.1")(model)
    assert result.modified
    changed = {name for name, view in views(model).items() if before[name] != view}
    assert changed and changed <= {n.name for n in select(model, "*/Layer.1").nodes}
    first = select(model, "*/Layer.1").nodes[0]
    assert {"module": "/M/Layer.0", "role": "producer"} in metadata.contexts(first)


# -- pipeline text, TOML, the command line -----------------------------------------------


def test_pipeline_text_and_toml(tmp_path: Path):
    steps = parse_pipeline(
        "toposort,ir.common-subexpression-elimination@*/Layer.[01]|/M/Head ,"
        " demo-stamp{value=3}@'*/A,B', namespace @ /M"
    )
    assert [(s.name, s.scope) for s in steps] == [
        ("toposort", None),
        ("ir.common-subexpression-elimination", "*/Layer.[01]|/M/Head"),
        ("demo-stamp", "*/A,B"),
        ("namespace", "/M"),
    ]
    assert [str(s) for s in steps] == [
        "toposort",
        "ir.common-subexpression-elimination@*/Layer.[01]|/M/Head",
        "demo-stamp{value=3}@'*/A,B'",
        "namespace@/M",
    ]
    assert parse_pipeline(str(steps[2])) == [steps[2]]
    for bad, what in [
        ("toposort@", "expected a tag pattern after '@'"),
        ("toposort@/M{x=1}", "unexpected character in a scope pattern"),
        ("toposort@'/M", "unterminated quoted value"),
    ]:
        with pytest.raises(PipelineError, match=what):
            parse_pipeline(bad)
    toml = tmp_path / "p.toml"
    toml.write_text(
        '[[pass]]\nname = "ir.common-subexpression-elimination"\nscope = "*/Layer.1"\n'
        '[[pass]]\nname = "demo-stamp"\nvalue = "2"\nscope = ["*/Layer.0", "/M/Head"]\n'
    )
    steps = load_pipeline_toml(toml)
    assert [(s.name, s.options, s.scope) for s in steps] == [
        ("ir.common-subexpression-elimination", {}, "*/Layer.1"),
        ("demo-stamp", {"value": "2"}, "*/Layer.0|/M/Head"),
    ]
    pipeline = Pipeline.from_toml(toml)
    assert [name for name, _ in pipeline.steps] == [
        "ir.common-subexpression-elimination@*/Layer.1",
        "demo-stamp@*/Layer.0|/M/Head",
    ]
    model = layers(2)
    pipeline(model)
    stamped = {metadata.node_tag(n) for n in model.graph if "demo.stamp" in n.metadata_props}
    assert stamped == {"/M/Layer.0", "/M/Head"}
    toml.write_text('[[pass]]\nname = "toposort"\nscope = 3\n')
    with pytest.raises(PipelineError, match="scope must be a tag pattern"):
        load_pipeline_toml(toml)


def test_dump_after_a_scoped_step(tmp_path: Path):
    pipeline = Pipeline.from_text(
        "ir.common-subexpression-elimination@*/Layer.1",
        dump_after=["ir.common-subexpression-elimination"],
        dump_dir=tmp_path,
    )
    pipeline(layers(2))
    (dumped,) = tmp_path.iterdir()
    assert dumped.name == "after-00-ir.common-subexpression-elimination_Layer.1.onnx"
    assert pipeline.report.records[0].name == "ir.common-subexpression-elimination@*/Layer.1"


def test_run_command_with_a_scoped_pass(tmp_path: Path):
    source = tmp_path / "layers.onnx"
    graphtag.save(layers(2), source)
    out = tmp_path / "out.onnx"
    proc = run_cli(
        "run",
        source,
        "-p",
        "ir.common-subexpression-elimination@*/Layer.1",
        "-o",
        out,
        "--time-passes",
    )
    assert proc.returncode == 0, proc.stderr
    assert "ir.common-subexpression-elimination@*/Layer.1" in proc.stdout + proc.stderr
    model = graphtag.load(out)
    assert sum(n.op_type == "Relu" for n in model.graph) == 3
    assert_clean_failure(
        run_cli("run", source, "-p", "toposort@*/Layr.1", "-o", tmp_path / "o2.onnx"),
        "matches no module; closest: /M/Layer.1",
    )
    assert_clean_failure(
        run_cli("run", source, "-p", "boundary-detection@/M", "-o", tmp_path / "o3.onnx"),
        "pass 'boundary-detection' cannot run scoped",
    )
    assert not (tmp_path / "o2.onnx").exists() and not (tmp_path / "o3.onnx").exists()
