"""User-facing errors: each carries one line that names the problem."""

from __future__ import annotations

import re


class GraphtagError(Exception):
    """An error caused by the user's input, reported as one line without a traceback."""


class PipelineError(GraphtagError):
    """A pipeline string, TOML file or pass option is invalid."""


class VerificationError(GraphtagError):
    """A pass left the model invalid (raised by verify-each mode)."""

    def __init__(self, pass_name: str, problem: str) -> None:
        super().__init__(f"pass '{pass_name}' broke the model: {problem}")
        self.pass_name = pass_name
        self.problem = problem


class MissingDependencyError(GraphtagError, ImportError):
    """An optional dependency is not installed (e.g. torch for the export edge)."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked by "..."."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_line(exc: BaseException, limit: int = 300, *, typed: bool = False) -> str:
    """The first line of ``exc``'s message, clipped to ``limit``, for a one-line report.

    Library messages can run to pages (every supported class, a whole graph) and carry
    terminal colours. ``typed`` puts the exception's type first (``Type: line``); a
    message with no text gives the type alone either way.
    """
    text = _ANSI.sub("", str(exc)).strip()
    line = clip(text.splitlines()[0].strip(), limit) if text else ""
    if not line:
        return type(exc).__name__
    return f"{type(exc).__name__}: {line}" if typed else line
