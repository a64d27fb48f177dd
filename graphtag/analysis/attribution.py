"""Map what the exporters record about a node's module to a graphtag tag.

Dynamo exporter (``dynamo=True``)
    Every node carries ``pkg.torch.onnx.name_scopes``: the repr of a list with the dotted
    names of the modules on the call stack, root ('') first, then the FX node's name as the
    last element (built from the FX node's ``nn_module_stack``). Names are the access paths
    actually used, so a shared module called through an alias shows the alias.

TorchScript exporter (``dynamo=False``)
    Scope information survives only in node names (doc_string holds a source stack trace
    when ``verbose=True``, metadata_props stays empty). A scoped node is named
    ``/<s1>/<s2>/.../<OpType>[_<n>]``: the leading '' is the root module, each ``<si>`` is
    the *unqualified* name of a called module (torch keeps the last non-numeric atom of the
    dotted name plus the numeric atoms after it: ``encoder.layer.0`` -> ``layer.0``,
    ``seq.0`` -> ``seq.0``), containers that are never called (ModuleList) leave no
    segment, and a shared module appears under its first registered name. When a scope
    path repeats (a module called twice) torch appends ``_<n>`` to its last segment
    (``/left_1/Relu``, ``/left/lin_1/Gemm``). Nodes created outside any module call
    (``Identity_3``, no leading '/') have no scope.
"""

from __future__ import annotations

import re

from graphtag.core import metadata
from graphtag.core.hierarchy import Hierarchy

# torch.export marks repeated calls of one module as "name@<n>" in some places.
_CALL_SUFFIX = re.compile(r"^(.*)@\d+$")
# TorchScript's suffix for a repeated scope path.
_SCOPE_SUFFIX = re.compile(r"^(.*)_\d+$")


def tag_from_name_scopes(name_scopes: str, hierarchy: Hierarchy) -> str | None:
    """Tag of the innermost known module in a ``pkg.torch.onnx.name_scopes`` value.

    The last element is always the FX node name and is never treated as a module, even
    when it happens to equal a module name. Returns None when no element is known.
    """
    names = metadata.cached_name_list(name_scopes)[:-1]
    for name in reversed(names):
        tag = hierarchy.name_to_tag.get(name)
        if tag is None:
            match = _CALL_SUFFIX.match(name)
            tag = hierarchy.name_to_tag.get(match.group(1)) if match else None
        if tag is not None:
            return tag
    return None


def _unqualified(name: str) -> str:
    """torch's scope segment for a dotted module name (see the module docstring)."""
    atoms = name.split(".")
    for i in range(len(atoms) - 1, -1, -1):
        if not atoms[i].isnumeric():
            return ".".join(atoms[i:])
    return name


def _split_prefix(prefix: str) -> tuple[str, ...]:
    return tuple(s for s in prefix.strip("/").split("/") if s)


def _depth(name: str) -> int:
    return name.count(".") + 1 if name else 0


class TorchScriptScopeResolver:
    """Resolves TorchScript node names against one hierarchy (build once per model)."""

    def __init__(self, hierarchy: Hierarchy, prefix: str = "") -> None:
        self.hierarchy = hierarchy
        self.prefix = _split_prefix(prefix)
        self._by_segment: dict[str, list[str]] = {}
        for name in hierarchy.name_to_tag:
            if name:
                self._by_segment.setdefault(_unqualified(name), []).append(name)
        self._cache: dict[str, str | None] = {}

    def tag(self, node_name: str) -> str | None:
        """Tag of the deepest module named by the node's scope; root tag when unscoped."""
        cut = node_name.rfind("/")
        scope = node_name[:cut] if node_name.startswith("/") else ""
        if scope not in self._cache:
            self._cache[scope] = self._resolve_scope(scope)
        return self._cache[scope]

    def _resolve_scope(self, scope: str) -> str | None:
        root = self.hierarchy.name_to_tag.get("")
        segments = scope.split("/")[1:]  # drop the root module's empty segment
        if self.prefix:
            if tuple(segments[: len(self.prefix)]) != self.prefix:
                return root  # a node of the wrapper itself, outside the wrapped model
            segments = segments[len(self.prefix) :]
        current = ""
        for segment in segments:
            name = self._resolve_segment(segment, current)
            if name is None:
                break  # unknown scope: keep the deepest module resolved so far
            current = name
        return self.hierarchy.name_to_tag.get(current, root)

    def _resolve_segment(self, segment: str, current: str) -> str | None:
        # Preference: exact segment below the current module, then with torch's "_<n>"
        # repeat suffix removed, then the same two anywhere (a module called from outside
        # its parent, e.g. through a shared reference); shallowest first, then by name.
        match = _SCOPE_SUFFIX.match(segment)
        spellings = [segment] + ([match.group(1)] if match else [])
        below = current + "." if current else ""
        for must_be_below in (True, False):
            for spelling in spellings:
                names = [
                    n
                    for n in self._by_segment.get(spelling, ())
                    if not must_be_below or n.startswith(below)
                ]
                if names:
                    return min(names, key=lambda n: (_depth(n), n))
        return None


_last_resolver: TorchScriptScopeResolver | None = None


def tag_from_torchscript_scope(
    node_name: str, hierarchy: Hierarchy, prefix: str = ""
) -> str | None:
    """Tag for a node of the TorchScript exporter, from its scoped name.

    ``prefix`` is the scope path of the wrapped model when a wrapper module was exported
    (its attribute name, e.g. ``model``); it is stripped so the wrapper never shows, and
    the wrapper's own nodes get the root tag. Unscoped nodes get the root tag.
    """
    global _last_resolver
    resolver = _last_resolver
    # One cached resolver: callers tag all nodes of one model in a row.
    if (
        resolver is None
        or resolver.hierarchy is not hierarchy
        or resolver.prefix != _split_prefix(prefix)
    ):
        resolver = _last_resolver = TorchScriptScopeResolver(hierarchy, prefix)
    return resolver.tag(node_name)
