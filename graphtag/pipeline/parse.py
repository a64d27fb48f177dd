"""Pipeline descriptions: the textual form and the TOML form.

Text: ``toposort,tag-propagation{strategy=consumers,min-share=0.5}``; option values
may be quoted ("..." or '...') to contain commas or braces. ``PASS@PATTERN`` runs the
pass on the modules a tag pattern selects only (``A|B`` for several;
:mod:`graphtag.pipeline.scoped`): ``ir.common-subexpression-elimination@*/Layer.0``; a
pattern ends at the next ``,`` outside ``[...]`` and may be quoted.

TOML::

    [[pass]]
    name = "toposort"

    [[pass]]
    name = "tag-propagation"
    strategy = "consumers"
    scope = "*/Layer.0"   # optional: the PATTERN of PASS@PATTERN
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from graphtag.core.errors import PipelineError
from graphtag.core.toml_files import read_toml

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]*")


@dataclasses.dataclass(frozen=True)
class PassInvocation:
    """One step of a pipeline: a pass name and its raw (unconverted) options."""

    name: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    scope: str | None = None  # tag pattern: run the pass on those modules only

    def __str__(self) -> str:
        text = self.name
        if self.options:
            text += "{" + ",".join(f"{k}={v}" for k, v in self.options.items()) + "}"
        if self.scope is not None:
            text += "@" + (repr(self.scope) if re.search(r"[,\s'\"{}]", self.scope) else self.scope)
        return text


def parse_pipeline(text: str) -> list[PassInvocation]:
    """Parse the textual pipeline form; raises PipelineError pointing at the bad spot."""
    parser = _Parser(text)
    steps = parser.parse()
    if not steps:
        raise PipelineError("empty pipeline: name at least one pass")
    return steps


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, what: str) -> PipelineError:
        return PipelineError(f"bad pipeline at column {self.pos + 1}: {what} in {self.text!r}")

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def name(self, what: str) -> str:
        self.skip_ws()
        match = _NAME.match(self.text, self.pos)
        if not match:
            raise self.error(f"expected a {what}")
        self.pos = match.end()
        return match.group()

    def value(self) -> str:
        self.skip_ws()
        quote = self.peek()
        if quote in ("'", '"'):
            end = self.text.find(quote, self.pos + 1)
            if end < 0:
                raise self.error("unterminated quoted value")
            value = self.text[self.pos + 1 : end]
            self.pos = end + 1
            return value
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ",}{":
            self.pos += 1
        value = self.text[start : self.pos].strip()
        if not value:
            raise self.error("expected a value")
        return value

    def scope_pattern(self) -> str:
        """A tag pattern after ``@``: quoted, or up to the next ``,`` outside ``[...]``."""
        self.skip_ws()
        if self.peek() in ("'", '"'):
            pattern = self.value().strip()
        else:
            start = self.pos
            while self.pos < len(self.text) and self.text[self.pos] != ",":
                if self.text[self.pos] == "[" and "]" in self.text[self.pos + 2 :]:
                    self.pos = self.text.index("]", self.pos + 2)
                elif self.text[self.pos] in "{}@":
                    raise self.error("unexpected character in a scope pattern (quote it)")
                self.pos += 1
            pattern = self.text[start : self.pos].strip()
        if not pattern:
            raise self.error("expected a tag pattern after '@'")
        return pattern

    def parse(self) -> list[PassInvocation]:
        steps = []
        if not self.peek():
            return steps
        while True:
            name = self.name("pass name")
            options: dict[str, Any] = {}
            spelled: dict[str, str] = {}
            if self.peek() == "{":
                self.pos += 1
                while self.peek() != "}":
                    key = self.name("option name")
                    if self.peek() != "=":
                        raise self.error(f"expected '=' after option '{key}'")
                    self.pos += 1
                    try:
                        option = option_name(key, spelled)
                    except PipelineError as exc:
                        raise self.error(str(exc)) from None
                    options[option] = self.value()
                    if self.peek() == ",":
                        self.pos += 1
                    elif self.peek() != "}":
                        raise self.error("expected ',' or '}'")
                self.pos += 1
            scope = None
            if self.peek() == "@":
                self.pos += 1
                scope = self.scope_pattern()
            steps.append(PassInvocation(name, options, scope))
            nxt = self.peek()
            if not nxt:
                return steps
            if nxt != ",":
                raise self.error("expected ',' between passes")
            self.pos += 1


def option_name(key: str, spelled: dict[str, str]) -> str:
    """The option ``key`` names (``group-by-tag`` and ``group_by_tag`` name one option).

    ``spelled`` maps the names seen so far in one invocation to their spelling; naming
    one option twice, in any spelling, is an error.
    """
    option = key.replace("-", "_")
    if option in spelled:
        raise PipelineError(f"option '{option}' given twice (as '{spelled[option]}' and '{key}')")
    spelled[option] = key
    return option


def load_pipeline_toml(path: str | os.PathLike) -> list[PassInvocation]:
    """Read ``[[pass]]`` tables (``name`` plus options) from a TOML file."""
    path = Path(path)
    data = read_toml(path, "pipeline", PipelineError)
    entries = data.get("pass")
    if not isinstance(entries, list) or not entries:
        raise PipelineError(f"{path}: expected one or more [[pass]] tables")
    steps = []
    for index, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise PipelineError(f"{path}: [[pass]] number {index} has no name")
        scope = entry.get("scope")
        if isinstance(scope, list) and scope and all(isinstance(s, str) for s in scope):
            scope = "|".join(scope)
        if scope is not None and (not isinstance(scope, str) or not scope.strip()):
            raise PipelineError(
                f"{path}: [[pass]] number {index}: scope must be a tag pattern (a string)"
            )
        options: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        for key, value in entry.items():
            if key in ("name", "scope"):
                continue
            try:
                options[option_name(key, spelled)] = value
            except PipelineError as exc:
                raise PipelineError(
                    f"{path}: [[pass]] number {index} ({entry['name']}): {exc}"
                ) from None
        steps.append(PassInvocation(entry["name"], options, scope.strip() if scope else None))
    return steps
