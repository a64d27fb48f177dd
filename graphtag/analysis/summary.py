"""What a tagged ONNX model contains, per module (torch-free).

:func:`analyze` walks the model once and reports, for every module of the stored
hierarchy (plus any tag seen on a node that the hierarchy lacks): its own node count, the
count including its descendants and an op histogram; and for the whole model the untagged
nodes, the nodes whose tag was inferred (by rule), the nodes carrying residual contexts,
the parameters consumed by several modules and the local functions with their call counts.

Everything is computed from the graph; metadata written by later passes
(``pkg.graphtag.consumers`` on values) is read when present and wins over the structural
computation. The cost is linear in the size of the graph.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from collections import Counter
from collections.abc import Iterable, Iterator

import onnx_ir as ir

from graphtag.core import metadata
from graphtag.core.graphs import subgraphs_of
from graphtag.core.hierarchy import Hierarchy, tag_parent

_INFERRED_PREFIX = "inferred:"
# Keys recording which values a folded initializer was computed from: graphtag's own
# (written by the multi-consumer pass), then onnxscript's optimizer's.
ORIGIN_KEYS: tuple[str, ...] = (
    metadata.ORIGIN,
    metadata.ONNXSCRIPT_FOLDED_FROM,
)


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
class SharedParameter:
    """An initializer consumed by nodes of two or more modules (a shared or tied weight)."""

    name: str
    modules: list[str]  # sorted consuming module tags
    origin: list[str]  # recorded parameters it was folded from; [] when it is one itself
    source: str  # "metadata" (pkg.graphtag.consumers) or "graph" (computed from uses)

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
    inferred: dict[str, int]  # tag-propagation rule -> nodes
    multi_context_nodes: int
    context_roles: dict[str, int]  # role -> number of context entries
    shared_parameters: list[SharedParameter]
    functions: dict[str, int]  # function key -> number of call nodes
    # module class (as recorded by function-outlining) -> function keys implementing it
    function_classes: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    filter: str | None = None

    def module(self, tag: str) -> ModuleStats | None:
        return next((m for m in self.modules if m.tag == tag), None)

    def filtered(self, prefix: str) -> Analysis:
        """A copy keeping the modules whose tag starts with ``prefix``."""
        keep = [m for m in self.modules if m.tag.startswith(prefix)]
        shared = [s for s in self.shared_parameters if any(t.startswith(prefix) for t in s.modules)]
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


def all_graphs(model: ir.Model) -> Iterator[ir.Graph]:
    """The main graph and every nested subgraph (not functions)."""
    yield model.graph
    yield from model.graph.subgraphs()


def all_initializers(model: ir.Model) -> Iterator[ir.Value]:
    for graph in all_graphs(model):
        yield from graph.initializers.values()


def recorded_parameters(hierarchy: Hierarchy | None) -> dict[str, str]:
    """Every parameter recorded in the hierarchy (own and inherited) -> its module's tag."""
    owners: dict[str, str] = {}
    if hierarchy is None:
        return owners
    for info in hierarchy:
        for name in [*info.parameters, *info.inherited_parameters]:
            owners.setdefault(name, info.tag)
    return owners


def parse_name_list(text: str) -> list[str] | None:
    """A list of names stored as JSON or as a Python literal (onnxscript's format)."""
    for parse in (json.loads, ast.literal_eval):
        try:
            data = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(data, str):
            return [data]
        if isinstance(data, (list, tuple)) and all(isinstance(x, str) for x in data):
            return list(data)
    return None


def folded_origins(model: ir.Model) -> dict[str, list[str]]:
    """Value name -> the names it was folded from, for every value with a recorded origin."""
    values: Iterable[ir.Value] = all_initializers(model)
    origins: dict[str, list[str]] = {}
    for value in [*values, *(o for n in metadata.iter_all_nodes(model) for o in n.outputs)]:
        for key in ORIGIN_KEYS:
            text = value.metadata_props.get(key)
            names = parse_name_list(text) if text else None
            if names and value.name:
                origins.setdefault(value.name, []).extend(names)
    return origins


def origin_parameters(
    name: str, origins: dict[str, list[str]], params: dict[str, str]
) -> list[str]:
    """Recorded parameters ``name`` was folded from, following recorded intermediates."""
    found: set[str] = set()
    seen = {name}
    stack = [name]
    while stack:
        for source in origins.get(stack.pop(), ()):
            if source in params:
                found.add(source)
            if source not in seen and source in origins:
                seen.add(source)
                stack.append(source)
    return sorted(found)


def graph_consumer_tags(value: ir.Value) -> set[str]:
    """Tags of the nodes using ``value`` (nodes of nested subgraphs included)."""
    return {t for use in value.uses() if (t := metadata.node_tag(use.node)) is not None}


