"""Which PyTorch parameters the graph holds and which modules use them (torch-free).

The one answer to "which parameters are shared", used by the multi-consumer pass,
``graphtag analyze``, ``graphtag snapshot`` and ``graphtag validate``. It is computed from
the graph alone -- node tags, initializer names, onnxscript's ``folded_from`` records,
the exporter's name scopes and the hierarchy's parameter and buffer names. The records
the multi-consumer pass writes (``pkg.graphtag.consumers``, ``pkg.graphtag.origin``) are
never read here: the graph is the truth, and ``graphtag validate`` checks those records
against it.

Which initializers hold parameter ``P`` (with a hierarchy; its parameters and buffers,
own and inherited, are the known names):

* an initializer named ``P``;
* an initializer the optimizer folded ``P`` into (``P`` among its ``folded_from``);
* an unfolded initializer named ``<prefix>.P`` for the longest such known ``P``: a
  wrapper module's prefix (TorchScript's keyword-input wrapper names every weight
  ``model.<P>``). The parameter is reported under its PyTorch name ``P``, the
  initializer under its own name in :attr:`ParameterUse.initializers`.

Without a hierarchy every initializer the optimizer did not fold is a parameter named
by itself, and folded ones hold none.

How it is used: per consumer tag, the number of distinct torch ops reading one of its
initializers (ONNX nodes lowered from one torch op share the exporter's name scopes and
count once; without name scopes each node is its own op). A parameter is

* *shared* when two or more modules use it (tied weights such as an LM head and its
  token embedding, a module reachable under two names);
* *reused* when two or more ops of one module use it. A module called twice cannot be
  told from a module using a weight twice in one call (both calls carry the same name
  scopes, hence the same tag), so both are *reused* and calls are not counted.

Both kinds are what ``analyze`` and ``snapshot`` report as shared parameters. A tied
parameter appears under the one name the exporter kept; the module owning the other
name shows as a consumer that does not own it (:attr:`ParameterUse.foreign_consumers`).
Sharing is invisible once an exporter copies a tensor without recording it
(TorchScript's constant folding stores a transposed LM head as ``onnx::MatMul_<n>``).

*Merged* parameters (:func:`initializer_copies`): TorchScript's
exporter keeps one initializer for parameters of identical value (two default-initialised
``LayerNorm``s) and writes the others as copies, ``Identity(n1.weight) -> n2.weight``,
outside any module call. Such a copy is a node output, not an initializer: the parameter
it is named after is held by the initializer it copies.
"""

from __future__ import annotations

__all__ = [
    "NameResolver",
    "ParameterUse",
    "initializer_copies",
    "parameter_usage",
    "recorded_origins",
    "recorded_parameters",
    "shared_parameters",
]

import dataclasses

import onnx_ir as ir

from graphtag.analysis.manager import PARAMETERS, cached, hierarchy
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes, iter_initializers
from graphtag.core.hierarchy import Hierarchy


@dataclasses.dataclass
class ParameterUse:
    """How one PyTorch parameter (or buffer) is used in the graph."""

    name: str
    initializers: list[str]  # the initializers holding it: itself and/or folded copies
    uses: dict[str, int]  # consumer tag -> number of distinct torch ops of that tag using it
    owners: list[str]  # tags whose hierarchy entry lists it (own or inherited); [] if unknown

    @property
    def tags(self) -> list[str]:
        return sorted(self.uses)

    @property
    def shared(self) -> bool:
        """Used by two or more distinct modules (tied or aliased parameters)."""
        return len(self.uses) >= 2

    @property
    def reused(self) -> bool:
        """Used by two or more ops of one module (called twice, or used twice)."""
        return any(count >= 2 for count in self.uses.values())

    @property
    def foreign_consumers(self) -> list[str]:
        """Consumer tags that do not own the parameter (the tied side of a tied weight)."""
        return [tag for tag in self.tags if self.owners and tag not in self.owners]

    def to_json_dict(self) -> dict:
        return {**dataclasses.asdict(self), "modules": self.tags}


