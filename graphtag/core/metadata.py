"""Metadata keys graphtag reads and writes, and helpers to access them.

All graphtag keys live under the ``pkg.graphtag.`` prefix so they never clash with
torch's (``pkg.torch.onnx.``) or onnxscript's keys.
"""

from __future__ import annotations

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
# Model: JSON {tag: {"inputs": [...], "outputs": [...], "nodes": n}} (boundary detection).
BOUNDARIES = "pkg.graphtag.analysis.boundaries"
# Model: on an extracted model, the tag of the module it holds.
EXTRACTED_MODULE = "pkg.graphtag.extracted_module"

# Written by torch.onnx's dynamo exporter on every node.
TORCH_NAME_SCOPES = "pkg.torch.onnx.name_scopes"
TORCH_CLASS_HIERARCHY = "pkg.torch.onnx.class_hierarchy"
TORCH_STACK_TRACE = "pkg.torch.onnx.stack_trace"
TORCH_FX_NODE = "pkg.torch.onnx.fx_node"
# Written by onnxscript's optimizer on initializers it folded.
ONNXSCRIPT_FOLDED_FROM = "pkg.onnxscript.optimizer.folded_from"


def node_tag(node: ir.Node) -> str | None:
    """The module tag of ``node``, or None when it has none."""
    return node.metadata_props.get(MODULE)


def iter_all_nodes(model: ir.Model):
    """Every node of the model: main graph, nested subgraphs and local functions."""
    yield from ir.traversal.RecursiveGraphIterator(model.graph)
    for function in model.functions.values():
        yield from ir.traversal.RecursiveGraphIterator(function)
