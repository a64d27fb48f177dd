"""Models the benchmarks share (import torch; run the benchmarks as scripts)."""

from __future__ import annotations

from pathlib import Path


def gpt2_24l(*, vocab_size: int = 2000, seq_len: int = 16, attention_mask: bool = False, **config):
    """GPT-2 with 24 layers, hidden 256, perturbed random weights; (model, forward kwargs)."""
    import torch
    import transformers

    from graphtag.exporter.examples import perturb_parameters

    cfg = transformers.GPT2Config(
        n_layer=24, n_embd=256, n_head=4, vocab_size=vocab_size, n_positions=128, **config
    )
    torch.manual_seed(0)
    model = transformers.GPT2Model(cfg).eval()
    perturb_parameters(model)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (1, seq_len), generator=gen)
    kwargs = {"input_ids": ids, "use_cache": False}
    if attention_mask:
        kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "use_cache": False}
    return model, kwargs


def export_gpt2_24l(path: Path, **options) -> Path:
    """``gpt2_24l()`` exported tagged to ``path`` with graphtag.export's ``options``, quietly."""
    import graphtag

    model, kwargs = gpt2_24l()
    graphtag.export(model, (), kwargs, path, verbose=False, **options)
    return path
