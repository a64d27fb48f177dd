"""Everything the HTML report shows, as one JSON-ready dict (torch-free).

The module tree has one root: the hierarchy's root, the single top-level tag, or, when
the model has no tags or several top-level tags, a synthetic root ``""`` named
``(model)`` (untagged nodes are its own nodes). Tags seen on nodes whose ancestors are
not recorded get those ancestors added, so the tree is connected.

Per module: class, own and inclusive node counts, op histogram, parameters (elements and
bytes of the initializers attributed to it, see below), shared parameters it uses,
functions its nodes call, nodes whose tag was inferred (by rule), nodes with contexts,
profile times; and the module-level graph of its children.

Parameters are attributed so that they add up: an initializer belongs to the lowest
common ancestor of the modules whose nodes use it (a weight used by one module is that
module's; a tied embedding belongs to the common ancestor; one used by an untagged node
or by nothing belongs to the root). A module's inclusive figure is its own plus its
descendants'.

The module-level graph of a module M: one box per child module with nodes, one for M's
own nodes, one for M's inputs and one for its outputs; an edge ``a -> b`` carries the
values produced in ``a`` and consumed in ``b`` (from the module boundaries), with their
count and first names. Constants and initializers are not edges.

Cost: linear in nodes, edges and initializers, times the hierarchy depth (the boundary
computation).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

import onnx_ir as ir

from graphtag.analysis import manager
from graphtag.analysis.boundaries import ModuleBoundary, is_constant_value, module_boundaries
from graphtag.analysis.manager import analysis_scope
from graphtag.analysis.summary import Analysis, analyze, function_key
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes, outer_values
from graphtag.core.hierarchy import Hierarchy, tag_lca, tag_parent
from graphtag.tools.report import layout as layout_mod
from graphtag.tools.report.profile import Profile

SCHEMA = "graphtag.report/1"
SYNTHETIC_ROOT = ""
_MAX_NAMES = 3  # value names listed per graph edge
_MAX_PARAMS_LISTED = 100  # initializers listed per module in the details
_IN, _OUT, _SELF = "in", "out", "self"


def _analyses(model: ir.Model) -> tuple[Analysis, dict[str, ModuleBoundary], Hierarchy | None]:
    """The three analyses the report uses, computed once in one analysis scope."""
    with analysis_scope(model):
        return analyze(model), module_boundaries(model), manager.hierarchy(model)


def collect(model: ir.Model, *, title: str, profile: Profile | None = None) -> dict:
    """The report data for ``model`` (and its profile)."""
    analysis, boundaries, hierarchy = _analyses(model)
    notes: list[str] = []
    tree = _Tree(analysis, hierarchy)
    if not analysis.tagged:
        notes.append(
            "No node carries a module tag (pkg.graphtag.module): everything is shown under "
            "one root. Export the model with graphtag to see its module tree."
        )
    elif analysis.untagged:
        notes.append(
            f"{len(analysis.untagged)} of {analysis.nodes} nodes carry no module tag; they are "
            "counted in no module (run the tag-propagation pass to infer their tags)."
        )
    if not analysis.has_hierarchy and analysis.tagged:
        notes.append("No module hierarchy is stored in the model: classes are unknown.")

    per_node = _node_facts(model, tree)
    params = _parameters(model, tree)
    shared: dict[str, list[str]] = {}
    for item in analysis.shared_parameters:
        for tag in item.tags:
            shared.setdefault(tag, []).append(item.name)
    outlined_from = {cls: keys for cls, keys in analysis.function_classes.items()}

    times = _times(profile, tree, notes)
    modules = []
    for index, tag in enumerate(tree.order):
        stats = analysis.module(tag) if tag in tree.known else None
        info = hierarchy.modules.get(tag) if hierarchy is not None else None
        class_name = info.class_name if info is not None else ""
        entry = {
            "tag": tag,
            "name": tree.label(tag),
            "parent": tree.index.get(tree.parent[tag], -1) if tag in tree.parent else -1,
            "class": class_name,
            "torch_name": info.name if info is not None else None,
            "executed": info.executed if info is not None else None,
            "in_hierarchy": info is not None,
            "nodes": stats.nodes if stats is not None else 0,
            "ops": dict(stats.ops) if stats is not None else {},
            "params": params.elements.get(tag, 0),
            "bytes": params.nbytes.get(tag, 0),
            "initializers": params.listed.get(tag, []),
            "initializers_more": params.more.get(tag, 0),
            "shared": shared.get(tag, []),
            "functions": dict(per_node.calls.get(tag, {})),
            "outlined_as": outlined_from.get(class_name, []) if class_name else [],
            "inferred": dict(per_node.inferred.get(tag, {})),
            "contexts": per_node.contexts.get(tag, 0),
        }
        if tag == tree.root and tree.root == SYNTHETIC_ROOT:
            entry["nodes"] = len(analysis.untagged)
            entry["ops"] = dict(per_node.untagged_ops.most_common())
        if times is not None:
            entry.update(times.get(tag, {"self_ms": None, "total_ms": None, "calls": None}))
        modules.append(entry)
        assert tree.index[tag] == index
    _add_inclusive(modules, tree)
    graphs = _module_graphs(model, tree, boundaries, analysis)
    for tag, graph in graphs.items():
        modules[tree.index[tag]]["graph"] = graph
    for entry in modules:
        entry["children"] = [tree.index[c] for c in tree.children.get(entry["tag"], [])]

    return {
        "schema": SCHEMA,
        "title": title,
        "model": {
            "nodes": analysis.nodes,
            "tagged": analysis.tagged,
            "untagged": len(analysis.untagged),
            "modules": len(modules),
            "initializers": params.count,
            "params": params.total_elements,
            "bytes": params.total_bytes,
            "functions": len(analysis.functions),
            "shared_parameters": len(analysis.shared_parameters),
            "producer": " ".join(p for p in (model.producer_name, model.producer_version) if p),
            "opset": model.opset_imports.get("", model.opset_imports.get("ai.onnx")),
            "graphtag_version": model.metadata_props.get(metadata.VERSION),
        },
        "profile": None
        if profile is None
        else {"total_ms": profile.total_ms, "runs": profile.runs},
        "notes": notes,
        "modules": modules,
    }


class _Tree:
    """Tags in pre-order with parents and children; one root (see the module doc)."""

    def __init__(self, analysis: Analysis, hierarchy: Hierarchy | None) -> None:
        self.known = {m.tag for m in analysis.modules}
        self.hierarchy = hierarchy
        tags = list(dict.fromkeys(m.tag for m in analysis.modules))
        tops = {"/" + t[1:].split("/", 1)[0] for t in tags}
        if len(tops) == 1:
            self.root = next(iter(tops))
            self.synthetic = False
        else:
            self.root = SYNTHETIC_ROOT
            self.synthetic = True
        self.parent: dict[str, str] = {}
        self.children: dict[str, list[str]] = {}
        seen: set[str] = {self.root}
        for tag in tags:
            self._attach(tag, seen)
        self.order: list[str] = []
        stack = [self.root]
        while stack:  # pre-order; children keep their first-seen order
            tag = stack.pop()
            self.order.append(tag)
            stack.extend(reversed(self.children.get(tag, [])))
        self.index = {tag: i for i, tag in enumerate(self.order)}

    def _attach(self, tag: str, seen: set[str]) -> None:
        chain = []
        current: str | None = tag
        while current is not None and current not in seen:
            chain.append(current)
            current = tag_parent(current)
        above = current if current is not None else self.root
        for child in reversed(chain):
            seen.add(child)
            self.parent[child] = above
            self.children.setdefault(above, []).append(child)
            above = child

    def label(self, tag: str) -> str:
        if tag == SYNTHETIC_ROOT:
            return "(model)"
        return tag.rsplit("/", 1)[-1]

    def owner(self, tag: str | None) -> str:
        """The module an initializer or node with ``tag`` is counted in."""
        if tag is None or tag not in self.index:
            return self.root
        return tag


class _NodeFacts:
    def __init__(self) -> None:
        self.inferred: dict[str, Counter[str]] = {}
        self.contexts: Counter[str] = Counter()
        self.calls: dict[str, Counter[str]] = {}
        self.untagged_ops: Counter[str] = Counter()


def _node_facts(model: ir.Model, tree: _Tree) -> _NodeFacts:
    facts = _NodeFacts()
    functions = {f.identifier(): function_key(f.identifier()) for f in model.functions.values()}
    for node in iter_all_nodes(model):
        tag = metadata.node_tag(node)
        if tag is None:
            facts.untagged_ops[node.op_type] += 1
            continue
        source = metadata.tag_source(node)
        if source:
            rule = source.removeprefix("inferred:")
            facts.inferred.setdefault(tag, Counter())[rule] += 1
        if metadata.CONTEXTS in node.metadata_props:
            facts.contexts[tag] += 1
        key = functions.get((node.domain, node.op_type, node.overload))
        if key is not None:
            facts.calls.setdefault(tag, Counter())[key] += 1
    return facts


class _Parameters:
    def __init__(self) -> None:
        self.elements: Counter[str] = Counter()
        self.nbytes: Counter[str] = Counter()
        self.listed: dict[str, list[list]] = {}
        self.more: Counter[str] = Counter()
        self.count = self.total_elements = self.total_bytes = 0


def _parameters(model: ir.Model, tree: _Tree) -> _Parameters:
    result = _Parameters()
    for graph in (model.graph, *model.graph.subgraphs()):
        for value in graph.initializers.values():
            elements, nbytes = _size(value)
            tags = {metadata.node_tag(use.node) for use in value.uses()}
            if not tags or None in tags:
                owner = tree.root
            else:
                owner = tree.owner(tag_lca(t for t in tags if t is not None))
            result.count += 1
            result.total_elements += elements
            result.total_bytes += nbytes
            result.elements[owner] += elements
            result.nbytes[owner] += nbytes
            listed = result.listed.setdefault(owner, [])
            if len(listed) < _MAX_PARAMS_LISTED:
                shape = list(value.shape.dims) if value.shape is not None else None
                dtype = value.dtype.name if value.dtype is not None else "?"
                listed.append([value.name, _jsonable_shape(shape), dtype, nbytes])
            else:
                result.more[owner] += 1
    return result


def _size(value: ir.Value) -> tuple[int, int]:
    """(elements, bytes) of an initializer, without reading external data."""
    tensor = value.const_value
    if tensor is not None:
        return int(tensor.size), int(tensor.nbytes)
    shape = value.shape
    if shape is None or not all(isinstance(d, int) for d in shape.dims):
        return 0, 0
    elements = math.prod(shape.dims)
    dtype = value.dtype
    return elements, (elements * dtype.itemsize if dtype is not None else 0)


def _jsonable_shape(dims: list | None) -> list | None:
    if dims is None:
        return None
    return [d if isinstance(d, int) else str(d) for d in dims]


def _times(profile: Profile | None, tree: _Tree, notes: list[str]) -> dict[str, dict] | None:
    if profile is None:
        return None
    unknown = sorted(t for t in profile.modules if t not in tree.index)
    if unknown:
        shown = ", ".join(unknown[:3]) + (" ..." if len(unknown) > 3 else "")
        notes.append(
            f"The profile names {len(unknown)} module(s) this model does not have: {shown}"
        )
    return {
        tag: {"self_ms": t.self_ms, "total_ms": t.total_ms, "calls": t.calls}
        for tag, t in profile.modules.items()
        if tag in tree.index
    }


def _add_inclusive(modules: list[dict], tree: _Tree) -> None:
    """``*_incl`` = own + descendants', in one reverse pre-order pass."""
    for entry in modules:
        entry["nodes_incl"] = entry["nodes"]
        entry["params_incl"] = entry["params"]
        entry["bytes_incl"] = entry["bytes"]
        entry["ops_incl"] = Counter(entry["ops"])
    for tag in reversed(tree.order):
        if tag == tree.root:
            continue
        child = modules[tree.index[tag]]
        parent = modules[tree.index[tree.parent[tag]]]
        for key in ("nodes", "params", "bytes"):
            parent[f"{key}_incl"] += child[f"{key}_incl"]
        parent["ops_incl"].update(child["ops_incl"])
    for entry in modules:  # op types seen anywhere below: what search by op type matches
        entry["ops_incl"] = sorted(entry["ops_incl"])


