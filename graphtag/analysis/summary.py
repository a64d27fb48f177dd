"""What a tagged ONNX model contains, per module (torch-free).

:func:`analyze` walks the model once and reports, for every module of the stored
hierarchy (plus any tag seen on a node that the hierarchy lacks): its own node count, the
count including its descendants and an op histogram; and for the whole model the untagged
nodes, the nodes whose tag was inferred (by rule), the nodes carrying residual contexts,
the shared parameters (:mod:`graphtag.analysis.parameters`: used by several modules, or
several times by one) and the local functions with their call counts.

Everything is computed from the graph, never from the records later passes write
(``pkg.graphtag.consumers``: ``graphtag validate`` checks those against the graph). The
cost is linear in the size of the graph.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import onnx_ir as ir

from graphtag.analysis.manager import analysis_scope, hierarchy
from graphtag.analysis.parameters import ParameterUse, parameter_usage
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes
from graphtag.core.hierarchy import tag_parent

_INFERRED_PREFIX = "inferred:"


@dataclasses.dataclass
class ModuleStats:
    """Node counts and op histogram of one module tag."""

    tag: str
    class_name: str | None  # None for a tag the hierarchy does not know
    executed: bool | None
    in_hierarchy: bool
    parameters: int  # recorded parameters, own and inherited
    nodes: int = 0  # nodes tagged exactly with this tag
    nodes_inclusive: int = 0  # nodes of this module and all its descendants
    ops: dict[str, int] = dataclasses.field(default_factory=dict)  # own nodes by op

    def to_json_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Analysis:
    """The result of :func:`analyze`; :meth:`to_json` is deterministic."""

    nodes: int
    tagged: int
    untagged: list[str]  # node names (or op#index) without a tag, in graph order
    has_hierarchy: bool
    modules: list[ModuleStats]  # hierarchy pre-order, then unknown tags sorted
    tag_sources: dict[str, int]  # pkg.graphtag.tag_source value -> nodes
    multi_context_nodes: int
    context_roles: dict[str, int]  # role -> number of context entries
    shared_parameters: list[ParameterUse]  # used by several modules, or twice by one
    functions: dict[str, int]  # function key -> number of call nodes
    # module class (as recorded by function-outlining) -> function keys implementing it
    function_classes: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    filter: str | None = None

    @property
    def inferred(self) -> dict[str, int]:
        """Nodes by tag source, ``inferred:`` removed (tag-propagation rule -> nodes)."""
        found: Counter[str] = Counter()
        for source, count in self.tag_sources.items():
            found[source.removeprefix(_INFERRED_PREFIX)] += count
        return dict(found)

    def module(self, tag: str) -> ModuleStats | None:
        return next((m for m in self.modules if m.tag == tag), None)

    def filtered(self, prefix: str) -> Analysis:
        """A copy keeping the modules whose tag starts with ``prefix``."""
        keep = [m for m in self.modules if m.tag.startswith(prefix)]
        shared = [s for s in self.shared_parameters if any(t.startswith(prefix) for t in s.tags)]
        return dataclasses.replace(self, modules=keep, shared_parameters=shared, filter=prefix)

    def to_json_dict(self) -> dict:
        return {
            "nodes": self.nodes,
            "tagged": self.tagged,
            "untagged": list(self.untagged),
            "has_hierarchy": self.has_hierarchy,
            "filter": self.filter,
            "modules": [m.to_json_dict() for m in self.modules],
            "inferred": dict(sorted(self.inferred.items())),
            "tag_sources": dict(sorted(self.tag_sources.items())),
            "multi_context_nodes": self.multi_context_nodes,
            "context_roles": dict(sorted(self.context_roles.items())),
            "shared_parameters": [s.to_json_dict() for s in self.shared_parameters],
            "functions": dict(sorted(self.functions.items())),
            "function_classes": dict(sorted(self.function_classes.items())),
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_json_dict(), indent=indent, sort_keys=True)


# -- helpers shared with graphtag.checks.validation ------------------------------------------------


def node_label(node: ir.Node, index: int) -> str:
    """The node's name, or ``op#index`` for an anonymous node."""
    return node.name or f"{node.op_type}#{index}"


def op_key(node: ir.Node) -> str:
    """``op_type``, prefixed by its domain outside the default ONNX domain."""
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def function_key(identifier: tuple[str, str, str]) -> str:
    domain, name, overload = identifier
    return f"{domain}::{name}" + (f"::{overload}" if overload else "")


# -- the analysis --------------------------------------------------------------------------


def analyze(model: ir.Model) -> Analysis:
    """Per-module statistics of ``model`` (main graph, subgraphs and local functions)."""
    with analysis_scope(model):
        return _analyze(model)


def _analyze(model: ir.Model) -> Analysis:
    tree = hierarchy(model)
    own: Counter[str] = Counter()
    ops: dict[str, Counter[str]] = {}
    untagged: list[str] = []
    sources: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    function_keys = {f.identifier(): function_key(f.identifier()) for f in model.functions.values()}
    total = contexts = 0
    for index, node in enumerate(iter_all_nodes(model)):
        total += 1
        tag = metadata.node_tag(node)
        if tag is None:
            untagged.append(node_label(node, index))
        else:
            own[tag] += 1
            ops.setdefault(tag, Counter())[op_key(node)] += 1
        source = metadata.tag_source(node)
        if source:
            sources[source] += 1
        if metadata.CONTEXTS in node.metadata_props:
            contexts += 1
            roles.update(c["role"] for c in metadata.contexts(node))
        key = function_keys.get((node.domain, node.op_type, node.overload))
        if key is not None:
            calls[key] += 1

    modules: dict[str, ModuleStats] = {}
    if tree is not None:
        for info in tree:
            modules[info.tag] = ModuleStats(
                tag=info.tag,
                class_name=info.class_name,
                executed=info.executed,
                in_hierarchy=True,
                parameters=len(info.parameters) + len(info.inherited_parameters),
            )
    for tag in sorted(set(own) - set(modules)):
        modules[tag] = ModuleStats(
            tag=tag, class_name=None, executed=None, in_hierarchy=False, parameters=0
        )
    for tag, count in own.items():
        stats = modules[tag]
        stats.nodes = count
        stats.ops = dict(sorted(ops[tag].items(), key=lambda item: (-item[1], item[0])))
        ancestor: str | None = tag
        while ancestor is not None:  # once per distinct tag: O(tags x depth)
            if ancestor in modules:
                modules[ancestor].nodes_inclusive += count
            ancestor = tag_parent(ancestor)

    return Analysis(
        nodes=total,
        tagged=total - len(untagged),
        untagged=untagged,
        has_hierarchy=tree is not None,
        modules=list(modules.values()),
        tag_sources=dict(sources),
        multi_context_nodes=contexts,
        context_roles=dict(roles),
        shared_parameters=[u for u in parameter_usage(model).values() if u.shared or u.reused],
        functions={key: calls.get(key, 0) for key in function_keys.values()},
        function_classes=_function_classes(model, function_keys),
    )


def _function_classes(model: ir.Model, keys: dict) -> dict[str, list[str]]:
    """Module class -> the functions outlined from it (``pkg.graphtag.class`` metadata)."""
    classes: dict[str, list[str]] = {}
    for function in model.functions.values():
        cls = metadata.function_class(function)
        if cls:
            classes.setdefault(cls, []).append(keys[function.identifier()])
    return {cls: sorted(found) for cls, found in classes.items()}
