"""validate's parameter-coverage rule on exports graphtag makes itself (real dynamo exports).

Two shapes the architecture sweep found the rule failing on: a decoder whose output
projection is tied to its input embedding (torch.export keeps one initializer for both
names), loaded back from ``save_pretrained`` as the sweep does; and a convolution
followed by a batch norm with its activation in one module (timm's ``BatchNormAct2d``,
rebuilt here): the optimizer folds the norm into the convolution and the folded bias
records no origin. Both must PASS; a parameter really missing must still FAIL.
"""

from __future__ import annotations

import onnx_ir as ir
import pytest
import torch
import transformers

import graphtag
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


@pytest.fixture(scope="module")
def conv_bn_act(tmp_path_factory):
    torch.manual_seed(0)
    model = ConvBnAct().eval()
    perturb_parameters(model)
    with torch.no_grad():  # running statistics that are not the defaults
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("bn") / "conv_bn_act.onnx"
    export(model, (torch.randn(1, 3, 8, 8),), f=path, exporter="dynamo", optimize=True)
    return path


def test_tied_embedding_decoder_passes(tied_decoder):
    model = graphtag.load(tied_decoder)
    names = {v.name for v in iter_initializers(model)}
    # One initializer carries both recorded names: the rule must see through that.
    assert not {"lm_head.weight", "transformer.wte.weight"} <= names
    result = _coverage(model)
    assert result.status == "PASS", result.detail
    report = validate(model)
    assert report.passed, [(r.rule, r.detail) for r in report.results if r.status == "FAIL"]


def test_conv_batchnorm_activation_folded_passes(conv_bn_act):
    model = graphtag.load(conv_bn_act)
    names = {v.name for v in iter_initializers(model)}
    assert "bn.weight" not in names and "bn.bias" not in names  # really folded away
    result = _coverage(model)
    assert result.status == "PASS", result.detail
    assert "removed by the optimizer" in result.detail or "folded" in result.detail


@pytest.mark.parametrize(
    ("fixture", "module"),
    [("tied_decoder", "transformer.h.0.mlp.c_fc"), ("conv_bn_act", "head")],
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
