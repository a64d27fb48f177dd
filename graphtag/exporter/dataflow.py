"""Which tensors of an eager PyTorch run the model's result depends on (liveness).

``graphtag verify`` must tell "no ONNX node produces this module output because nothing
uses it" (the exporter removed dead code, which is right) from "the export is wrong".
The answer comes from the eager run itself, not from the ONNX graph under test:
:class:`DataflowRecorder` (a ``TorchDispatchMode``) records every ATen operation of the
run as (tensors read, tensors written); :meth:`DataflowRecorder.liveness` then walks the
operations backwards from the tensors the model returned. A tensor is *live* when a live
operation reads it or it is part of the result; an operation is live when it writes a
live tensor, or writes in place into storage that a later live operation reads (a view
of a buffer being filled). Everything else is dead: removing it cannot change the
model's outputs, so an exporter may drop it.

:meth:`DataflowRecorder.dependence` walks the same operations forwards from the model's
inputs: a tensor that does not depend on them (``torch.zeros(...)`` returned by a module,
a value computed from parameters only) is a constant of the traced program, which an
exporter may fold into every consumer instead of computing it where PyTorch did.
Dependence carried by Python numbers (``.item()``, sizes, data-dependent control flow)
is not seen: an exporter that traces bakes those values in as well.

The recorder keeps a reference to every tensor it sees until it is discarded, so tensor
identities (``id``) are never reused during the run; that is the memory cost of an exact
answer (one run's intermediate tensors, as autograd would keep).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


@dataclasses.dataclass
class _Op:
    reads: tuple[int, ...]  # ids of the tensors read
    writes: tuple[int, ...]  # ids of the tensors returned or mutated
    mutated_storages: tuple[int, ...]  # storages written in place


@dataclasses.dataclass
class Liveness:
    """The verdict of one recorded run."""

    live: set[int]  # ids of live tensors
    last_live_read: dict[int, int]  # tensor id -> index of the last live op reading it
    result: set[int]  # ids of the tensors the model returned

    def is_live(self, tensor: torch.Tensor) -> bool:
        return id(tensor) in self.live or id(tensor) in self.result

    def read_after(self, tensor: torch.Tensor, index: int) -> bool:
        """A live operation at ``index`` or later reads ``tensor``, or it is in the result."""
        return id(tensor) in self.result or self.last_live_read.get(id(tensor), -1) >= index


@dataclasses.dataclass
class Dependence:
    """Which tensors of one recorded run depend on the given source tensors."""

    tensors: dict[int, int]  # tensor id -> index of the op that made it depend (-1: a source)
    storages: dict[int, int]  # storage key -> index of the first dependent write (-1: source)
    storage_of: dict[int, int]  # tensor id -> storage key, for the tensors seen

    def depends(self, tensor: torch.Tensor, before: int | None = None) -> bool:
        """Whether ``tensor``'s value depends on a source, by the time the op at ``before``
        runs (None: at the end of the run). A tensor sharing storage with one a
        dependent op wrote into counts as dependent (a view of a buffer being filled)."""
        limit = float("inf") if before is None else before
        made = self.tensors.get(id(tensor))
        if made is not None and made < limit:
            return True
        storage = self.storage_of.get(id(tensor), _storage_key(tensor))
        written = self.storages.get(storage)
        return written is not None and written < limit


class DataflowRecorder(TorchDispatchMode):
    """Records (reads, writes) of every ATen operation run while the mode is active.

    ``paused`` (a context manager) runs operations without recording them, for work
    that is not the model's own (copying tensors in a forward hook).
    """

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[_Op] = []
        self._keep: dict[int, torch.Tensor] = {}  # id -> tensor: ids stay unique
        self._storage: dict[int, int] = {}  # tensor id -> storage key
        self._paused = 0

    @property
    def position(self) -> int:
        """Index the next recorded operation gets."""
        return len(self.ops)

    def paused(self) -> _Paused:
        return _Paused(self)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self._paused:
            return out
        reads = [self._track(t) for t in _tensors((args, kwargs))]
        writes = [self._track(t) for t in _tensors(out)]
        mutated = []
        for tensor in _written_arguments(func, args, kwargs):  # in place and out=
            writes.append(self._track(tensor))
            mutated.append(self._storage[id(tensor)])
        self.ops.append(_Op(tuple(reads), tuple(writes), tuple(mutated)))
        return out

    def _track(self, tensor: torch.Tensor) -> int:
        key = id(tensor)
        if key not in self._keep:
            self._keep[key] = tensor
            self._storage[key] = _storage_key(tensor)
        return key

    def liveness(self, result: Iterable[torch.Tensor]) -> Liveness:
        """Backward walk from ``result``: the tensors the model returned."""
        result = list(result)
        sinks = {id(t) for t in result}
        live = set(sinks)
        live_storages = {_storage_key(t) for t in result}
        last_read: dict[int, int] = {}
        for index in range(len(self.ops) - 1, -1, -1):
            op = self.ops[index]
            if not (
                any(w in live for w in op.writes)
                or any(s in live_storages for s in op.mutated_storages)
            ):
                continue
            for tensor_id in op.reads:
                live.add(tensor_id)
                live_storages.add(self._storage[tensor_id])
                last_read.setdefault(tensor_id, index)  # walking backwards: first seen is last
        return Liveness(live, last_read, sinks)

    def dependence(self, sources: Iterable[torch.Tensor]) -> Dependence:
        """Forward walk from ``sources`` (the model's inputs): an op that reads a
        dependent tensor (or a tensor whose storage a dependent op wrote into) makes
        every tensor it returns or writes dependent, and the storages it writes in place."""
        sources = list(sources)
        tensors = {id(t): -1 for t in sources}
        storages = {_storage_key(t): -1 for t in sources}
        for index, op in enumerate(self.ops):
            if not any(r in tensors or self._storage.get(r) in storages for r in op.reads):
                continue
            for tensor_id in op.writes:
                tensors.setdefault(tensor_id, index)
            for storage in op.mutated_storages:
                storages.setdefault(storage, index)
        return Dependence(tensors, storages, dict(self._storage))

    def discard(self) -> None:
        """Drop the references kept during the run."""
        self._keep.clear()
        self._storage.clear()
        self.ops.clear()


class _Paused:
    def __init__(self, recorder: DataflowRecorder) -> None:
        self.recorder = recorder

    def __enter__(self) -> None:
        self.recorder._paused += 1

    def __exit__(self, *exc: object) -> None:
        self.recorder._paused -= 1


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    return [leaf for leaf in tree_leaves(obj) if isinstance(leaf, torch.Tensor)]


def _written_arguments(func: Any, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """Tensors the operation writes into (its schema marks them ``Tensor(a!)``)."""
    arguments = getattr(getattr(func, "_schema", None), "arguments", ())
    by_name = {argument.name: argument for argument in arguments}
    pairs = [*zip(arguments, args), *((by_name.get(k), v) for k, v in kwargs.items())]
    written = []
    for argument, value in pairs:
        info = getattr(argument, "alias_info", None)
        if info is not None and info.is_write:
            written.extend(_tensors(value))
    return written


def _storage_key(tensor: torch.Tensor) -> int:
    try:
        return tensor.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError):  # tensors without storage (sparse, ...)
        return -id(tensor)
