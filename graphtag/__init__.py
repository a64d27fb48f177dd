"""graphtag: ONNX export with the nn.Module hierarchy on every node, plus graph passes.

The public API is re-exported here lazily: ``import graphtag`` loads nothing heavy (the
command line starts fast), and only ``graphtag.export`` imports torch. The layers behind
it are described in ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> "module:attribute". Resolved on first access (PEP 562).
_LAZY = {
    "GraphtagError": "graphtag.core.errors:GraphtagError",
    "Hierarchy": "graphtag.core.hierarchy:Hierarchy",
    "ModuleInfo": "graphtag.core.hierarchy:ModuleInfo",
    "load": "graphtag.core.io:load",
    "save": "graphtag.core.io:save",
    "analyze": "graphtag.analysis.summary:analyze",
    "select": "graphtag.analysis.selection:select",
    "validate": "graphtag.checks.validation:validate",
    "extract_module": "graphtag.surgery.extraction:extract_module",
    "Pipeline": "graphtag.pipeline.manager:Pipeline",
    "retag": "graphtag.passes.retag:retag",
    "export": "graphtag.exporter.tagged_export:export",
}

if TYPE_CHECKING:
    from graphtag.analysis.selection import select
    from graphtag.analysis.summary import analyze
    from graphtag.checks.validation import validate
    from graphtag.core.errors import GraphtagError
    from graphtag.core.hierarchy import Hierarchy, ModuleInfo
    from graphtag.core.io import load, save
    from graphtag.exporter.tagged_export import export
    from graphtag.passes.retag import retag
    from graphtag.pipeline.manager import Pipeline
    from graphtag.surgery.extraction import extract_module

__all__ = [
    "GraphtagError",
    "Hierarchy",
    "ModuleInfo",
    "Pipeline",
    "__version__",
    "analyze",
    "export",
    "extract_module",
    "load",
    "retag",
    "save",
    "select",
    "validate",
]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'graphtag' has no attribute {name!r}")
    module_name, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
