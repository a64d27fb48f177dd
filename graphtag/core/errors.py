"""User-facing errors: each carries one line that names the problem."""

from __future__ import annotations


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
