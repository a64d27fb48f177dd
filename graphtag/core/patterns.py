"""The tag pattern language: which modules a glob over tags names.

One implementation for every place that selects modules by pattern: function
outlining (``--outline``), ``graphtag nodes --module``/``--exclude``, scoped passes
(``PASS@PATTERN``); :func:`match_tags` is the one function they all match through. An
exact tag (``/BertModel/BertEncoder``) is a pattern matching itself, so ``graphtag
extract --module TAG`` speaks the same language.

* an exact tag comes first: a pattern whose whole text is one of the model's tags
  selects that tag and nothing else, whatever ``[``, ``]``, ``|``, ``*`` or ``?`` it
  contains (ModuleDict keys may hold them: ``/M/Leaf.d.e[0]``, ``/M/Leaf.d.c|d``); so
  does each ``|``-alternative that is a whole tag;
* ``*`` and ``?`` stay within one segment; ``**`` crosses segments;
* ``[...]`` is a character class (``[!...]`` negates it);
* a pattern starting with ``/`` is anchored at the root; otherwise it may match any
  trailing part of a tag: ``*/Layer.*`` matches ``/M/Enc/Layer.0`` but not
  ``/M/Enc/Layer.0/Attn``;
* ``A|B`` (outside ``[...]``) matches what ``A`` or ``B`` matches;
* escape: a special character inside a class is itself, so ``[[]``, ``[]]``, ``[|]``,
  ``[*]`` and ``[?]`` match a literal ``[``, ``]``, ``|``, ``*`` and ``?``. Needed only
  when such a tag is part of a glob or of a longer ``A|B``:
  ``*/Leaf.d.e[[]*`` or ``/M/Leaf.d.c[|]d|*/Head``.

Several pattern texts given separately (a repeated ``--module``, a list of scopes)
select what any of them selects; each text is read on its own (an exact tag in one is
still exact), so prefer a list to joining texts with ``|``.
"""

from __future__ import annotations

__all__ = ["match_tags", "pattern_texts", "split_patterns", "tag_pattern"]

import re
from collections.abc import Collection, Iterable


def pattern_texts(patterns: str | Iterable[str]) -> list[str]:
    """``patterns`` as a list of pattern texts (one string is one text)."""
    return [patterns] if isinstance(patterns, str) else list(patterns)


def split_patterns(text: str) -> list[str]:
    """The alternatives of ``A|B|C`` (``|`` inside ``[...]`` does not split), stripped;
    empty alternatives are dropped. Syntax only: a whole text that is an exact tag is
    not split by :func:`tag_pattern` or :func:`match_tags`, whatever this returns."""
    parts: list[str] = []
    start = i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "[" and "]" in text[i + 2 :]:
            i = text.index("]", i + 2) + 1
            continue
        if c == "|":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def tag_pattern(pattern: str, known: Collection[str] = ()) -> re.Pattern[str]:
    """A compiled regex for ``pattern`` (see the module doc); use ``fullmatch``.

    ``known``: the tags that exist. The whole text, or an alternative, equal to one of
    them stands for that tag literally (exact match first). Without ``known`` the text
    is read as a glob only: select through :func:`match_tags`."""
    return re.compile("|".join(f"(?:{p})" for p in _regexes(pattern, known)))


def match_tags(patterns: str | Iterable[str], known: Iterable[str]) -> list[str]:
    """The tags of ``known`` (in their order, once each) that ``patterns`` select: one
    pattern text, or several (any of them). An exact tag matches itself first."""
    tags = list(dict.fromkeys(known))
    present = set(tags)
    parts = [p for text in pattern_texts(patterns) for p in _regexes(text, present)]
    if not parts:
        return []
    regex = re.compile("|".join(f"(?:{p})" for p in parts))
    return [tag for tag in tags if regex.fullmatch(tag)]


def _regexes(pattern: str, known: Collection[str]) -> list[str]:
    """One regex per alternative of ``pattern``; an exact known tag is itself, unsplit."""
    for text in (pattern, pattern.strip()):
        if text in known:
            return [re.escape(text)]
    alternatives = split_patterns(pattern) or [pattern]
    return [re.escape(p) if p in known else _one(p) for p in alternatives]


_CLASS_SPECIAL = frozenset("\\[]&~|")  # literal in a glob class; special (or warned) in re's


def _one(pattern: str) -> str:
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = "".join(f"\\{ch}" if ch in _CLASS_SPECIAL else ch for ch in body[negate:])
            out.append(f"[{'^' if negate else ''}{body}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    prefix = "" if pattern.startswith("/") else "(?:.*/)?"
    return prefix + "".join(out)