def recorded_consumers(value: ir.Value) -> set[str] | None:
    """The tags in ``pkg.graphtag.consumers``, or None when the value has no such key.

    The key holds a JSON list of tags (or of ``{"module": tag}`` objects); anything else
    raises ValueError.
    """
    text = value.metadata_props.get(metadata.CONSUMERS)
    if text is None:
        return None
    data = json.loads(text)  # json.JSONDecodeError is a ValueError
    if not isinstance(data, list):
        raise ValueError(f"expected a JSON list, got {type(data).__name__}")
    tags: set[str] = set()
    for item in data:
        if isinstance(item, dict):
            item = item.get("module")
        if not isinstance(item, str):
            raise ValueError(f"unexpected entry {item!r}")
        tags.add(item)
    return tags


def unorderable_nodes(nodes: list[ir.Node]) -> list[ir.Node]:
    """Nodes Kahn's algorithm cannot order: those on a cycle or downstream of one."""
    members = set(nodes)
    successors: dict[ir.Node, set[ir.Node]] = {n: set() for n in nodes}
    indegree: dict[ir.Node, int] = {}
    for node in nodes:
        deps = {v.producer() for v in node.inputs if v is not None}
        for graph in subgraphs_of(node):
            for inner in ir.traversal.RecursiveGraphIterator(graph):
                deps.update(v.producer() for v in inner.inputs if v is not None)
        deps &= members
        indegree[node] = len(deps)
        for dep in deps:
            successors[dep].add(node)
    ready = [n for n in nodes if indegree[n] == 0]
    ordered = 0
    while ready:
        node = ready.pop()
        ordered += 1
        for succ in successors[node]:
            indegree[succ] -= 1
            if indegree[succ] == 0:
                ready.append(succ)
    return [] if ordered == len(nodes) else [n for n in nodes if indegree[n] > 0]


# -- the analysis --------------------------------------------------------------------------


def analyze(model: ir.Model) -> Analysis:
    """Per-module statistics of ``model`` (main graph, subgraphs and local functions)."""
    hierarchy = Hierarchy.from_model(model)
    params = recorded_parameters(hierarchy)
    own: Counter[str] = Counter()
    ops: dict[str, Counter[str]] = {}
    untagged: list[str] = []
    inferred: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    function_keys = {f.identifier(): function_key(f.identifier()) for f in model.functions.values()}
    total = contexts = 0
    for index, node in enumerate(metadata.iter_all_nodes(model)):
        total += 1
        tag = metadata.node_tag(node)
        if tag is None:
            untagged.append(node_label(node, index))
        else:
            own[tag] += 1
            ops.setdefault(tag, Counter())[op_key(node)] += 1
        source = node.metadata_props.get(metadata.TAG_SOURCE)
        if source:
            inferred[source.removeprefix(_INFERRED_PREFIX)] += 1
        if metadata.CONTEXTS in node.metadata_props:
            contexts += 1
            roles.update(_context_roles(node.metadata_props[metadata.CONTEXTS]))
        key = function_keys.get((node.domain, node.op_type, node.overload))
        if key is not None:
            calls[key] += 1

    modules: dict[str, ModuleStats] = {}
    if hierarchy is not None:
        for info in hierarchy:
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
        has_hierarchy=hierarchy is not None,
        modules=list(modules.values()),
        inferred=dict(inferred),
        multi_context_nodes=contexts,
        context_roles=dict(roles),
        shared_parameters=_shared_parameters(model, params, hierarchy is not None),
        functions={key: calls.get(key, 0) for key in function_keys.values()},
        function_classes=_function_classes(model, function_keys),
    )


def _context_roles(text: str) -> Counter[str]:
    roles: Counter[str] = Counter()
    try:
        entries = json.loads(text)
    except ValueError:
        return roles
    if isinstance(entries, list):
        for entry in entries:
            if isinstance(entry, dict):
                roles[str(entry.get("role", "?"))] += 1
    return roles


def _shared_parameters(
    model: ir.Model, params: dict[str, str], restrict_to_parameters: bool
) -> list[SharedParameter]:
    """Initializers whose consumers lie in two or more distinct modules.

    With a hierarchy only parameters count: initializers named as a recorded parameter or
    folded from one (shared shape constants are not weights); without one, every
    initializer does.
    """
    origins = folded_origins(model)
    shared: dict[str, SharedParameter] = {}
    for value in all_initializers(model):
        if value.name is None or value.name in shared:
            continue
        try:
            recorded = recorded_consumers(value)
        except ValueError:
            recorded = None  # unreadable: fall back to the graph (validate reports it)
        if recorded is not None:
            tags, source = recorded, "metadata"
        else:
            tags, source = graph_consumer_tags(value), "graph"
        if len(tags) < 2:
            continue
        origin = [] if value.name in params else origin_parameters(value.name, origins, params)
        if restrict_to_parameters and value.name not in params and not origin:
            continue
        shared[value.name] = SharedParameter(value.name, sorted(tags), origin, source)
    return [shared[name] for name in sorted(shared)]


def _function_classes(model: ir.Model, keys: dict) -> dict[str, list[str]]:
    """Module class -> the functions outlined from it (``pkg.graphtag.class`` metadata)."""
    classes: dict[str, list[str]] = {}
    for function in model.functions.values():
        cls = function.metadata_props.get(metadata.FUNCTION_CLASS)
        if cls:
            classes.setdefault(cls, []).append(keys[function.identifier()])
    return {cls: sorted(found) for cls, found in classes.items()}
