"""What a graphtag pass returns: onnx_ir's PassResult plus statistics and diagnostics.

Passes keep no state between runs: everything a run found out travels in its result,
and the pipeline (graphtag.pipeline) collects it into its report. Any onnx_ir pass can
still be a pipeline step; a plain ``onnx_ir.passes.PassResult`` simply has no figures.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir


@dataclasses.dataclass
class PassResult(ir.passes.PassResult):
    """``model``, ``modified``, plus ``stats`` (name -> count) and ``diagnostics``.

    ``diagnostics`` are one-line notes for the user (e.g. "not outlined /M/A: not
    contiguous"); the same notes are logged by the pass when it makes them.
    """

    stats: dict[str, int] = dataclasses.field(default_factory=dict)
    diagnostics: list[str] = dataclasses.field(default_factory=list)


def stats_of(result: ir.passes.PassResult) -> dict[str, int]:
    """The statistics of any pass result (empty for passes that report none)."""
    return dict(getattr(result, "stats", None) or {})


def diagnostics_of(result: ir.passes.PassResult) -> list[str]:
    """The diagnostics of any pass result (empty for passes that report none)."""
    return list(getattr(result, "diagnostics", None) or [])
