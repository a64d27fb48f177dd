"""The test zoo: small models built from transformers config classes, random weights.

Weights are perturbed (graphtag.exporter.examples.perturb_parameters) so no bias is
all-zero and no norm weight all-ones; otherwise the exporter's optimizer drops or
merges those parameters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import transformers
from torch import nn

from graphtag.exporter.example_inputs import ExampleInputs, make_example_inputs
from graphtag.exporter.examples import perturb_parameters, tiny_bert


@dataclasses.dataclass(frozen=True)
class ZooModel:
    name: str
    build: Callable[[], tuple[nn.Module, ExampleInputs]]
    # Exporters expected to work; others are expected to fail with a clear message.
    exporters: tuple[str, ...] = ("dynamo", "torchscript")


def _hf(config_cls, model_cls, **config_kwargs):
    def build():
        torch.manual_seed(0)
        config = config_cls(**config_kwargs)
        model = model_cls(config).eval()
        perturb_parameters(model)
        return model, make_example_inputs(model, config)

    return build


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.relu(self.proj(x)) + x)


class SiblingsNet(nn.Module):
    """Same-class siblings, an nn.Sequential, a ModuleList and a module called twice."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.left = Block(width)
        self.right = Block(width)
        self.stack = nn.Sequential(Block(width), nn.GELU(), Block(width))
        self.layers = nn.ModuleList([Block(width)])
        self.shared = Block(width)
        self.head = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.left(x) * self.right(x)
        h = self.stack(h)
        for layer in self.layers:
            h = layer(h)
        h = self.shared(self.shared(h))  # called twice: same name_scopes both times
        return self.head(h)


def _siblings():
    torch.manual_seed(0)
    model = SiblingsNet().eval()
    perturb_parameters(model)
    return model, ExampleInputs(
        args=(torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1)),)
    )


_GPT2_SIZES = {"n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 1000, "n_positions": 64}

ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in [
        ZooModel("bert", tiny_bert),
        ZooModel(
            "gpt2",
            _hf(
                transformers.GPT2Config,
                transformers.GPT2Model,
                **_GPT2_SIZES,
            ),
        ),
        ZooModel(
            "gpt2-lmhead",
            _hf(
                transformers.GPT2Config,
                transformers.GPT2LMHeadModel,
                **_GPT2_SIZES,
            ),
        ),
        # transformers 5's sdpa attention does not export with dynamo for this model (a
        # strided view): the strict dynamo route fails, auto exports it with eager
        # attention (tests/test_export_ladder.py), TorchScript as given.
        ZooModel(
            "t5",
            _hf(
                transformers.T5Config,
                transformers.T5Model,
                d_model=64,
                d_kv=32,
                d_ff=128,
                num_layers=2,
                num_heads=2,
                vocab_size=1000,
            ),
            exporters=("torchscript",),
        ),
        ZooModel(
            "vit",
            _hf(
                transformers.ViTConfig,
                transformers.ViTModel,
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=128,
                image_size=32,
                patch_size=8,
            ),
        ),
        ZooModel(
            "resnet",
            _hf(
                transformers.ResNetConfig,
                transformers.ResNetModel,
                embedding_size=16,
                hidden_sizes=[16, 32],
                depths=[1, 1],
                layer_type="basic",
            ),
        ),
        ZooModel("siblings", _siblings),
    ]
}


# Module-level factories, so the zoo can be named as MODEL (``tests/zoo.py:bert``) by
# ``graphtag export`` and by the sample zoo file tests/ZOO.toml.
bert = ZOO["bert"].build
resnet = ZOO["resnet"].build
siblings = ZOO["siblings"].build
gpt2_lmhead = ZOO["gpt2-lmhead"].build


def deeper_siblings():
    """siblings with one more block in its ModuleList: a deliberate change for tests."""
    model, inputs = _siblings()
    extra = Block(16)
    perturb_parameters(extra, seed=1)
    model.layers.append(extra.eval())
    return model, inputs
