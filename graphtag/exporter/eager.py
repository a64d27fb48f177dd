"""Running the user's module eagerly without leaving a trace on it.

graphtag runs the module itself in three places: to check that example inputs fit
(``export``, ``verify`` and ``profile`` on a model source), to capture every module's
outputs (``verify``) and to time modules (``profile --torch``). A forward that updates
a buffer (a running statistic, a call counter, a cache) would leave the module in
another state than the user gave it. Two things then go wrong: the export holds the
advanced buffer where ``torch.onnx.export`` of the same module holds the original, and,
because the initializers of torch's exported model share the buffers' storage, a
later eager run changes the ONNX model it is compared with (a false MISMATCH).
"""

from __future__ import annotations

__all__ = ["require_hooks", "state_kept"]

import contextlib
import logging
from collections.abc import Iterator

import torch

from graphtag.core.errors import GraphtagError

logger = logging.getLogger(__name__)


def require_hooks(module: torch.nn.Module, what: str) -> None:
    """Refuse a TorchScript module (``torch.jit.script``/``trace``) for ``what``, which
    watches each module through forward hooks: TorchScript modules take none."""
    if any(isinstance(sub, torch.jit.ScriptModule) for sub in module.modules()):
        raise GraphtagError(
            f"{what} watches each module's calls through forward hooks, which TorchScript "
            "modules (torch.jit.script or torch.jit.trace) do not support; give the eager "
            "module they were made from"
        )


@contextlib.contextmanager
def state_kept(module: torch.nn.Module) -> Iterator[None]:
    """Restore, when the block ends, every buffer of ``module`` the block edited in place
    or rebound (``self.count = self.count + 1``); warn about parameters edited in place.

    Buffers are copied before the block (they are statistics and counters, small next to
    the weights); a copy is written back only when the buffer's version counter moved.
    Parameters are not copied (they can be gigabytes): one edited in place (an
    ``Embedding`` with ``max_norm`` renormalizes its rows) is named in a warning.
    """
    saved: dict[int, tuple[torch.Tensor, int, torch.Tensor]] = {}
    slots: list[tuple[torch.nn.Module, str, torch.Tensor]] = []
    for owner in module.modules():
        for name, buffer in owner._buffers.items():
            if buffer is None:
                continue
            slots.append((owner, name, buffer))
            if id(buffer) not in saved:
                saved[id(buffer)] = (buffer, buffer._version, buffer.detach().clone())
    parameters = [(name, p, p._version) for name, p in module.named_parameters()]
    try:
        yield
    finally:
        for owner, name, buffer in slots:
            if owner._buffers.get(name) is not buffer:
                owner._buffers[name] = buffer
        with torch.no_grad():
            for buffer, version, copy in saved.values():
                if buffer._version != version:
                    buffer.copy_(copy)
        edited = [name for name, p, version in parameters if p._version != version]
        if edited:
            logger.warning(
                "the model's forward edited parameter(s) %s in place; they keep the values "
                "of graphtag's eager run",
                ", ".join(edited[:5]) + (f" and {len(edited) - 5} more" if len(edited) > 5 else ""),
            )
