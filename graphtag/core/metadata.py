"""Metadata keys graphtag reads and writes, and helpers to access them.

All graphtag keys live under the ``pkg.graphtag.`` prefix so they never clash with
torch's (``pkg.torch.onnx.``) or onnxscript's keys.
"""

from __future__ import annotations

import ast
import functools
import json
from collections.abc import Iterable

import onnx_ir as ir

# Node: tag of the module the node executes in, e.g. "/Model/Encoder/Layer.0".
MODULE = "pkg.graphtag.module"
# Node: how an inferred tag was obtained (absent when it came from the exporter).
TAG_SOURCE = "pkg.graphtag.tag_source"
# Node: JSON list of other modules involved, each {"module": tag, "role": ...}.
CONTEXTS = "pkg.graphtag.contexts"
# Value: JSON list of tags of the modules consuming the value.
CONSUMERS = "pkg.graphtag.consumers"
# Value: JSON list of the PyTorch parameter/buffer names an initializer holds (its own
# name, or the parameters the exporter's optimizer folded into it).
ORIGIN = "pkg.graphtag.origin"
# Function: fully qualified class of the module a function was outlined from.
FUNCTION_CLASS = "pkg.graphtag.class"
# Function: tag of the module instance the function body was copied from (its template).
FUNCTION_TEMPLATE = "pkg.graphtag.template"
# Domain of every function graphtag creates (opset version 1 in the model's imports).
FUNCTION_DOMAIN = "pkg.graphtag"
# Node: original position of the node in the main graph (a decimal integer). On a call
# node: the smallest position of the nodes it replaced.
ORDER = "pkg.graphtag.order"
# Call node: JSON of how the outlined instance differs from the function body.
OUTLINED = "pkg.graphtag.outlined"
# Model: JSON module tree (see graphtag.core.hierarchy).
HIERARCHY = "pkg.graphtag.core.hierarchy"
# Model: graphtag version that wrote the tags.
VERSION = "pkg.graphtag.version"
# Model: JSON of the module-filter configuration used when tagging.
FILTER = "pkg.graphtag.filter"
# Model: prefix the exporter put before every parameter name (a wrapper module's
# attribute, "model." on the TorchScript path with keyword inputs); "" or absent if none.
PARAMETER_PREFIX = "pkg.graphtag.parameter_prefix"
# Model: how the exporter produced the graph: "dynamo", "torchscript", or
# "dynamo-traceable(attn_implementation=eager)" when implementation switches were set.
EXPORT_ROUTE = "pkg.graphtag.export_route"
# Model: JSON {tag: {"inputs": [...], "outputs": [...], "nodes": n}} (boundary detection).
BOUNDARIES = "pkg.graphtag.analysis.boundaries"
# Model: on an extracted model, the tag of the module it holds.
EXTRACTED_MODULE = "pkg.graphtag.extracted_module"
# Model: JSON list of the initializers torch's optimizer (the torch-optimizer pass)
# removed without recording where their value went (a zero bias whose Add it dropped).
OPTIMIZER_REMOVED = "pkg.graphtag.optimizer_removed"
# Model: JSON list of the named nodes torch's exporter or optimizer left reaching no
# output. graphtag keeps torch's topology, so they stay; validate's orphan-nodes rule
# accepts them (a dead node graphtag made still fails it).
EXPORTER_DEAD_NODES = "pkg.graphtag.exporter_dead_nodes"

# Node: Model Explorer's grouping key (its ONNX adapter, model-explorer-onnx, builds its
# layers from it; torch's dynamo exporter writes its own module path there). The
# namespace pass writes the node's tag into it.
NAMESPACE = "namespace"
# Node: what ``namespace`` held before the namespace pass replaced it ("" when nothing).
ORIGINAL_NAMESPACE = "pkg.graphtag.original_namespace"

# Written by torch.onnx's dynamo exporter on every node.
TORCH_NAME_SCOPES = "pkg.torch.onnx.name_scopes"
TORCH_CLASS_HIERARCHY = "pkg.torch.onnx.class_hierarchy"
TORCH_STACK_TRACE = "pkg.torch.onnx.stack_trace"
TORCH_FX_NODE = "pkg.torch.onnx.fx_node"
# Written by onnxscript's optimizer on initializers it folded.
ONNXSCRIPT_FOLDED_FROM = "pkg.onnxscript.optimizer.folded_from"


