"""Selections: the nodes (values, initializers) of the modules a tag pattern names.

A pattern (:mod:`graphtag.core.patterns`, through its ``match_tags``: an exact tag
selects itself before any glob reading) is matched against the model's *known* tags:
the modules of the stored hierarchy, the tags on nodes (main graph and control-flow
bodies) and their ancestors. A module *contains* the main-graph nodes tagged with its
tag or a descendant's (``self_only``: its own tag only); a node inside a control-flow
body belongs to its enclosing node, as in :mod:`graphtag.analysis.boundaries`.

* :func:`select` answers "which nodes belong to these modules, minus those": what
  ``graphtag nodes`` prints, for tools that take node lists (quantization exclusions,
  float16 block lists);
* :func:`module_scopes` lists every matched module with its nodes, outermost first:
  what a scoped pass (``PASS@PATTERN``) runs on.

A pattern matching no known tag raises :class:`~graphtag.core.errors.GraphtagError`
naming the closest tags. Cost: one walk over the main graph's nodes plus one ancestor
chain per distinct tag, O(nodes + tags x depth).
"""

from __future__ import annotations

__all__ = ["Selection", "known_tags", "module_scopes", "no_match_error", "select"]

import dataclasses
import difflib
import re
from collections.abc import Iterable, Sequence

import onnx_ir as ir

from graphtag.analysis.boundaries import ancestors_and_self
from graphtag.analysis.manager import hierarchy
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.core.graphs import node_reads, subgraphs_of
from graphtag.core.hierarchy import tag_segments
from graphtag.core.patterns import match_tags, pattern_texts, split_patterns
from graphtag.core.scoping import NodeScope

_CLOSEST = 5


@dataclasses.dataclass
class Selection:
    """What a pattern selected: the modules, and the main-graph nodes they contain."""

    pattern: str
    modules: list[str]  # tags matched by ``pattern`` (hierarchy order)
    nodes: list[ir.Node]  # main-graph nodes, graph order
    excluded_modules: list[str] = dataclasses.field(default_factory=list)
    exclude: str | None = None
    self_only: bool = False
    with_contexts: bool = False

    def all_nodes(self) -> list[ir.Node]:
        """The nodes with the nodes of their control-flow bodies (pre-order)."""
        found: list[ir.Node] = []

        def walk(nodes: Iterable[ir.Node]) -> None:
            for node in nodes:
                found.append(node)
                if node.attributes.data:  # the plain dict: no method call per node
                    for graph in subgraphs_of(node):
                        walk(graph)

        walk(self.nodes)
        return found

    def values(self) -> list[ir.Value]:
        """The values the selected main-graph nodes compute (graph order)."""
        return [v for node in self.nodes for v in node.outputs]

    def initializers(self) -> list[ir.Value]:
        """The main-graph initializers the selected nodes (or their bodies) read, first use
        order."""
        found: dict[ir.Value, None] = {}
        for node in self.nodes:
            for value in node_reads(node):
                if value.is_initializer() and value not in found:
                    found[value] = None
        return list(found)

    def scope(self) -> NodeScope:
        """The selection as a :class:`~graphtag.core.scoping.NodeScope`."""
        return NodeScope(self.nodes, self.modules)


def known_tags(model: ir.Model) -> list[str]:
    """Every module tag the model knows: the hierarchy's (pre-order), then tags found on
    nodes of the main graph and its bodies, and their ancestors (first appearance)."""
    return _tagged(model)[0]


def _tagged(model: ir.Model) -> tuple[list[str], list[tuple[ir.Node, str | None]]]:
    """:func:`known_tags`, and each main-graph node with its tag (graph order): one walk."""
    tree = hierarchy(model)
    known: dict[str, None] = dict.fromkeys(tree.modules if tree else ())
    seen: set[str] = set()
    main: list[tuple[ir.Node, str | None]] = []
    stack: list[ir.Graph] = [model.graph]
    while stack:
        graph = stack.pop()
        for node in graph:
            tag = metadata.node_tag(node)
            if graph is model.graph:
                main.append((node, tag))
            if tag and tag not in seen:
                seen.add(tag)
                if tag not in known:
                    known.update(dict.fromkeys(ancestors_and_self(tag)))
            if node.attributes.data:  # the plain dict: no method call per node
                stack.extend(subgraphs_of(node))
    return list(known), main


def match_modules(
    known: list[str], pattern: str | Sequence[str], what: str = "pattern"
) -> list[str]:
    """The known tags ``pattern`` matches (one text or several, any of them; an exact tag
    matches itself first: :func:`graphtag.core.patterns.match_tags`); GraphtagError
    (with the closest tags) if none."""
    if not any(split_patterns(text) for text in pattern_texts(pattern)):
        raise GraphtagError(f"empty {what}: give a tag pattern such as '*/Layer.*'")
    matched = match_tags(pattern, known)
    if not matched:
        raise no_match_error(known, pattern, what)
    return matched


