"""ONNX translations graphtag adds to torch's TorchScript exporter, for ops it lacks.

:func:`extra_symbolics` registers them for the duration of one TorchScript export and
then restores torch's own (a user's process keeps torch's behaviour outside graphtag).

* ``aten::multinomial`` without replacement: torch's exporter refuses it for more than
  one sample (ONNX's ``Multinomial`` samples with replacement). It is lowered with the
  Gumbel-top-k trick: the ``k`` largest of ``log p + Gumbel noise`` are ``k`` draws
  without replacement, distributed as ``torch.multinomial`` draws them (each next index
  with probability proportional to the weights left). ``k`` may be a traced value (a
  count computed from the inputs), since ``TopK`` takes it as an input. A model that
  samples (ViLT picks its image patches this way) then exports; its outputs are random
  on both sides, which ``graphtag verify`` reports as RANDOM. With replacement the
  translation is torch's (ONNX ``Multinomial``).
"""

from __future__ import annotations

__all__ = ["extra_symbolics"]

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch.onnx import symbolic_helper

_FIRST_OPSET = 10  # TopK takes k as an input from opset 10 on
_INT64 = 7  # onnx.TensorProto.INT64, without importing onnx here
_log = logging.getLogger(__name__)


def _multinomial(g, probabilities, num_samples, replacement=False, generator=None):
    if generator is not None and not symbolic_helper._is_none(generator):
        return symbolic_helper._unimplemented("multinomial", "a generator", probabilities)
    samples = symbolic_helper._maybe_get_const(num_samples, "i")
    log_p = g.op("Log", probabilities)
    if symbolic_helper._maybe_get_const(replacement, "b"):
        if not isinstance(samples, int):
            return symbolic_helper._unimplemented(
                "multinomial", "a computed sample count with replacement", probabilities
            )
        return g.op("Multinomial", log_p, dtype_i=_INT64, sample_size_i=samples)
    # Gumbel noise -log(-log(u)), u uniform in (0, 1]: log 0 would be -inf.
    uniform = g.op("RandomUniformLike", probabilities, low_f=1e-20, high_f=1.0)
    gumbel = g.op("Neg", g.op("Log", g.op("Neg", g.op("Log", uniform))))
    if isinstance(samples, int):
        k = g.op("Constant", value_t=torch.tensor([samples], dtype=torch.int64))
    else:
        shape = g.op("Constant", value_t=torch.tensor([1], dtype=torch.int64))
        k = g.op("Reshape", g.op("Cast", num_samples, to_i=_INT64), shape)
    _, indices = g.op(
        "TopK", g.op("Add", log_p, gumbel), k, axis_i=-1, largest_i=1, sorted_i=1, outputs=2
    )
    return indices


_SYMBOLICS = {"aten::multinomial": _multinomial}


@contextlib.contextmanager
def extra_symbolics(opset: int | None) -> Iterator[None]:
    """graphtag's translations registered for one export at ``opset`` (None: torch's
    default), then removed; below opset 10 nothing is registered."""
    if opset is not None and opset < _FIRST_OPSET:
        yield
        return
    version = opset if opset is not None else _FIRST_OPSET
    # A translation the user registered is theirs to keep: torch's unregister would drop
    # it along with ours, and theirs is what their export asked for.
    ours = {name: f for name, f in _SYMBOLICS.items() if not _user_registered(name)}
    for name, function in ours.items():
        torch.onnx.register_custom_op_symbolic(name, function, version)
    try:
        yield
    finally:
        for name in ours:
            torch.onnx.unregister_custom_op_symbolic(name, version)


def _user_registered(name: str) -> bool:
    """Whether a custom translation of ``name`` is registered (torch.onnx's
    register_custom_op_symbolic, at any opset)."""
    try:
        from torch.onnx._internal.torchscript_exporter.registration import registry
    except ImportError:
        try:  # where older torch releases keep it
            from torch.onnx._internal.registration import registry
        except ImportError:
            _log.debug("torch's symbolic registry not found; graphtag's %s is used", name)
            return False
    group = registry.get_function_group(name)
    overrides = getattr(getattr(group, "_functions", None), "_overrides", None)
    if overrides is None and group is not None:
        _log.debug("cannot read torch's custom translations of %s; graphtag's is used", name)
    return bool(overrides)