# Roles of the entries in CONTEXTS.
FUSED_ROLE = "fused"  # the node replaced nodes of these modules (an optimizer's fusion)


def node_tag(node: ir.Node) -> str | None:
    """The module tag of ``node``, or None when it has none."""
    return node.metadata_props.get(MODULE)


def set_tag(node: ir.Node, tag: str, source: str | None = None) -> None:
    """Tag ``node``; ``source`` says how the tag was obtained (None: from the exporter)."""
    node.metadata_props[MODULE] = tag
    if source is None:
        node.metadata_props.pop(TAG_SOURCE, None)
    else:
        node.metadata_props[TAG_SOURCE] = source


def tag_source(node: ir.Node) -> str | None:
    """How the node's tag was obtained (``inferred:<rule>``, ``fused``, ...), None if exact."""
    return node.metadata_props.get(TAG_SOURCE)


def name_scopes(node: ir.Node) -> tuple[str, ...]:
    """The modules torch's dynamo exporter recorded for ``node`` (root '' first, the FX node
    name last); () when absent or unreadable."""
    text = node.metadata_props.get(TORCH_NAME_SCOPES)
    return cached_name_list(text) if text else ()


def folded_from(value: ir.Value) -> tuple[str, ...]:
    """The names onnxscript's optimizer folded into ``value`` (parameters and intermediate
    values); () when it recorded none."""
    text = value.metadata_props.get(ONNXSCRIPT_FOLDED_FROM)
    return cached_name_list(text) if text else ()


def _compact(data: object) -> str:
    return json.dumps(data, separators=(",", ":"))


def _put(props: dict[str, str], key: str, text: str | None) -> bool:
    """Set (or, for None, remove) one metadata entry; True when it changed."""
    if text is None:
        return props.pop(key, None) is not None
    if props.get(key) == text:
        return False
    props[key] = text
    return True


def contexts(node: ir.Node) -> list[dict[str, str]]:
    """The node's context entries (``{"module": tag, "role": role}``), [] if none.

    Unreadable text or malformed entries are skipped (``graphtag validate`` reports them).
    """
    text = node.metadata_props.get(CONTEXTS)
    if not text:
        return []
    try:
        data = json.loads(text)
    except ValueError:
        return []
    if not isinstance(data, list):
        return []
    return [
        {"module": e["module"], "role": str(e.get("role", ""))}
        for e in data
        if isinstance(e, dict) and isinstance(e.get("module"), str)
    ]


def set_contexts(node: ir.Node, entries: list[dict[str, str]]) -> bool:
    """Write the context entries, deduplicated and sorted by (module, role); none removes
    the key. Returns whether the stored text changed."""
    unique = tuple(sorted({(e["module"], e["role"]) for e in entries}))
    return _put(node.metadata_props, CONTEXTS, _contexts_text(unique) if unique else None)


# Many values and nodes carry the same record (every value a layer passes to the next):
# one shared string per distinct record keeps a 100k-node model's metadata small.
@functools.lru_cache(maxsize=16384)
def _shared_text(names: tuple[str, ...]) -> str:
    return _compact(list(names))


@functools.lru_cache(maxsize=16384)
def _contexts_text(pairs: tuple[tuple[str, str], ...]) -> str:
    return _compact([{"module": m, "role": r} for m, r in pairs])


def exporter_dead_nodes(model: ir.Model) -> set[str]:
    """The names recorded in ``pkg.graphtag.exporter_dead_nodes`` (empty when absent)."""
    text = model.metadata_props.get(EXPORTER_DEAD_NODES)
    return set(parse_name_list(text) or ()) if text else set()


def set_exporter_dead_nodes(model: ir.Model, names: Iterable[str]) -> None:
    """Record ``names`` as the dead nodes torch left (the key removed when there is none)."""
    listed = sorted(set(names))
    _put(model.metadata_props, EXPORTER_DEAD_NODES, json.dumps(listed) if listed else None)


def parse_name_list(text: str) -> list[str] | None:
    """A list of names stored as JSON or as a Python literal (onnxscript's format).

    A single string counts as a one-name list; anything else is None.
    """
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


