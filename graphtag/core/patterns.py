"""The tag pattern language: which modules a glob over tags names.

One implementation for every place that selects modules by pattern: function
outlining (``--outline``), ``graphtag nodes --module``/``--exclude``, scoped passes
(``PASS@PATTERN``). An exact tag (``/BertModel/BertEncoder``) is a pattern matching
itself, so ``graphtag extract --module TAG`` speaks the same language.

* ``*`` and ``?`` stay within one segment; ``**`` crosses segments;
* ``[...]`` is a character class (``[!...]`` negates it);
* a pattern starting with ``/`` is anchored at the root; otherwise it may match any
  trailing part of a tag: ``*/Layer.*`` matches ``/M/Enc/Layer.0`` but not
  ``/M/Enc/Layer.0/Attn``;
* ``A|B`` (outside ``[...]``) matches what ``A`` or ``B`` matches.
"""

from __future__ import annotations

__all__ = ["split_patterns", "tag_pattern"]

import re


def split_patterns(text: str) -> list[str]:
    """The alternatives of ``A|B|C`` (``|`` inside ``[...]`` does not split), stripped;
    empty alternatives are dropped."""
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


def tag_pattern(pattern: str) -> re.Pattern[str]:
    """A compiled regex for ``pattern`` (see the module doc); use ``fullmatch``."""
    alternatives = split_patterns(pattern) or [pattern]
    return re.compile("|".join(f"(?:{_one(p)})" for p in alternatives))


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
            body = "^" + body[1:] if body.startswith("!") else body
            out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    prefix = "" if pattern.startswith("/") else "(?:.*/)?"
    return prefix + "".join(out)