def no_match_error(
    known: list[str], pattern: str | Sequence[str], what: str = "pattern"
) -> GraphtagError:
    """``{what} 'P' matches no module`` plus the closest known tags (never one of the
    texts rejected: a tag equal to one would have matched)."""
    texts = pattern_texts(pattern)
    shown = ", ".join(repr(text) for text in texts)
    if not known:
        return GraphtagError(f"{what} {shown} matches no module: the model has no tagged nodes")
    closest = _closest_tags(known, texts)
    hint = f"; closest: {', '.join(closest)}" if closest else ""
    return GraphtagError(f"{what} {shown} matches no module{hint}")


def _closest_tags(known: list[str], texts: list[str]) -> list[str]:
    """The known tags most like any alternative of ``texts`` (glob characters dropped),
    comparing like with like: an anchored pattern with whole tags, another with the tags'
    trailing parts of the same number of segments. A tag spelled exactly as a text or an
    alternative is not suggested: it is what was rejected."""
    alternatives = [a for text in texts for a in split_patterns(text)]
    rejected = set(texts) | {t.strip() for t in texts} | set(alternatives)
    candidates = [tag for tag in known if tag not in rejected]
    scores: dict[str, float] = {}
    for alternative in alternatives:
        literal = re.sub(r"\[[^\]]*\]|[*?]", "", alternative)
        anchored = alternative.startswith("/")
        depth = len(tag_segments(alternative)) if anchored else alternative.count("/") + 1
        matcher = difflib.SequenceMatcher(b=literal)
        for tag in candidates:
            segments = tag_segments(tag)
            text = tag if anchored else "/".join(segments[-depth:])
            matcher.set_seq1(text)
            score = matcher.ratio()
            if score > scores.get(tag, -1.0):
                scores[tag] = score
    ranked = sorted(candidates, key=lambda t: (-scores.get(t, 0.0), len(t), t))
    return ranked[:_CLOSEST]


def select(
    model: ir.Model,
    pattern: str | Sequence[str],
    *,
    exclude: str | Sequence[str] | None = None,
    self_only: bool = False,
    with_contexts: bool = False,
) -> Selection:
    """The main-graph nodes of the modules ``pattern`` matches.

    ``self_only``: only nodes tagged with a matched tag (not its descendants').
    ``with_contexts``: also nodes whose ``pkg.graphtag.contexts`` name a selected module
    (a residual Add reading an attention's output, a fused node). ``exclude``: a pattern
    whose modules' nodes (descendants always included) are left out. Patterns matching
    no module raise GraphtagError naming the closest tags. A sequence of patterns selects
    what any of them selects, each read on its own (``graphtag nodes --module A --module
    B``); the selection's ``pattern`` and ``exclude`` then show them joined by ``|``.
    """
    known = known_tags(model)
    modules = match_modules(known, pattern)
    excluded = match_modules(known, exclude, "exclude pattern") if exclude else []
    wanted, dropped = set(modules), set(excluded)

    def inside(tag: str, tags: set[str], whole_subtree: bool) -> bool:
        if whole_subtree:
            return any(t in tags for t in ancestors_and_self(tag))
        return tag in tags

    chosen: dict[str, bool] = {}  # tag -> selected (memoized per distinct tag)
    banned: dict[str, bool] = {}
    nodes = []
    for node in model.graph:
        tag = metadata.node_tag(node)
        keep = False
        if tag is not None:
            if tag not in chosen:
                chosen[tag] = inside(tag, wanted, not self_only)
            keep = chosen[tag]
        if not keep and with_contexts:
            for entry in metadata.contexts(node):
                module = entry["module"]
                if module not in chosen:
                    chosen[module] = inside(module, wanted, not self_only)
                if chosen[module]:
                    keep = True
                    break
        if keep and dropped and tag is not None:
            if tag not in banned:
                banned[tag] = inside(tag, dropped, True)
            keep = not banned[tag]
        if keep:
            nodes.append(node)
    return Selection(
        "|".join(pattern_texts(pattern)),
        modules,
        nodes,
        excluded_modules=excluded,
        exclude="|".join(pattern_texts(exclude)) if exclude else None,
        self_only=self_only,
        with_contexts=with_contexts,
    )


def module_scopes(model: ir.Model, pattern: str | Sequence[str]) -> list[tuple[str, list[ir.Node]]]:
    """Every module ``pattern`` matches with the main-graph nodes it contains (descendants
    included, graph order), outermost first, then in graph order of their first node.

    Matched modules without main-graph nodes come last with an empty list. Overlapping
    matches (a module and one inside it) are both listed: the inner one's nodes are
    also the outer one's.
    """
    known, main = _tagged(model)
    matched = set(match_modules(known, pattern))
    members: dict[str, list[ir.Node]] = {tag: [] for tag in known if tag in matched}
    chains: dict[str, list[str]] = {}
    position: dict[str, int] = {}  # scope -> index of its first node
    for index, (node, tag) in enumerate(main):
        if tag is None:
            continue
        chain = chains.get(tag)
        if chain is None:
            chain = chains[tag] = [t for t in ancestors_and_self(tag) if t in matched]
        for scope in chain:
            nodes = members[scope]
            if not nodes:
                position[scope] = index
            nodes.append(node)
    first = {tag: i for i, tag in enumerate(members)}
    order = sorted(
        members,
        key=lambda t: (
            not members[t],
            len(tag_segments(t)),
            position.get(t, 0),
            first[t],
        ),
    )
    return [(tag, members[tag]) for tag in order]
