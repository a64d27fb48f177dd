"""Record which modules consume each value, and which parameters each initializer holds."""

from __future__ import annotations

__all__ = [
    "ORIGIN",
    "MultiConsumerPass",
    "ParameterUse",
    "parameter_usage",
    "shared_parameters",
]

import ast
import dataclasses
import functools
import json
from collections import Counter
from collections.abc import Iterator

import onnx_ir as ir

from graphtag.core import metadata
from graphtag.core.graphs import iter_graphs
from graphtag.core.hierarchy import Hierarchy

# Value (initializer): JSON list of the PyTorch parameter/buffer names the tensor holds.
ORIGIN: str = metadata.ORIGIN


class MultiConsumerPass(ir.passes.InPlacePass):
    """Tag every value with the modules consuming it and map initializers to parameters.

    Reads: node ``pkg.graphtag.module`` (untagged consumers are ignored); the hierarchy in
    the model metadata (parameter and buffer names, own and inherited); initializer value
    metadata ``pkg.onnxscript.optimizer.folded_from`` (the repr of a list of the names the
    optimizer folded into the tensor: parameter names mixed with intermediate values).

    Writes value metadata, in the main graph, subgraphs and functions:

    * ``pkg.graphtag.consumers`` on every graph input, initializer and node output: the
      sorted JSON list of the distinct tags of the nodes that use the value, nodes of
      subgraphs reading it from an outer scope included. Being a graph output adds
      nothing (the graph says which values are outputs), so a value only returned gets
      ``[]``; ``include_unconsumed=false`` leaves such values without the key (and
      removes it if present).
    * ``pkg.graphtag.origin`` on initializers (``origin=true``, needs the hierarchy): the
      sorted JSON list of the parameter/buffer names the tensor holds: its own name, or
      for a folded tensor the parameter names among its ``folded_from`` entries. Only
      exact names count (a wrapper prefix such as TorchScript's ``model.`` is not
      stripped here, so validation still sees the renamed initializer). Tensors that hold
      no parameter (folded constants, shape tensors) get no origin; nor do tensors the
      optimizer rewrote without a record (batch norm fused into a convolution keeps the
      convolution's name and gains a ``<name>_bias``).

    Shared parameters (see :func:`parameter_usage`) are found from the graph alone: a
    parameter whose initializers are consumed by two or more distinct tags is *shared*
    (tied weights such as an LM head and its token embedding, a module reachable under
    two names); one consumed by two or more distinct torch ops of one tag is *reused*. A
    module called twice looks exactly like a module that uses a parameter twice in one
    call (both calls carry the same name scopes and so the same tag), so the pass cannot
    tell the two apart, nor count calls; ONNX nodes that come from one torch op (same
    ``pkg.torch.onnx.name_scopes``) count once. A tied parameter appears under the one
    name the exporter kept for its initializer; the module owning the other name shows
    as a consumer that does not own it (:attr:`ParameterUse.foreign_consumers`). Sharing
    is invisible once an exporter copies the tensor without recording it (TorchScript's
    constant folding stores a transposed LM head as a new ``onnx::MatMul_<n>``). Without
    a hierarchy every unfolded initializer counts as a parameter named by itself, and
    parameters folded into new tensors are not found.

    Invariants: only value metadata changes; linear in nodes + edges; idempotent (a
    second run reports ``modified=False``). After a run, :attr:`stats` counts annotated
    values and :attr:`parameters` holds the :func:`parameter_usage` summary.
    """

    def __init__(self, *, origin: bool = True, include_unconsumed: bool = True) -> None:
        super().__init__()
        self.origin = origin
        self.include_unconsumed = include_unconsumed
        self.stats: Counter[str] = Counter()
        self.parameters: dict[str, ParameterUse] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.stats = Counter()
        modified = False
        for value in iter_values(model):
            tags = _consumer_tags(value)
            self.stats["values"] += 1
            if len(tags) > 1:
                self.stats["multi_consumer"] += 1
            if tags or self.include_unconsumed:
                modified |= _set(value, metadata.CONSUMERS, _dump(tags))
            elif value.metadata_props.pop(metadata.CONSUMERS, None) is not None:
                modified = True  # stale: nothing consumes it any more
        hierarchy = Hierarchy.from_model(model)
        if self.origin and hierarchy is not None:
            resolver = _NameResolver(hierarchy)
            for value in iter_initializers(model):
                names = resolver.origin(value)
                if names:
                    self.stats["origins"] += 1
                    modified |= _set(value, ORIGIN, _dump(names))
                elif ORIGIN in value.metadata_props:
                    del value.metadata_props[ORIGIN]  # stale: the tensor holds no parameter
                    modified = True
        self.parameters = parameter_usage(model)
        self.stats["shared_parameters"] = sum(u.shared for u in self.parameters.values())
        self.stats["reused_parameters"] = sum(u.reused for u in self.parameters.values())
        return ir.passes.PassResult(model, modified=modified)


