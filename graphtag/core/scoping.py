"""How a pass declares the way it runs on chosen modules only (scoped passes).

:class:`graphtag.pipeline.scoped.Scoped` runs any pass on the modules a tag pattern
selects. By default it extracts each module as a standalone model, runs the pass on
it and splices the result back (:mod:`graphtag.surgery.splice`). A pass class can say
more, through optional attributes:

* ``call_scoped(self, model, scope: NodeScope) -> PassResult``: the pass restricts
  itself to ``scope`` on the whole model (a *native* scoped run: no extraction). It
  must leave every node and value outside the scope as it was.
* ``whole_model: str`` (a class attribute): the pass cannot run on a part of a model;
  the text says why (it names a model-level result, another model, ...). A scoped run
  is then an error naming the pass and that reason.
* ``reads_hierarchy: bool`` (a class attribute, default True; onnx_ir's own passes are
  taken as False): False says the pass never reads the model's module hierarchy
  (``pkg.graphtag.core.hierarchy``), so the extractions it gets can go without one.
"""

from __future__ import annotations

__all__ = ["NodeScope", "native_scoping", "reads_hierarchy", "whole_model_reason"]

from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet

import onnx_ir as ir

from graphtag.core.graphs import subgraphs_of


class NodeScope:
    """Main-graph nodes chosen by a scope, and the nodes inside their control-flow bodies.

    ``nodes`` are the main-graph nodes (graph order), ``all_nodes`` those and the nodes
    of their bodies (pre-order); ``modules`` the tags that chose them. A node inside a body belongs to the scope when its enclosing main-graph node
    does (as in :mod:`graphtag.analysis.boundaries`). O(nodes of the scope) to build.
    """

    __slots__ = ("_body_values", "_members", "all_nodes", "modules", "nodes")

    def __init__(self, nodes: Iterable[ir.Node], modules: Sequence[str] = ()) -> None:
        self.nodes: list[ir.Node] = list(nodes)
        self.modules: tuple[str, ...] = tuple(modules)
        # Every node of the scope, bodies included (pre-order), and the ids behind it.
        self.all_nodes: list[ir.Node] = []
        body_values: set[int] = set()  # inputs and initializers of the bodies
        stack = self.nodes[::-1]
        while stack:
            node = stack.pop()
            self.all_nodes.append(node)
            if node.attributes.data:  # the plain dict: no method call per node
                for graph in reversed(subgraphs_of(node)):
                    body_values.update(id(v) for v in graph.inputs)
                    body_values.update(id(v) for v in graph.initializers.values())
                    stack.extend(reversed(list(graph)))
        self._members = {id(node) for node in self.all_nodes}
        self._body_values = body_values

    def __contains__(self, node: object) -> bool:
        return id(node) in self._members

    @property
    def ids(self) -> AbstractSet[int]:
        """The ids of every node of the scope (bodies included): for loops that test
        membership per edge, without a method call each time. Read-only."""
        return self._members

    def __len__(self) -> int:
        return len(self.nodes)

    def produces(self, value: ir.Value) -> bool:
        """The value is computed by a node of the scope (a body's own inputs included)."""
        producer = value.producer()
        if producer is not None:
            return id(producer) in self._members
        return id(value) in self._body_values

    def reads_only(self, value: ir.Value) -> bool:
        """Only nodes of the scope read the value, and it is not a main-graph output."""
        if value.is_graph_output():
            return False
        uses = value.uses()
        return bool(uses) and all(id(use.node) in self._members for use in uses)


def native_scoping(pass_: object) -> bool:
    """The pass runs scoped by itself (it has ``call_scoped``)."""
    return callable(getattr(pass_, "call_scoped", None))


def whole_model_reason(pass_: object) -> str | None:
    """Why the pass cannot run on part of a model, or None when it can."""
    reason = getattr(pass_, "whole_model", None)
    return reason if isinstance(reason, str) and reason else None


def reads_hierarchy(pass_: object) -> bool | None:
    """The pass's ``reads_hierarchy`` declaration, None when it makes none."""
    declared = getattr(pass_, "reads_hierarchy", None)
    return declared if isinstance(declared, bool) else None
