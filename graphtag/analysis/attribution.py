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

    Several modules can share one scope path: the entries of ModuleDicts in a ModuleList
    (``blocks.0.alpha``, ``blocks.1.alpha``: the never-called ``blocks.N`` leaves no
    segment, so all are ``/alpha``). The ``_<n>`` suffix does not tell them apart: torch
    numbers the calls (scopes) of one path in the order their first node appears in the
    final graph, counting only calls that kept a node of their own and counting a
    repeated call of one module like a call of another, and nothing in the file says
    which module made which call (a loop over ``reversed(blocks)`` names ``blocks.2``'s
    nodes ``/alpha/...``). Such a scope is tagged with the deepest common module of the
    candidates instead of one of them (logged), unless a later segment names a child
    only one of them has.
"""

from __future__ import annotations

import logging
import re

from graphtag.core import metadata
from graphtag.core.hierarchy import Hierarchy, tag_lca

logger = logging.getLogger(__name__)

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


def _skipped(name: str, current: str) -> int:
    """How many module levels between ``current`` and ``name`` its scope segment leaves
    out (0: a child of ``current``, or a ModuleList item ``layers.0`` of it)."""
    inner = name[len(current) + 1 :] if current else name
    return inner.count(".") - _unqualified(name).count(".")


def _outermost(names: set[str]) -> set[str]:
    """``names`` without those lying inside another of them (``layer`` over
    ``layer.layer``: the scope segment names the outer one first)."""
    return {n for n in names if not any(n.startswith(o + ".") for o in names if o != n)}


class TorchScriptScopeResolver:
    """Resolves TorchScript node names against one hierarchy (build once per model).

    ``ambiguous`` maps each scope resolved so far that several modules could have
    written (see the module docstring) to those modules' dotted names.
    """

    def __init__(self, hierarchy: Hierarchy, prefix: str = "") -> None:
        self.hierarchy = hierarchy
        self.prefix = _split_prefix(prefix)
        self._by_segment: dict[str, list[str]] = {}
        self._by_attribute: dict[str, list[str]] = {}
        for name in hierarchy.name_to_tag:
            if name:
                self._by_segment.setdefault(_unqualified(name), []).append(name)
                self._by_attribute.setdefault(name.rsplit(".", 1)[-1], []).append(name)
        self._cache: dict[str, str | None] = {}
        self.ambiguous: dict[str, tuple[str, ...]] = {}

    def tag(self, node_name: str) -> str | None:
        """Tag of the deepest module named by the node's scope; root tag when unscoped;
        the candidates' deepest common module when the scope names several alike."""
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
        current = {""}  # the modules the segments so far can name
        for segment in segments:
            names = self._resolve_segment(segment, current)
            if not names:
                break  # unknown scope: keep the deepest modules resolved so far
            current = names
        tags = {self.hierarchy.name_to_tag[n] for n in current}
        if len(tags) == 1:
            return tags.pop()
        self.ambiguous[scope] = tuple(sorted(current))
        tag = tag_lca(tags) or root
        logger.info(
            "scope-tagging: TorchScript scope %s names %d modules alike (%s): its nodes "
            "are tagged with their common module %s",
            scope,
            len(current),
            ", ".join(sorted(current)),
            tag,
        )
        return tag

    def _resolve_segment(self, segment: str, current: set[str]) -> set[str]:
        # Preference: exact segment below a current module, then with torch's "_<n>"
        # repeat suffix removed, then the same two anywhere (a module called from outside
        # its parent, e.g. through a shared reference). Below the current modules, one
        # that is their child (nothing skipped) wins over deeper ones; otherwise every
        # candidate is kept (the caller tags their common module).
        match = _SCOPE_SUFFIX.match(segment)
        spellings = [segment] + ([match.group(1)] if match else [])
        for spelling in spellings:
            below = {
                (n, c)
                for n in self._by_segment.get(spelling, ())
                for c in current
                if not c or n.startswith(c + ".")
            }
            if below:
                direct = {n for n, c in below if _skipped(n, c) == 0}
                return _outermost(direct or {n for n, _ in below})
        for spelling in spellings:
            anywhere = set(self._by_segment.get(spelling, ()))
            if anywhere:
                return _outermost(anywhere)
        # A module of a torch.jit.trace'd model writes its bare attribute name (``0`` for
        # ``blocks.0``): the nearest such module below the current ones.
        for spelling in spellings:
            below = {
                n
                for n in self._by_attribute.get(spelling, ())
                for c in current
                if not c or n.startswith(c + ".")
            }
            if below:
                return _outermost(below)
        return set()