class NameResolver:
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
        self._suffix: dict[str, str | None] = {}

    def by_suffix(self, name: str) -> str | None:
        """The longest known name ``name`` ends with after a dot (a wrapper's prefix)."""
        if name not in self._suffix:
            found = None
            cut = name.find(".")
            while found is None and cut >= 0:
                suffix = name[cut + 1 :]
                found = suffix if suffix in self.owners else None
                cut = name.find(".", cut + 1)
            self._suffix[name] = found
        return self._suffix[name]

    def origin(self, value: ir.Value, *, suffixes: bool = False) -> list[str]:
        """The known names ``value`` holds: its folded parameters, its own name, the
        origin recorded for it (``suffixes``: or the known name its name ends with)."""
        folded = metadata.folded_from(value)
        if folded:
            return sorted({name for name in folded if name in self.owners})
        name = value.name or ""
        if name in self.owners:
            return [name]
        # A constant another tool folded keeps the origin recorded for it (retag does).
        recorded = [n for n in metadata.origin(value) or () if n in self.owners]
        if recorded:
            return sorted(set(recorded))
        found = self.by_suffix(name) if suffixes else None
        return [found] if found else []


def parameter_usage(model: ir.Model) -> dict[str, ParameterUse]:
    """Every parameter the graph holds, by name (sorted), with the modules using it.

    Cached within an analysis scope (:mod:`graphtag.analysis.manager`).
    """
    return cached(model, PARAMETERS, _parameter_usage)


def _parameter_usage(model: ir.Model) -> dict[str, ParameterUse]:
    tree = hierarchy(model)
    resolver = NameResolver(tree) if tree is not None else None
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


def _op_key(node: ir.Node) -> object:
    # ONNX nodes lowered from one torch op share the exporter's name scopes (whose last
    # element is the FX node); without them every ONNX node is its own op.
    return node.metadata_props.get(metadata.TORCH_NAME_SCOPES) or id(node)


def shared_parameters(model: ir.Model) -> dict[str, list[str]]:
    """Parameters used by several modules, or several times by one: name -> tags."""
    return {
        name: use.tags for name, use in parameter_usage(model).items() if use.shared or use.reused
    }


def recorded_parameters(hierarchy: Hierarchy | None) -> dict[str, str]:
    """Every parameter recorded in the hierarchy (own and inherited) -> its module's tag."""
    owners: dict[str, str] = {}
    for info in hierarchy or ():
        for name in [*info.parameters, *info.inherited_parameters]:
            owners.setdefault(name, info.tag)
    return owners


def recorded_origins(model: ir.Model) -> set[str]:
    """Every name recorded as folded into some initializer or node output: onnxscript's
    ``folded_from`` and graphtag's ``pkg.graphtag.origin``."""
    values = [*iter_initializers(model), *(o for n in iter_all_nodes(model) for o in n.outputs)]
    found: set[str] = set()
    for value in values:
        if value.name:
            found.update(metadata.folded_from(value))
            found.update(metadata.origin(value) or ())
    return found


def initializer_copies(model: ir.Model) -> dict[ir.Value, ir.Value]:
    """Every value that is a copy of an initializer -> that initializer.

    A copy is the output of an ``Identity`` whose input is an initializer or another
    copy: a chain of constants that reads no other graph input or node output (an
    initializer also listed as a graph input, ``keep_initializers_as_inputs``, still
    counts), in the main graph, subgraphs and functions. Linear in the number of nodes
    (each chain is followed once).
    """
    copies: dict[ir.Value, ir.Value] = {}
    seen: set[ir.Value] = set()  # copy-free values, and cycle guard
    for node in iter_all_nodes(model):
        if not _is_identity(node):
            continue
        chain: list[ir.Value] = []
        value = node.outputs[0]
        while value not in copies and value not in seen:
            seen.add(value)
            producer = value.producer()
            if producer is None or not _is_identity(producer) or producer.inputs[0] is None:
                break
            chain.append(value)
            value = producer.inputs[0]
        source = copies.get(value, value if value.is_initializer() else None)
        if source is not None:
            copies.update(dict.fromkeys(chain, source))
    return copies


def _is_identity(node: ir.Node) -> bool:
    return (
        node.op_type == "Identity"
        and node.domain in ("", "ai.onnx")
        and len(node.inputs) == 1
        and len(node.outputs) == 1
    )
