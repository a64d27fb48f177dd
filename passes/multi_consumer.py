"""Record which modules consume each value, and which parameters each initializer holds."""

from __future__ import annotations

__all__ = ["MultiConsumerPass"]

import logging
from collections import Counter
from typing import Annotated

import onnx_ir as ir

from graphtag.analysis import manager
from graphtag.analysis.parameters import NameResolver, parameter_usage
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes, iter_initializers, iter_values
from graphtag.core.pass_result import PassResult
from graphtag.core.scoping import NodeScope

logger = logging.getLogger(__name__)


class MultiConsumerPass(ir.passes.InPlacePass):
    """Tag every value with the modules consuming it and map initializers to parameters.

    Reads: node ``pkg.graphtag.module`` (untagged consumers are ignored); the hierarchy in
    the model metadata (parameter and buffer names, own and inherited); initializer value
    metadata ``pkg.onnxscript.optimizer.folded_from`` (the repr of a list of the names the
    optimizer folded into the tensor: parameter names mixed with intermediate values).

    Writes value metadata, in the main graph, subgraphs and functions:

    * ``pkg.graphtag.consumers`` on every graph input, initializer and node output of a
      model where some node carries a tag: the sorted JSON list of the distinct tags of
      the nodes that use the value, nodes of subgraphs reading it from an outer scope
      included. Being a graph output adds nothing (the graph says which values are
      outputs), so a value only returned, or used by untagged nodes only, gets ``[]``;
      ``include_unconsumed=false`` leaves such values without the key (and removes it if
      present). On a model where no node carries a tag there is no module to record:
      the pass writes no key and removes stale ones (and logs why).
    * ``pkg.graphtag.origin`` on initializers (``origin=true``, needs the hierarchy): the
      sorted JSON list of the parameter/buffer names the tensor holds: its own name, or
      for a folded tensor the parameter names among its ``folded_from`` entries. Only
      exact names count (a wrapper prefix such as TorchScript's ``model.`` is not
      stripped here, so validation still sees the renamed initializer). Tensors that hold
      no parameter (folded constants, shape tensors) get no origin; nor do tensors the
      optimizer rewrote without a record (batch norm fused into a convolution keeps the
      convolution's name and gains a ``<name>_bias``).

    Shared and reused parameters are found from the graph by
    :func:`graphtag.analysis.parameters.parameter_usage` (see there for what can and cannot
    be detected); the pass reports their counts.

    Result statistics: ``values`` (values seen), ``multi_consumer`` (values used by two
    or more modules), ``origins`` (initializers given an origin), ``shared_parameters``
    and ``reused_parameters``. Invariants: only value metadata changes; linear in nodes
    + edges; idempotent (a second run reports ``modified=False``). Scoped
    (``multi-consumer@PATTERN``) it writes, in place, the values the scope's nodes
    compute and the graph inputs and initializers only the scope reads; the consumers
    recorded still include those outside the scope.
    """

    preserves = manager.ALL  # value metadata only: no analysis reads it

    def __init__(
        self,
        *,
        origin: Annotated[bool, "record the parameters each initializer holds"] = True,
        include_unconsumed: Annotated[
            bool, "also record [] on values no tagged node consumes"
        ] = True,
    ) -> None:
        super().__init__()
        self.origin = origin
        self.include_unconsumed = include_unconsumed

    def call(self, model: ir.Model) -> PassResult:
        return self._run(model, None)

    def call_scoped(self, model: ir.Model, scope: NodeScope) -> PassResult:
        """The scope's values only (graphtag.core.scoping): no extraction needed."""
        return self._run(model, scope)

    def _run(self, model: ir.Model, scope: NodeScope | None) -> PassResult:
        def in_scope(value: ir.Value) -> bool:
            return scope is None or scope.produces(value) or scope.reads_only(value)

        stats: Counter[str] = Counter()
        diagnostics: list[str] = []
        tagged = any(metadata.node_tag(node) is not None for node in iter_all_nodes(model))
        if not tagged:
            note = "no node carries a tag: no consumers recorded"
            logger.info(note)
            diagnostics.append(note)
        modified = False
        for value in iter_values(model):
            if not in_scope(value):
                continue
            tags = _consumer_tags(value)
            stats["values"] += 1
            if len(tags) > 1:
                stats["multi_consumer"] += 1
            keep = tagged and (tags or self.include_unconsumed)
            modified |= metadata.set_consumers(value, tags if keep else None)
        tree = manager.hierarchy(model)
        if self.origin and tree is None:
            logger.info("no hierarchy in the model: parameter origins not recorded")
        elif self.origin:
            resolver = NameResolver(tree)
            for value in iter_initializers(model):
                if not in_scope(value):
                    continue
                names = resolver.origin(value)  # exact names: validation sees renames
                stats["origins"] += bool(names)
                modified |= metadata.set_origin(value, names)
        usage = parameter_usage(model).values()
        stats["shared_parameters"] = sum(u.shared for u in usage)
        stats["reused_parameters"] = sum(u.reused for u in usage)
        return PassResult(model, modified, stats=dict(stats), diagnostics=diagnostics)


def _consumer_tags(value: ir.Value) -> set[str]:
    return {tag for use in value.uses() if (tag := metadata.node_tag(use.node))}
