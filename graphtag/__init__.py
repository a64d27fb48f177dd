"""graphtag: ONNX export with the nn.Module hierarchy on every node, plus graph passes.

The core (loading, passes, analysis) never imports torch; ``graphtag.export`` is the
only place that does, and it is imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from graphtag.errors import GraphtagError
from graphtag.hierarchy import Hierarchy, ModuleInfo
from graphtag.io import load, save

__version__ = "0.1.0"

if TYPE_CHECKING:
    from graphtag.exporter.tagged_export import ExportResult

__all__ = [
    "GraphtagError",
    "Hierarchy",
    "ModuleInfo",
    "__version__",
    "export",
    "load",
    "save",
]


def export(
    model: Any, args: tuple = (), kwargs: dict | None = None, f: Any = None, **options: Any
) -> ExportResult:
    """Export ``model`` with ``torch.onnx.export`` and tag every node (imports torch)."""
    from graphtag.exporter.tagged_export import export as _export

    return _export(model, args, kwargs, f, **options)