@functools.lru_cache(maxsize=4096)
def cached_name_list(text: str) -> tuple[str, ...]:
    """:func:`parse_name_list` as a tuple, () when unreadable; cached because many nodes
    share one string (every node of one module call has the same name scopes)."""
    return tuple(parse_name_list(text) or ())


def consumers(value: ir.Value) -> set[str] | None:
    """The tags recorded in ``pkg.graphtag.consumers``, None when the value has no key.

    The key holds a JSON list of tags (or of ``{"module": tag}`` objects); anything else
    raises ValueError.
    """
    text = value.metadata_props.get(CONSUMERS)
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


def set_consumers(value: ir.Value, tags: set[str] | list[str] | None) -> bool:
    """Record the consuming modules (sorted); None removes the key. True when changed."""
    text = None if tags is None else _shared_text(tuple(sorted(set(tags))))
    return _put(value.metadata_props, CONSUMERS, text)


def consumer_tags(value: ir.Value) -> set[str]:
    """Tags of the nodes using ``value`` now (nodes of nested subgraphs included): what
    ``pkg.graphtag.consumers`` records."""
    return {tag for use in value.uses() if (tag := node_tag(use.node)) is not None}


def refresh_consumers(values: Iterable[ir.Value]) -> int:
    """Rewrite ``pkg.graphtag.consumers`` from the graph on those ``values`` that carry it.

    The record is kept true, never invented: a rewrite that changes who uses a value
    (outlining, inlining, extraction, an optimizer) calls this on the values it may have
    touched; values without the key stay without it. Returns how many records changed.
    """
    changed = 0
    for value in values:
        if CONSUMERS in value.metadata_props:
            changed += set_consumers(value, consumer_tags(value))
    return changed


def origin(value: ir.Value) -> list[str] | None:
    """The parameter names recorded in ``pkg.graphtag.origin``, None when absent/unreadable."""
    text = value.metadata_props.get(ORIGIN)
    return parse_name_list(text) if text else None


def set_origin(value: ir.Value, names: list[str] | None) -> bool:
    """Record the parameters an initializer holds (sorted); None or [] removes the key."""
    text = _compact(sorted(set(names))) if names else None
    return _put(value.metadata_props, ORIGIN, text)


def order(node: ir.Node) -> int | None:
    """The node's original position recorded by function outlining, None if absent."""
    text = node.metadata_props.get(ORDER)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def set_order(node: ir.Node, position: int | None) -> None:
    """Record (or, for None, remove) the node's original position."""
    _put(node.metadata_props, ORDER, None if position is None else str(position))


def outlined_record(node: ir.Node) -> dict:
    """How an outlined instance differs from its function body ({} when absent)."""
    text = node.metadata_props.get(OUTLINED)
    return json.loads(text) if text else {}


def set_outlined_record(node: ir.Node, record: dict) -> None:
    _put(node.metadata_props, OUTLINED, _compact(record))


def function_class(function: ir.Function) -> str | None:
    """The module class a function was outlined from, None for other functions."""
    return function.metadata_props.get(FUNCTION_CLASS)


def set_function_origin(function: ir.Function, class_name: str, template: str) -> None:
    """Record the module class a function implements and the instance it was copied from."""
    function.metadata_props[FUNCTION_CLASS] = class_name
    function.metadata_props[FUNCTION_TEMPLATE] = template


def parameter_prefix(model: ir.Model) -> str:
    """The prefix the exporter put before every parameter name ("" when none)."""
    return model.metadata_props.get(PARAMETER_PREFIX, "")


def unprefixed(name: str, prefix: str) -> str:
    """A parameter's ``name`` without the exporter's wrapper ``prefix`` (see
    :func:`parameter_prefix`; TorchScript's ``model.``)."""
    return name[len(prefix) :] if prefix and name.startswith(prefix) else name


def set_boundaries(model: ir.Model, summary: dict[str, dict]) -> bool:
    """Store the boundary summary (see boundary-detection); True when the text changed."""
    return _put(model.metadata_props, BOUNDARIES, _compact(summary))


def set_extracted_module(model: ir.Model, tag: str) -> None:
    """Mark ``model`` as the extraction of module ``tag``."""
    model.metadata_props[EXTRACTED_MODULE] = tag
