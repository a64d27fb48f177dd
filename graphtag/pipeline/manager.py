"""Run a pipeline of passes with instrumentation (timing, statistics, verify-each, dumps).

A run is one analysis scope (:mod:`graphtag.analysis.manager`): analyses the passes ask
for (hierarchy, boundaries, parameter usage) are computed once and reused, and dropped
after a pass that reports ``modified=True`` unless the pass lists them in its
``preserves`` class attribute.

After such a pass that does not preserve the boundaries (node tags and wiring: what a
value's consumers are), the values' ``pkg.graphtag.consumers`` records are made true
again: a pass of another package (CSE merging two nodes, a fusion) rewires values
without knowing graphtag's records, and what a pipeline writes must pass ``graphtag
validate``. Records are refreshed, never added (O(values) per such step).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import onnx_ir as ir

from graphtag.analysis import manager
from graphtag.analysis.manager import AnalysisCache, analysis_scope
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError, VerificationError
from graphtag.core.graphs import iter_values
from graphtag.core.pass_result import diagnostics_of, stats_of
from graphtag.pipeline.parse import PassInvocation, load_pipeline_toml, parse_pipeline
from graphtag.pipeline.registry import PassRegistry, registry
from graphtag.pipeline.scoped import Scoped, ScopedPassError

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class PassRecord:
    """What one pass did: wall time, modified flag, its statistics and diagnostics."""

    name: str
    seconds: float
    modified: bool
    stats: dict[str, int] = dataclasses.field(default_factory=dict)
    diagnostics: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class PipelineReport:
    records: list[PassRecord] = dataclasses.field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return sum(r.seconds for r in self.records)

    @property
    def modified(self) -> bool:
        return any(r.modified for r in self.records)


class Pipeline(ir.passes.PassBase):
    """An ordered list of onnx_ir passes, itself an onnx_ir pass.

    Any ``onnx_ir.passes.PassBase`` can be a step (graphtag's, onnx_ir's, onnxscript's,
    a plugin's), so a Pipeline nests inside ``ir.passes.PassManager`` and vice versa.
    After a run, :attr:`report` holds each pass's wall time, modified flag, statistics and
    diagnostics (graphtag's :class:`~graphtag.core.pass_result.PassResult`; other passes
    report none).
    """

    def __init__(
        self,
        steps: Sequence[ir.passes.PassBase | tuple[str, ir.passes.PassBase]],
        *,
        verify_each: bool = False,
        dump_after: Collection[str] = (),
        dump_dir: str | os.PathLike | None = None,
        on_pass_start: Callable[[int, str], None] | None = None,
    ) -> None:
        if not steps:
            raise GraphtagError("a pipeline needs at least one pass")
        self.steps: list[tuple[str, ir.passes.PassBase]] = [
            step if isinstance(step, tuple) else (type(step).__name__, step) for step in steps
        ]
        names = {name for name, _ in self.steps}
        names |= {name.partition("@")[0] for name in names}  # a scoped step answers to its pass
        missing = sorted(set(dump_after) - names)
        if missing:
            raise GraphtagError(
                f"--dump-after names passes not in the pipeline: {', '.join(missing)}"
            )
        self.verify_each = verify_each
        self.dump_after = set(dump_after)
        self.dump_dir = Path(dump_dir) if dump_dir is not None else Path(".")
        self.on_pass_start = on_pass_start
        self.report = PipelineReport()

    @classmethod
    def from_invocations(
        cls, invocations: Sequence[PassInvocation], reg: PassRegistry | None = None, **kwargs
    ) -> Pipeline:
        reg = reg or registry()
        steps: list[tuple[str, ir.passes.PassBase]] = []
        for inv in invocations:
            pass_ = reg.get(inv.name).create(inv.options)
            if inv.scope is not None:  # PASS@PATTERN: that pass on those modules only
                steps.append((f"{inv.name}@{inv.scope}", Scoped(pass_, inv.scope, name=inv.name)))
            else:
                steps.append((inv.name, pass_))
        return cls(steps, **kwargs)

    @classmethod
    def from_text(cls, text: str, reg: PassRegistry | None = None, **kwargs) -> Pipeline:
        """Build from ``name{opt=value},name2``; options are checked against declarations."""
        return cls.from_invocations(parse_pipeline(text), reg, **kwargs)

    @classmethod
    def from_toml(cls, path: str | os.PathLike, reg: PassRegistry | None = None, **kwargs):
        return cls.from_invocations(load_pipeline_toml(path), reg, **kwargs)

    @property
    def in_place(self) -> bool:
        return all(p.in_place for _, p in self.steps)

    @property
    def changes_input(self) -> bool:
        first = self.steps[0][1]
        return first.in_place or first.changes_input

    def dump_path(self, index: int, name: str) -> Path:
        """Where ``dump_after`` saves the model after step ``index`` (named ``name``)."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name)  # a scope pattern has '/', '*'
        return self.dump_dir / f"after-{index:02d}-{stem}.onnx"

    def dump_paths(self) -> list[Path]:
        """Every file ``dump_after`` will write."""
        return [self.dump_path(i, n) for i, (n, _) in enumerate(self.steps) if n in self.dump_after]

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.report = PipelineReport()
        if self.verify_each:
            _check_input(model)
        with analysis_scope(model) as analyses:
            for index, (name, pass_) in enumerate(self.steps):
                model = self._run_step(index, name, pass_, model, analyses)
        return ir.passes.PassResult(model, self.report.modified)

    def _run_step(
        self,
        index: int,
        name: str,
        pass_: ir.passes.PassBase,
        model: ir.Model,
        analyses: AnalysisCache,
    ) -> ir.Model:
        if self.on_pass_start is not None:
            self.on_pass_start(index, name)
        start = time.perf_counter()
        try:
            result = pass_(model)
        except ScopedPassError:
            raise  # names the pass and the module already
        except GraphtagError as exc:
            raise GraphtagError(f"pass '{name}': {exc}") from exc
        except ir.passes.InvariantError as exc:
            cause = exc.__cause__ or exc
            raise GraphtagError(f"pass '{name}': {exc} ({cause})") from exc
        stats = stats_of(result)
        preserves = getattr(pass_, "preserves", ())
        if result.modified and manager.BOUNDARIES not in preserves:
            refreshed = metadata.refresh_consumers(iter_values(result.model))
            if refreshed:
                logger.info("pass %s: %d consumer record(s) made true again", name, refreshed)
                stats["consumers_refreshed"] = refreshed
        record = PassRecord(
            name,
            time.perf_counter() - start,
            result.modified,
            stats,
            diagnostics_of(result),
        )
        self.report.records.append(record)
        if result.model is not analyses.model:
            analyses.rebind(result.model)
        elif result.modified:
            analyses.invalidate(preserves)
        logger.info(
            "pass %s: %.1f ms, %s%s",
            name,
            record.seconds * 1000,
            "modified" if record.modified else "unchanged",
            "".join(f", {k}={v}" for k, v in record.stats.items()),
        )
        if self.verify_each:
            from graphtag.checks.invariants import model_problems

            problems = model_problems(result.model)
            if problems:
                raise VerificationError(name, "; ".join(problems))
        if name in self.dump_after or name.partition("@")[0] in self.dump_after:
            from graphtag.core.io import save

            save(result.model, self.dump_path(index, name))
        return result.model


def _check_input(model: ir.Model) -> None:
    """verify-each blames a pass only for what it broke: an input already invalid is
    reported as such, before any pass runs."""
    from graphtag.checks.invariants import model_problems

    problems = model_problems(model)
    if problems:
        raise GraphtagError(
            f"the input model is invalid before any pass ran: {'; '.join(problems)} "
            "(verify-each checks what each pass leaves; fix the input, or run without it)"
        )
