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

Higher-order operators (``torch.cond``, ``while_loop``, ``map``, ``scan``, ...) reach the
recorder as one call whose subgraphs are Python callables. The recorder runs the
operator's own eager implementation with every callable argument wrapped so that it runs
under the recorder again: the ATen operations of the branch taken, of every loop
iteration, ... are recorded like any other (nested higher-order operators included).
The operator's glue (the branch choice, stacking a map's results) runs unrecorded, so
one summary operation follows the inner ones: it reads the operator's tensor arguments
and every tensor a subgraph returned, and writes the operator's results and any tensor
argument whose version counter moved. An argument the recorder cannot make run under it
(an object that is neither a tensor, a callable, nor a plain value) may hide reads, so
the operator is noted in :attr:`DataflowRecorder.opaque`; liveness and dependence are
then not exact, and a caller must treat every tensor as live and input-dependent.

The recorder keeps a reference to every tensor it sees until it is discarded, so tensor
identities (``id``) are never reused during the run; that is the memory cost of an exact
answer (one run's intermediate tensors, as autograd would keep).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch._ops import HigherOrderOperator, OpOverload, OpOverloadPacket
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map


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

    ``opaque``: names of the higher-order operators whose inside could not be recorded
    (see the module docstring); when not empty, liveness and dependence are not exact.
    """

    supports_higher_order_operators = True  # handled in __torch_dispatch__

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[_Op] = []
        self.opaque: list[str] = []
        self._keep: dict[int, torch.Tensor] = {}  # id -> tensor: ids stay unique
        self._storage: dict[int, int] = {}  # tensor id -> storage key
        self._paused = 0
        self._stances: list[Any] = []

    def __enter__(self) -> DataflowRecorder:
        # torch.cond & co. run eagerly through torch.compile. Under a dispatch mode
        # Dynamo skips that frame and marks its code "skip" for good, so a later
        # torch.cond outside the recorder (an export, another run) fails to compile:
        # the recorded run ignores torch.compile instead, as the eager run it is.
        stance = torch.compiler.set_stance("force_eager")
        stance.__enter__()
        self._stances.append(stance)
        try:
            return super().__enter__()
        except BaseException:
            self._stances.pop().__exit__(None, None, None)
            raise

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._stances.pop().__exit__(*exc)

    @property
    def position(self) -> int:
        """Index the next recorded operation gets."""
        return len(self.ops)

    def paused(self) -> _Paused:
        return _Paused(self)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if isinstance(func, HigherOrderOperator):
            return self._higher_order(func, args, kwargs)
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

    def _higher_order(self, func: HigherOrderOperator, args: tuple, kwargs: dict) -> Any:
        """Run ``func`` (the recorder is off: torch popped it) with its subgraphs run under
        the recorder, then record the summary operation (module docstring)."""
        if self._paused:
            return func(*args, **kwargs)
        returned: list[torch.Tensor] = []
        hidden = False

        def under_recorder(fn: Callable) -> Callable:
            def run(*inner_args: Any, **inner_kwargs: Any) -> Any:
                with self:
                    out = fn(*inner_args, **inner_kwargs)
                returned.extend(_tensors(out))
                return out

            return run

        def wrap(leaf: Any) -> Any:
            nonlocal hidden
            if isinstance(leaf, torch.Tensor) or _is_plain(leaf):
                return leaf
            if callable(leaf) and not isinstance(leaf, type):
                return under_recorder(leaf)
            hidden = True  # an object whose work the recorder cannot reach
            return leaf

        wrapped_args, wrapped_kwargs = tree_map(wrap, (tuple(args), dict(kwargs)))
        given = _tensors((args, kwargs))
        versions = [tensor._version for tensor in given]
        out = func(*wrapped_args, **wrapped_kwargs)
        if hidden:
            self.opaque.append(func.name())
        reads = [self._track(t) for t in (*given, *returned)]
        writes = [self._track(t) for t in _tensors(out)]
        mutated = []
        for tensor, version in zip(given, versions, strict=True):
            if tensor._version != version:  # written in place by the operator's glue
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


_PLAIN = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    enum.Enum,
    torch.dtype,
    torch.device,
    torch.layout,
    torch.memory_format,
    torch.SymInt,
    torch.SymFloat,
    torch.SymBool,
    OpOverload,  # an ATen operator argument (out_dtype) reads only what it is given
    OpOverloadPacket,
)


def _is_plain(leaf: Any) -> bool:
    """A value that holds no tensor and runs no code of its own."""
    return isinstance(leaf, _PLAIN)


def _tensors(obj: Any) -> list[torch.Tensor]:
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