@dataclasses.dataclass
class ParameterUse:
    """How one PyTorch parameter (or buffer) is consumed in the graph."""

    name: str
    initializers: list[str]  # the initializers holding it: itself and/or folded copies
    uses: dict[str, int]  # consumer tag -> number of distinct torch ops of that tag using it
    owners: list[str]  # tags whose hierarchy entry lists it (own or inherited); [] if unknown

    @property
    def tags(self) -> list[str]:
        return sorted(self.uses)

    @property
    def shared(self) -> bool:
        """Consumed by two or more distinct modules (tied or aliased parameters)."""
        return len(self.uses) >= 2

    @property
    def reused(self) -> bool:
        """Consumed by two or more ops of one module (called twice, or used twice)."""
        return any(count >= 2 for count in self.uses.values())

    @property
    def foreign_consumers(self) -> list[str]:
        """Consumer tags that do not own the parameter (the tied side of a tied weight)."""
        return [tag for tag in self.tags if self.owners and tag not in self.owners]


def parameter_usage(model: ir.Model) -> dict[str, ParameterUse]:
    """Every parameter the graph holds, by name, with the modules consuming it.

    Computed from the graph (node tags, initializer names, ``folded_from``), whether or
    not :class:`MultiConsumerPass` ran. See the pass docstring for what it can detect.
    Unlike the origin metadata, an unfolded initializer whose name is unknown is matched
    by its longest known dotted suffix (``model.shared.weight`` -> ``shared.weight``).
    """
    hierarchy = Hierarchy.from_model(model)
    resolver = _NameResolver(hierarchy) if hierarchy is not None else None
    holders: dict[str, list[ir.Value]] = {}
    for value in iter_initializers(model):
        if resolver is not None:
            names = resolver.origin(value, suffixes=True)
        elif metadata.ONNXSCRIPT_FOLDED_FROM in value.metadata_props or not value.name:
            names = []
        else:
            names = [value.name]
        for name in names:
            holders.setdefault(name, []).append(value)
    usage = {}
    for name in sorted(holders):
        ops: dict[str, set] = {}
        for value in holders[name]:
            for use in value.uses():
                tag = metadata.node_tag(use.node)
                if tag:
                    ops.setdefault(tag, set()).add(_op_key(use.node))
        owners = resolver.owners.get(name, []) if resolver is not None else []
        usage[name] = ParameterUse(
            name=name,
            initializers=sorted(v.name or "" for v in holders[name]),
            uses={tag: len(keys) for tag, keys in sorted(ops.items())},
            owners=sorted(owners),
        )
    return usage


def shared_parameters(model: ir.Model) -> dict[str, list[str]]:
    """Parameters consumed by several modules, or several times by one: name -> tags."""
    return {
        name: use.tags for name, use in parameter_usage(model).items() if use.shared or use.reused
    }


# ---------------------------------------------------------------- helpers


def iter_initializers(model: ir.Model) -> Iterator[ir.Value]:
    for graph in iter_graphs(model):
        if isinstance(graph, ir.Graph):
            yield from graph.initializers.values()


def iter_values(model: ir.Model) -> Iterator[ir.Value]:
    """Graph inputs, initializers and node outputs of every graph, each once."""
    for graph in iter_graphs(model):
        seen: set[int] = set()
        initializers = graph.initializers.values() if isinstance(graph, ir.Graph) else ()
        outputs = (v for node in graph for v in node.outputs)
        for group in (graph.inputs, initializers, outputs):
            for value in group:
                if id(value) not in seen:
                    seen.add(id(value))
                    yield value


def _consumer_tags(value: ir.Value) -> list[str]:
    return sorted({tag for use in value.uses() if (tag := metadata.node_tag(use.node))})


def _op_key(node: ir.Node) -> object:
    # ONNX nodes lowered from one torch op share the exporter's name scopes (whose last
    # element is the FX node); without them every ONNX node is its own op.
    return node.metadata_props.get(metadata.TORCH_NAME_SCOPES) or id(node)


def _dump(items: list) -> str:
    return json.dumps(items, separators=(",", ":"))


def _set(value: ir.Value, key: str, text: str) -> bool:
    if value.metadata_props.get(key) == text:
        return False
    value.metadata_props[key] = text
    return True


@functools.lru_cache(maxsize=1024)
def _parse_list(text: str) -> tuple[str, ...]:
    try:
        items = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return ()
    if isinstance(items, str):
        return (items,)
    if not isinstance(items, (list, tuple)):
        return ()
    return tuple(str(item) for item in items)


class _NameResolver:
    """Initializer names and ``folded_from`` entries -> hierarchy parameter/buffer names."""

    def __init__(self, hierarchy: Hierarchy) -> None:
        self.owners: dict[str, list[str]] = {}
        for info in hierarchy:
            for name in (
                *info.parameters,
                *info.buffers,
                *info.inherited_parameters,
                *info.inherited_buffers,
            ):
                self.owners.setdefault(name, []).append(info.tag)
        self._cache: dict[str, str | None] = {}

    def by_suffix(self, name: str) -> str | None:
        if name not in self._cache:
            found = None
            cut = name.find(".")
            while found is None and cut >= 0:
                suffix = name[cut + 1 :]
                found = suffix if suffix in self.owners else None
                cut = name.find(".", cut + 1)
            self._cache[name] = found
        return self._cache[name]

    def origin(self, value: ir.Value, *, suffixes: bool = False) -> list[str]:
        folded = value.metadata_props.get(metadata.ONNXSCRIPT_FOLDED_FROM)
        if folded:
            return sorted({name for name in _parse_list(folded) if name in self.owners})
        name = value.name or ""
        if name in self.owners:
            return [name]
        found = self.by_suffix(name) if suffixes else None
        return [found] if found else []
