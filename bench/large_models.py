"""The models of bench/bench_large.py: Llama-shaped decoders built from configs, no downloads.

* ``weights``: the shape of TinyLlama (hidden 2048, MLP 5632, 32 heads, 4 KV heads,
  vocabulary 32000, untied output projection) with 12 layers instead of 22: 0.66 B
  parameters, 2.6 GB in float32, so the export needs external data.
* ``nodes``: a thin decoder (hidden 32, MLP 64, 2 heads, 1 KV head, vocabulary 128) with
  550 layers: about 100.2k nodes when exported with ``optimize=False`` (182 nodes a layer
  plus 87; torch's optimizer would leave 64 a layer, and 1,600 layers take too long to
  trace here). The README's figures were measured with 530 layers: 96,547 nodes.
* ``nodes-10k``: the same decoder with 53 layers (9,733 nodes), for t(100k)/t(10k).

Each factory returns ``(model, ExampleInputs)`` (``graphtag export
bench/large_models.py:weights out.onnx`` works too); the weights are random but fixed
by the seed, and the inputs are ``input_ids`` and ``attention_mask`` of shape 1x16.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported by the factories only: the benchmark's parent stays small
    import torch

    from graphtag.exporter.example_inputs import ExampleInputs


@dataclasses.dataclass(frozen=True)
class Spec:
    config: dict[str, Any]
    options: dict[str, Any]  # torch.onnx.export options, the same on both sides
    layer: str  # the decoder layer extracted on its own


_WIDE = dict(
    hidden_size=2048,
    intermediate_size=5632,
    num_attention_heads=32,
    num_key_value_heads=4,
    vocab_size=32000,
)
_THIN = dict(
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=2,
    num_key_value_heads=1,
    vocab_size=128,
)
_LAYER = "/LlamaForCausalLM/LlamaModel/LlamaDecoderLayer.{}"

SPECS: dict[str, Spec] = {
    "weights": Spec({**_WIDE, "num_hidden_layers": 12}, {}, _LAYER.format(5)),
    "nodes": Spec({**_THIN, "num_hidden_layers": 550}, {"optimize": False}, _LAYER.format(275)),
    "nodes-10k": Spec({**_THIN, "num_hidden_layers": 53}, {"optimize": False}, _LAYER.format(26)),
    # Small stand-ins to try the benchmark quickly (--models tiny-weights,tiny-nodes).
    "tiny-weights": Spec(
        {**_THIN, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4},
        {},
        _LAYER.format(1),
    ),
    "tiny-nodes": Spec({**_THIN, "num_hidden_layers": 8}, {"optimize": False}, _LAYER.format(4)),
}


def build(name: str, *, layers: int | None = None) -> tuple[torch.nn.Module, ExampleInputs]:
    """The model ``name`` of :data:`SPECS` (``layers`` overrides its depth) and its inputs."""
    import torch
    import transformers

    from graphtag.exporter.example_inputs import ExampleInputs

    config = dict(SPECS[name].config)
    if layers is not None:
        config["num_hidden_layers"] = layers
    cfg = transformers.LlamaConfig(
        **config,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        use_cache=False,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    return model, ExampleInputs(kwargs={"input_ids": ids, "attention_mask": torch.ones_like(ids)})


def parameter_count(name: str) -> int:
    """Parameters of model ``name``, from its config (no model built)."""
    c = SPECS[name].config
    h, m, v, n = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_hidden_layers"]
    kv = h // c["num_attention_heads"] * c["num_key_value_heads"]
    layer = 2 * h * h + 2 * h * kv + 3 * h * m + 2 * h
    return n * layer + 2 * v * h + h


def weights() -> tuple[torch.nn.Module, ExampleInputs]:
    return build("weights")


def nodes() -> tuple[torch.nn.Module, ExampleInputs]:
    return build("nodes")


def nodes_10k() -> tuple[torch.nn.Module, ExampleInputs]:
    return build("nodes-10k")
