"""Example models embedded in graphtag, usable offline (no hub access needed).

``graphtag export graphtag.exporter.examples:tiny_bert bert-tiny.onnx`` exports a BERT
with the architecture of google/bert_uncased_L-2_H-128_A-2 built from its config with
random weights.
"""

from __future__ import annotations

import torch

from graphtag.exporter.example_inputs import ExampleInputs


def perturb_parameters(model: torch.nn.Module, seed: int = 0, scale: float = 0.02) -> None:
    """Add noise to every parameter so no bias is all-zero and no norm weight all-ones.

    Default initialisation leaves such constant tensors, which the exporter's optimizer
    removes or merges; perturbed weights keep every parameter visible in the graph.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen, dtype=param.dtype) * scale)


def tiny_bert() -> tuple[torch.nn.Module, ExampleInputs]:
    """BERT L-2 H-128 A-2 (intermediate 512) with random weights, and example inputs."""
    import transformers

    config = transformers.BertConfig(
        vocab_size=30522,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=512,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    perturb_parameters(model)
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, config.vocab_size, (1, 16), generator=gen)
    inputs = ExampleInputs(
        kwargs={
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "token_type_ids": torch.zeros_like(input_ids),
        }
    )
    return model, inputs
