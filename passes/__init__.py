"""graphtag's built-in passes, one module per pass.

Each pass is an ``onnx_ir.passes`` pass class; :data:`BUILTIN_PASSES` maps its
pipeline name to ``module:Class`` so the registry imports a pass only when used.
"""

from __future__ import annotations

BUILTIN_PASSES: dict[str, str] = {
    "toposort": "graphtag.passes.toposort:TopologicalSortPass",
    "scope-tagging": "graphtag.passes.scope_tagging:ScopeTaggingPass",
    "torch-optimizer": "graphtag.passes.torch_optimizer:TorchOptimizerPass",
    "strip-torch-metadata": "graphtag.passes.strip_torch_metadata:StripTorchMetadataPass",
    "tag-propagation": "graphtag.passes.tag_propagation:TagPropagationPass",
    "multi-consumer": "graphtag.passes.multi_consumer:MultiConsumerPass",
    "residual-resolution": "graphtag.passes.residual_resolution:ResidualResolutionPass",
    "boundary-detection": "graphtag.passes.boundary_detection:BoundaryDetectionPass",
    "function-outlining": "graphtag.passes.function_outlining:FunctionOutliningPass",
    "function-inlining": "graphtag.passes.function_inlining:FunctionInliningPass",
    "namespace": "graphtag.passes.namespace:NamespacePass",
    "retag": "graphtag.passes.retag:RetagPass",
}

# What graphtag export runs after tagging (pipeline syntax).
DEFAULT_PIPELINE = "tag-propagation,multi-consumer,residual-resolution"

__all__ = ["BUILTIN_PASSES", "DEFAULT_PIPELINE"]