# -- module-level graphs ---------------------------------------------------------------------


def _module_graphs(
    model: ir.Model, tree: _Tree, boundaries: dict[str, ModuleBoundary], analysis: Analysis
) -> dict[str, dict]:
    nodes = list(model.graph)
    position = {id(node): i for i, node in enumerate(nodes)}
    classes = {
        tag: (tree.hierarchy.modules[tag].class_name.rsplit(".", 1)[-1])
        for tag in tree.order
        if tree.hierarchy is not None and tag in tree.hierarchy.modules
    }
    graphs: dict[str, dict] = {}
    for tag in tree.order:
        if tree.synthetic and tag == tree.root:
            own = [n for n in nodes if metadata.node_tag(n) is None]
            outputs = list(model.graph.outputs)
            all_nodes: Iterable[ir.Node] = nodes
        elif tag in boundaries:
            b = boundaries[tag]
            own = [n for n in b.nodes if metadata.node_tag(n) == tag]
            outputs = b.outputs
            all_nodes = b.nodes
        else:
            continue  # a module with no node in the main graph
        children = [c for c in tree.children.get(tag, []) if c in boundaries]
        if not children:
            continue  # a leaf: its details list its ops
        graph = _module_graph(tag, tree, children, own, outputs, boundaries, position, classes)
        graph["nodes"] = sum(1 for _ in all_nodes)
        graphs[tag] = graph
    return graphs


