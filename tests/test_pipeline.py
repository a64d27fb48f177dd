"""Pass manager: parsing, options, order, instrumentation, verify-each, conditions."""

from __future__ import annotations

from typing import Annotated, Literal

import onnx_ir as ir
import pytest
from onnx_builders import feeds, run_ort, tagged_mlp
from onnxscript.optimizer._constant_folding import FoldConstantsPass

import graphtag
from graphtag.analysis import manager
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError, PipelineError, VerificationError
from graphtag.pipeline import (
    PassInvocation,
    PassRegistry,
    Pipeline,
    load_pipeline_toml,
    parse_pipeline,
    registry,
)


class RecordPass(ir.passes.InPlacePass):
    """Append a label to the model's doc string (to observe pass order)."""

    def __init__(
        self,
        *,
        label: str = "x",
        times: int = 1,
        loud: bool = False,
        mode: Literal["append", "noop"] = "append",
    ) -> None:
        self.label, self.times, self.loud, self.mode = label, times, loud, mode

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if self.mode == "noop":
            return ir.passes.PassResult(model, False)
        model.doc_string = (model.doc_string or "") + self.label * self.times
        return ir.passes.PassResult(model, True)


class BreakTagsPass(ir.passes.InPlacePass):
    """Write a malformed tag (to test verify-each)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        next(iter(model.graph)).metadata_props[metadata.MODULE] = "no-leading-slash"
        return ir.passes.PassResult(model, True)


class BreakGraphPass(ir.passes.InPlacePass):
    """Reverse the node order: invalid ONNX (not topologically sorted)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        nodes = list(model.graph)
        model.graph.remove(nodes)
        model.graph.extend(reversed(nodes))
        return ir.passes.PassResult(model, True)


class NeedsTagsPass(ir.passes.InPlacePass):
    """Requires every node to carry a tag."""

    def requires(self, model: ir.Model) -> None:
        if any(metadata.node_tag(n) is None for n in model.graph):
            raise ir.passes.PreconditionError("every node needs a pkg.graphtag.module tag")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return ir.passes.PassResult(model, False)


