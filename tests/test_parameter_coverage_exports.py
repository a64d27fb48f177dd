"""validate's parameter-coverage rule on exports graphtag makes itself (real exports).

Three shapes the architecture sweep found the rule failing on: a decoder whose output
projection is tied to its input embedding (torch.export keeps one initializer for both
names), loaded back from ``save_pretrained`` as the sweep does; a convolution
followed by a batch norm with its activation in one module (timm's ``BatchNormAct2d``,
rebuilt here): the optimizer folds the norm into the convolution and the folded bias
records no origin (TorchScript's constant folding does the same and records nothing); and two default-initialised layer norms exported by TorchScript,
which keeps one initializer for parameters of identical value and writes the other as
``Identity(n1.weight) -> n2.weight``; a learned position embedding TorchScript folds
into the rows it reads (graphtag's export finds it by value). All must PASS; a parameter
really missing must still FAIL.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
import transformers

import graphtag
from graphtag.analysis.parameters import initializer_copies
from graphtag.checks.validation import validate
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes, iter_initializers
from graphtag.exporter.examples import perturb_parameters
from graphtag.exporter.sources import load_model
from graphtag.exporter.tagged_export import export


class BatchNormAct(torch.nn.BatchNorm2d):
    """A batch norm that applies its activation itself (as timm's BatchNormAct2d)."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.act = torch.nn.ReLU()

    def forward(self, x):
        return self.act(super().forward(x))


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.proj(x)


class ConvBnAct(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = BatchNormAct(8)
        self.head = Head()

    def forward(self, x):
        return self.head(self.bn(self.conv(x)))


class TwoNorms(torch.nn.Module):
    """Two layer norms left at their default values (weight 1, bias 0): equal tensors."""

    def __init__(self):
        super().__init__()
        self.n1 = torch.nn.LayerNorm(8)
        self.n2 = torch.nn.LayerNorm(8)

    def forward(self, x):
        return self.n2(self.n1(x) * 2)


N2 = "/TwoNorms/LayerNorm.n2"


class Positions(torch.nn.Embedding):
    """A learned position embedding read at fixed positions, as LED's (an nn.Embedding
    subclass): TorchScript folds ``weight[arange(n)]`` (times ``scale``) into one
    initializer the parent's ``Add`` reads, and drops the parameter; the module keeps a
    node of its own that does not read it (here ``abs``; in LED a shared index
    constant)."""

    def __init__(self, scale: float):
        super().__init__(16, 8)
        self.scale = scale

    def forward(self, x):
        return super().forward(torch.arange(x.shape[1])) * self.scale, x.abs()


class Encoder(torch.nn.Module):
    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.positions = Positions(scale)
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x):
        rows, magnitude = self.positions(x)
        return self.proj(x + rows + magnitude)


def _coverage(model: ir.Model):
    (result,) = [r for r in validate(model).results if r.rule == "parameter-coverage"]
    return result


@pytest.fixture(scope="module")
def tied_decoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tied")
    config = transformers.GPT2Config(
        n_layer=1,
        n_embd=16,
        n_head=2,
        vocab_size=64,
        n_positions=16,
        tie_word_embeddings=True,
        use_cache=False,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    perturb_parameters(model)
    model.save_pretrained(folder / "hf")
    loaded = load_model(str(folder / "hf")).module
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # really tied
    ids = torch.randint(0, 64, (1, 8))
    path = folder / "tied.onnx"
    export(loaded, (ids,), f=path, exporter="dynamo", optimize=True)
    return path


def _conv_bn_act(folder, exporter: str):
    torch.manual_seed(0)
    model = ConvBnAct().eval()
    perturb_parameters(model)
    with torch.no_grad():  # running statistics that are not the defaults
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 1.5)
    path = folder / f"conv_bn_act_{exporter}.onnx"
    export(model, (torch.randn(1, 3, 8, 8),), f=path, exporter=exporter, optimize=True)
    return path


@pytest.fixture(scope="module")
def conv_bn_act(tmp_path_factory):
    return _conv_bn_act(tmp_path_factory.mktemp("bn"), "dynamo")


@pytest.fixture(scope="module")
def conv_bn_act_torchscript(tmp_path_factory):
    """TorchScript's constant folding merges the norm into the convolution too, and
    records no context: the convolution is tagged with the parent, the norm's module
    keeps only its activation, which reads the convolution's output."""
    return _conv_bn_act(tmp_path_factory.mktemp("bn-ts"), "torchscript")


def _two_norms_input() -> torch.Tensor:
    return torch.randn(2, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def merged_norms(tmp_path_factory):
    path = tmp_path_factory.mktemp("merged") / "two_norms.onnx"
    export(TwoNorms().eval(), (_two_norms_input(),), f=path, exporter="torchscript")
    return path


def _positions_export(folder, scale: float) -> ir.Model:
    torch.manual_seed(0)
    model = Encoder(scale).eval()
    path = folder / f"positions_{scale}.onnx"
    export(model, (torch.randn(1, 6, 8),), f=path, exporter="torchscript")
    return graphtag.load(path)


def _folded_holders(model: ir.Model) -> list[ir.Value]:
    """Initializers whose recorded origin names another value than themselves."""
    return [v for v in iter_initializers(model) if set(metadata.origin(v) or ()) - {v.name}]


@pytest.fixture(scope="module")
def folded_positions(tmp_path_factory):
    return _positions_export(tmp_path_factory.mktemp("positions"), 1.0)


def test_parameter_folded_by_torchscript_is_found_by_value(folded_positions):
    model = folded_positions
    assert "positions.weight" not in {v.name for v in iter_initializers(model)}
    (holder,) = _folded_holders(model)
    assert metadata.origin(holder) == ["positions.weight"]
    assert list(holder.shape) == [6, 8]  # the six rows read, not the table
    result = _coverage(model)
    assert result.status == "PASS", result.detail
    assert "1 folded (recorded origin)" in result.detail
    report = validate(model)
    assert report.passed, [(r.rule, r.detail) for r in report.results if r.status == "FAIL"]


def test_parameter_folded_with_other_values_is_not_claimed(tmp_path):
    """``weight[arange(n)] * 3`` holds none of the table's values: nothing is recorded
    and the parameter stays missing (the rule can still fail on TorchScript exports)."""
    model = _positions_export(tmp_path, 3.0)
    assert not _folded_holders(model)
    result = _coverage(model)
    assert result.status == "FAIL" and result.items == ["positions.weight"], result.detail


@pytest.fixture(scope="module")
def default_init_decoder(tmp_path_factory):
    """GPT-2 at its default initialisation: zero biases, unit layer norms. torch's
    optimizer drops ``Add(x, 0)`` with its zero bias and records no origin."""
    config = transformers.GPT2Config(
        n_layer=2, n_embd=16, n_head=2, vocab_size=64, n_positions=16, use_cache=False
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 64, (1, 8))
    path = tmp_path_factory.mktemp("default_init") / "gpt2.onnx"
    export(model, (ids,), f=path, exporter="dynamo", optimize=True)
    with torch.no_grad():
        expected = model(ids).logits.numpy()
    return path, ids, expected


def test_parameters_the_optimizer_dropped_are_recorded(default_init_decoder):
    path, ids, expected = default_init_decoder
    model = graphtag.load(path)
    dropped = json.loads(model.metadata_props[metadata.OPTIMIZER_REMOVED])
    names = {v.name for v in iter_initializers(model)}
    assert "transformer.h.0.mlp.c_fc.bias" in dropped and not set(dropped) & names
    result = _coverage(model)
    assert result.status == "PASS", result.detail
    assert "removed by the optimizer" in result.detail
    report = validate(model, path=path)
    assert report.passed, [(r.rule, r.detail) for r in report.results if r.status == "FAIL"]
    # The export is right: onnxruntime agrees with PyTorch.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: ids.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # Without the record the same parameters are missing: the record is what explains them.
    del model.metadata_props[metadata.OPTIMIZER_REMOVED]
    result = _coverage(model)
    assert result.status == "FAIL" and "transformer.h.0.mlp.c_fc.bias" in result.items


def test_optimizer_record_is_kept_when_nothing_changes(default_init_decoder):
    """A second optimizer run removes nothing: modified=False and the record stays."""
    from graphtag.pipeline import registry

    path, _, _ = default_init_decoder
    model = graphtag.load(path)
    record = model.metadata_props[metadata.OPTIMIZER_REMOVED]
    result = registry().get("torch-optimizer").create({})(model)
    assert not result.modified
    assert result.model.metadata_props[metadata.OPTIMIZER_REMOVED] == record


def test_tied_embedding_decoder_passes(tied_decoder):
    model = graphtag.load(tied_decoder)
    names = {v.name for v in iter_initializers(model)}
    # One initializer carries both recorded names: the rule must see through that.
    assert not {"lm_head.weight", "transformer.wte.weight"} <= names
    result = _coverage(model)
    assert result.status == "PASS", result.detail
    report = validate(model)
    assert report.passed, [(r.rule, r.detail) for r in report.results if r.status == "FAIL"]


@pytest.mark.parametrize("fixture", ["conv_bn_act", "conv_bn_act_torchscript"])
def test_conv_batchnorm_activation_folded_passes(request, fixture):
    model = graphtag.load(request.getfixturevalue(fixture))
    names = {v.name for v in iter_initializers(model)}
    assert "bn.weight" not in names and "bn.bias" not in names  # really folded away
    result = _coverage(model)
    assert result.status == "PASS", result.detail
    assert "removed by the optimizer" in result.detail or "folded" in result.detail


def test_merged_parameters_pass(merged_norms):
    model = graphtag.load(merged_norms)
    copies = {copy.name: source.name for copy, source in initializer_copies(model).items()}
    # Really merged: n2's parameters are copies of n1's initializers, not initializers.
    assert copies == {"n2.weight": "n1.weight", "n2.bias": "n1.bias"}
    assert not {"n2.weight", "n2.bias"} & {v.name for v in iter_initializers(model)}
    result = _coverage(model)
    assert result.status == "PASS", result.detail
    assert "2 merged into an identical parameter" in result.detail
    report = validate(model, path=merged_norms)
    assert report.passed, [(r.rule, r.detail) for r in report.results if r.status == "FAIL"]


def test_merged_parameter_copy_is_tagged_with_its_reader(merged_norms):
    model = graphtag.load(merged_norms)
    copies = [n for n in iter_all_nodes(model) if n.op_type == "Identity"]
    assert len(copies) == 2
    for node in copies:
        (reader,) = [use.node for use in node.outputs[0].uses()]
        assert reader.op_type == "LayerNormalization"
        assert metadata.node_tag(reader) == N2
        assert metadata.node_tag(node) == N2, node.name
        assert metadata.tag_source(node) is None  # from the exporter's graph, not inferred
        assert metadata.consumers(node.inputs[0]) == {"/TwoNorms/LayerNorm.n1", N2}


def test_merged_parameters_export_runs_like_torch(merged_norms):
    onnx.checker.check_model(str(merged_norms), full_check=True)
    x = _two_norms_input()
    with torch.no_grad():
        expected = TwoNorms().eval()(x).numpy()  # default values: the exported model's
    session = ort.InferenceSession(str(merged_norms), providers=["CPUExecutionProvider"])
    (spec,) = session.get_inputs()
    (got,) = session.run(None, {spec.name: x.numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_copy_of_a_graph_input_is_no_merged_parameter(merged_norms):
    """The same Identity reading the model's input instead of an initializer carries no
    parameter: n2's parameters are missing."""
    model = graphtag.load(merged_norms)
    for node in iter_all_nodes(model):
        if node.op_type == "Identity":
            node.replace_input_with(0, model.graph.inputs[0])
    assert not initializer_copies(model)
    result = _coverage(model)
    assert result.status == "FAIL", result.detail
    assert result.items == ["n2.weight", "n2.bias"]


@pytest.mark.parametrize(
    ("fixture", "module"),
    [
        ("tied_decoder", "transformer.h.0.mlp.c_fc"),
        ("conv_bn_act", "head"),
        ("conv_bn_act_torchscript", "head"),  # reads the norm's output, not the fold's
        ("merged_norms", "n1"),  # its initializers are read by n2's copies too
        ("merged_norms", "n2"),  # reads n1's initializers through its merged copies
    ],
)
def test_a_parameter_really_missing_still_fails(request, fixture, module):
    """Record one more parameter for a module whose nodes read only its own weights:
    nothing in the graph can carry it, the rule must FAIL naming it."""
    model = graphtag.load(request.getfixturevalue(fixture))
    hierarchy = metadata_hierarchy(model)
    (info,) = [info for info in hierarchy if info.name == module]
    assert info.tag in {metadata.node_tag(node) for node in iter_all_nodes(model)}
    info.parameters = [*info.parameters, f"{module}.extra_weight"]
    hierarchy.attach(model)
    result = _coverage(model)
    assert result.status == "FAIL" and f"{module}.extra_weight" in result.detail, result.detail


def metadata_hierarchy(model: ir.Model):
    from graphtag.core.hierarchy import Hierarchy

    return Hierarchy.from_model(model)