def _module_graph(
    tag: str,
    tree: _Tree,
    children: list[str],
    own: list[ir.Node],
    outputs: list[ir.Value],
    boundaries: dict[str, ModuleBoundary],
    position: dict[int, int],
    classes: dict[str, str],
) -> dict:
    prefix = "/" if tag == SYNTHETIC_ROOT else tag + "/"

    def part(node: ir.Node | None) -> str:
        """Which box of this module a main-graph node belongs to (or _IN: outside)."""
        if node is None or id(node) not in position:
            return _IN
        node_tag = metadata.node_tag(node)
        if node_tag is None:
            return _SELF if tree.synthetic and tag == SYNTHETIC_ROOT else _IN
        if node_tag == tag:
            return _SELF
        if not node_tag.startswith(prefix):
            return _IN
        return prefix + node_tag[len(prefix) :].split("/", 1)[0]

    edges: dict[tuple[str, str], list] = {}

    def add(src: str, dst: str, value: ir.Value) -> None:
        if src == dst:
            return
        entry = edges.setdefault((src, dst), [0, []])
        entry[0] += 1
        if len(entry[1]) < _MAX_NAMES and value.name:
            entry[1].append(value.name)

    for child in children:
        for value in boundaries[child].inputs:
            add(part(value.producer()), child, value)
    seen: set[int] = set()
    for node in own:
        for value in [v for v in node.inputs if v is not None] + outer_values(node):
            if id(value) in seen or is_constant_value(value):
                continue
            seen.add(id(value))
            add(part(value.producer()), _SELF, value)
    for value in outputs:
        add(part(value.producer()), _OUT, value)

    ids: list[str] = []
    boxes: list[layout_mod.Box] = []

    def box(box_id: str, key: float, label: str, sub: str) -> None:
        ids.append(box_id)
        boxes.append(layout_mod.Box(key=key, label=label, sub=sub))

    used = {s for s, _ in edges} | {t for _, t in edges}
    if _IN in used:
        box(_IN, -1.0, "inputs", "")
    for child in children:
        b = boundaries[child]
        first = min(position[id(n)] for n in b.nodes[:1])
        box(child, float(first), tree.label(child), _sub(classes.get(child), len(b.nodes)))
    if own:
        box(_SELF, float(position[id(own[0])]), "(own nodes)", _sub(None, len(own)))
    if _OUT in used:
        box(_OUT, float(len(position) + 1), "outputs", "")
    index = {box_id: i for i, box_id in enumerate(ids)}
    pairs = [(index[s], index[t]) for s, t in edges]
    forward, via, width, height = layout_mod.layout(boxes, pairs)
    return {
        "width": width,
        "height": height,
        "boxes": [
            {
                "id": box_id,
                "label": b.label,
                "sub": b.sub,
                "x": b.x,
                "y": b.y,
                "w": b.w,
                "h": layout_mod.BOX_HEIGHT,
            }
            for box_id, b in zip(ids, boxes)
        ],
        "edges": [
            {"s": s, "t": t, "n": n, "names": names, "back": not fwd, "via": x}
            for ((s, t), (n, names)), fwd, x in zip(edges.items(), forward, via)
        ],
    }


def _sub(class_name: str | None, nodes: int) -> str:
    count = f"{nodes} node" + ("" if nodes == 1 else "s")
    return f"{class_name} · {count}" if class_name else count