class PromisesNothingPass(ir.passes.InPlacePass):
    """Its postcondition always fails."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return ir.passes.PassResult(model, False)

    def ensures(self, model: ir.Model) -> None:
        raise ir.passes.PostconditionError("postcondition violated on purpose")


@pytest.fixture
def reg() -> PassRegistry:
    reg = PassRegistry()
    for name, cls in [
        ("record", RecordPass),
        ("break-tags", BreakTagsPass),
        ("break-graph", BreakGraphPass),
        ("needs-tags", NeedsTagsPass),
        ("promises-nothing", PromisesNothingPass),
    ]:
        reg.register(name, cls, origin="test")
    return reg


def test_parse_pipeline_text():
    steps = parse_pipeline(
        " toposort , tag-propagation{strategy=consumers, min-share = 0.5},x{s='a,b}'}"
    )
    assert steps == [
        PassInvocation("toposort"),
        PassInvocation("tag-propagation", {"strategy": "consumers", "min_share": "0.5"}),
        PassInvocation("x", {"s": "a,b}"}),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty pipeline"),
        ("a,,b", "expected a pass name"),
        ("a{k}", "expected '='"),
        ("a{k=1", "expected ','"),
        ("a{k=1,k=2}", "given twice"),
        ("a b", "expected ','"),
        ("a{k='x}", "unterminated"),
    ],
)
def test_parse_pipeline_errors(text, message):
    with pytest.raises(PipelineError, match=message):
        parse_pipeline(text)


def test_options_are_typed_and_checked(reg):
    spec = reg.get("record")
    assert [(o.name, o.type_name, o.default) for o in spec.options] == [
        ("label", "str", "x"),
        ("times", "int", 1),
        ("loud", "bool", False),
        ("mode", "append|noop", "append"),
    ]
    assert spec.doc == "Append a label to the model's doc string (to observe pass order)."
    pipeline = Pipeline.from_text("record{label=ab,times=2,loud=yes,mode=append}", reg)
    created = pipeline.steps[0][1]
    assert (created.label, created.times, created.loud) == ("ab", 2, True)
    with pytest.raises(PipelineError, match="option 'times' expects int, got 'two'"):
        Pipeline.from_text("record{times=two}", reg)
    with pytest.raises(PipelineError, match="must be one of append, noop"):
        Pipeline.from_text("record{mode=other}", reg)
    with pytest.raises(
        PipelineError, match=r"has no option 'colour' \(valid options: label, times"
    ):
        Pipeline.from_text("record{colour=red}", reg)


def test_unknown_pass_lists_valid_names(reg):
    with pytest.raises(
        PipelineError, match=r"unknown pass 'nope' \(valid passes: .*toposort.*record"
    ):
        Pipeline.from_text("toposort,nope", reg)


def test_passes_run_in_order_with_timing(reg):
    model = tagged_mlp()
    pipeline = Pipeline.from_text("record{label=a},record{label=b,mode=noop},record{label=c}", reg)
    result = pipeline(model)
    assert result.model is model
    assert model.doc_string == "ac"
    assert [(r.name, r.modified) for r in pipeline.report.records] == [
        ("record", True),
        ("record", False),
        ("record", True),
    ]
    assert all(r.seconds >= 0 for r in pipeline.report.records)
    assert result.modified is True
    assert Pipeline.from_text("record{mode=noop}", reg)(model).modified is False


def test_pipeline_from_toml(reg, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(
        '[[pass]]\nname = "record"\nlabel = "t"\ntimes = 3\n\n'
        '[[pass]]\nname = "ir.remove-unused-nodes"\n'
    )
    assert load_pipeline_toml(path)[0] == PassInvocation("record", {"label": "t", "times": 3})
    model = tagged_mlp()
    Pipeline.from_toml(path, reg)(model)
    assert model.doc_string == "ttt"
    path.write_text('[[pass]]\nlabel = "x"\n')
    with pytest.raises(PipelineError, match="has no name"):
        load_pipeline_toml(path)
    path.write_text("[[pass]\n")
    with pytest.raises(PipelineError, match="not a readable pipeline TOML"):
        load_pipeline_toml(path)


def test_mixes_graphtag_onnx_ir_and_onnxscript_passes(reg):
    model = tagged_mlp()
    expected = run_ort(model, feeds(model))
    # An unused node the onnx_ir pass must remove, metadata of the others untouched.
    dead = ir.Node("", "Neg", [model.graph.inputs[0]], name="dead")
    model.graph.append(dead)
    pipeline = Pipeline(
        [
            ("toposort", reg.get("toposort").create()),
            ("ir.remove-unused-nodes", reg.get("ir.remove-unused-nodes").create()),
            (
                "fold",
                FoldConstantsPass(
                    shape_inference=False, input_size_limit=1024, output_size_limit=1024
                ),
            ),
        ],
        verify_each=True,
    )
    result = pipeline(model)
    assert "dead" not in {n.name for n in result.model.graph}
    assert [metadata.node_tag(n) for n in result.model.graph] == [
        "/MLP/Layer.fc1",
        "/MLP/Layer.fc1",
        "/MLP",
        "/MLP/Layer.fc2",
    ]
    assert run_ort(result.model, feeds(model))[0].tolist() == expected[0].tolist()
    # The pipeline is an onnx_ir pass itself, so it nests in onnx_ir's PassManager.
    nested = ir.passes.PassManager([Pipeline.from_text("record{label=n}", reg)])
    assert nested(result.model).modified


def test_verify_each_names_the_breaking_pass(reg):
    with pytest.raises(VerificationError, match="pass 'break-tags' broke the model: 1 malformed"):
        Pipeline.from_text("record,break-tags,record", reg, verify_each=True)(tagged_mlp())
    with pytest.raises(VerificationError, match="pass 'break-graph' broke the model: onnx.checker"):
        Pipeline.from_text("record,break-graph", reg, verify_each=True)(tagged_mlp())
    # Without verify-each the same pipeline runs through.
    Pipeline.from_text("record,break-tags", reg)(tagged_mlp())


def test_preconditions_and_postconditions(reg):
    model = tagged_mlp()
    Pipeline.from_text("needs-tags", reg)(model)
    del next(iter(model.graph)).metadata_props[metadata.MODULE]
    with pytest.raises(GraphtagError, match="pass 'needs-tags'.*every node needs"):
        Pipeline.from_text("needs-tags", reg)(model)
    with pytest.raises(GraphtagError, match="pass 'promises-nothing'.*violated on purpose"):
        Pipeline.from_text("promises-nothing", reg)(model)


def test_dump_after(reg, tmp_path):
    pipeline = Pipeline.from_text(
        "record{label=a},toposort", reg, dump_after=["record"], dump_dir=tmp_path
    )
    pipeline(tagged_mlp())
    dumped = graphtag.load(tmp_path / "after-00-record.onnx")
    assert dumped.doc_string == "a"
    with pytest.raises(GraphtagError, match="not in the pipeline: nope"):
        Pipeline.from_text("record", reg, dump_after=["nope"])


def test_onnx_ir_common_passes_are_registered(reg):
    names = reg.names()
    assert {"ir.topological-sort", "ir.remove-unused-nodes", "ir.shape-inference"} <= set(names)
    assert reg.get("ir.common-subexpression-elimination").option("size_limit").type is int


class DescribedPass(ir.passes.InPlacePass):
    """Options described with Annotated, next to plain ones."""

    def __init__(
        self,
        *,
        size: Annotated[int, "how many"] = 2,
        mode: Annotated[Literal["a", "b"], "which way"] = "a",
        name: Annotated[str | None, "a name"] = None,
        plain: bool = False,
    ) -> None:
        self.size, self.mode, self.name, self.plain = size, mode, name, plain

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return ir.passes.PassResult(model, False)


def test_option_descriptions_from_annotated(reg):
    spec = reg.register("described", DescribedPass)
    assert [(o.name, o.type_name, o.default, o.description) for o in spec.options] == [
        ("size", "int", 2, "how many"),
        ("mode", "a|b", "a", "which way"),
        ("name", "str", None, "a name"),
        ("plain", "bool", False, ""),
    ]
    created = Pipeline.from_text("described{size=3,mode=b,name=x,plain=yes}", reg).steps[0][1]
    assert (created.size, created.mode, created.name, created.plain) == (3, "b", "x", True)
    with pytest.raises(PipelineError, match="option 'size' expects int"):
        Pipeline.from_text("described{size=many}", reg)


def _shared_input_model() -> ir.Model:
    """``/M/A`` Relu read by two identical Negs, ``/M/B``'s and ``/M/C``'s; its value
    records both modules as consumers. CSE keeps one Neg: then only ``/M/B`` reads it."""
    from scoped_builders import _Builder

    b = _Builder()
    shared = b.node("Relu", [b.x], "/M/A")
    total = b.node("Add", [b.node("Neg", [shared], "/M/B"), b.node("Neg", [shared], "/M/C")], "/M")
    model = b.model(total, ["/M", "/M/A", "/M/B", "/M/C"])
    metadata.set_consumers(shared, {"/M/B", "/M/C"})
    return model


def _shared_value(model: ir.Model) -> ir.Value:
    return next(n for n in model.graph if n.op_type == "Relu").outputs[0]


def test_consumer_records_are_made_true_after_a_pass_that_rewires():
    """A pass of another package does not know graphtag's records: the pipeline refreshes
    them after it (and only records that exist: none is added)."""
    model = _shared_input_model()
    pipeline = Pipeline.from_text("ir.common-subexpression-elimination")
    pipeline(model)
    assert sum(n.op_type == "Neg" for n in model.graph) == 1
    assert (
        metadata.consumers(_shared_value(model))
        == {"/M/B"}
        == metadata.consumer_tags(_shared_value(model))
    )
    assert pipeline.report.records[0].stats["consumers_refreshed"] == 1
    recorded = [
        v.name for n in model.graph for v in n.outputs if metadata.CONSUMERS in v.metadata_props
    ]
    assert recorded == [_shared_value(model).name]
    assert graphtag.validate(model).passed


class _ClaimsToKeepWiring(ir.passes.InPlacePass):
    """CSE, declaring (wrongly) that it keeps tags and wiring: no refresh follows."""

    preserves = manager.ALL

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        return registry().get("ir.common-subexpression-elimination").create({})(model)


def test_a_pass_that_keeps_the_wiring_is_not_followed_by_a_refresh():
    model = _shared_input_model()
    Pipeline([("claims", _ClaimsToKeepWiring())])(model)
    assert metadata.consumers(_shared_value(model)) == {"/M/B", "/M/C"}  # left as it was
