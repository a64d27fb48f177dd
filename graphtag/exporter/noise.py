"""Keep torch's export chatter out of the way and boil its errors down to one line.

torch's exporters print progress, log records, partial FX graphs of failed captures and
many warnings about their own internals. :func:`quiet_torch` silences them for the
duration of a block and hands the warnings worth reading to a callback, one line each;
:func:`root_cause` turns a wrapped torch exception into ``Type: first line``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator

from graphtag.core.errors import first_line

# Loggers that print torch's export progress and failure dumps (pages of FX graph code),
# and transformers' remarks when graphtag switches a model's implementations.
TORCH_LOGGERS = (
    "torch.onnx",
    "torch.export",
    "torch._export",
    "torch._dynamo",
    "torch.fx.experimental.symbolic_shapes",
    "transformers",
    # torch's ONNX optimizer (the torch-optimizer pass) logs through onnxscript and the
    # onnx_ir passes it runs: "Skipped deduplication of initializer ..." and the like.
    "onnxscript",
    "onnx_ir",
)


def root_cause(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of the innermost cause: torch wraps the real error in its own."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return first_line(exc, limit, typed=True)


@contextlib.contextmanager
def quiet_torch(verbose: bool = False, warn: Callable[[str], None] | None = None) -> Iterator[None]:
    """Unless ``verbose`` (or ``TORCH_LOGS`` is set): quiet torch's export noise.

    torch's loggers go to ERROR; what torch prints to ``sys.stderr`` or ``sys.stdout``
    itself (the partial graph of a failed capture or trace) is dropped. Deprecation notices and
    torch's remarks on its own internals are dropped; every other warning (a
    TracerWarning: the TorchScript trace may not generalise) reaches ``warn`` as one line,
    ``torch <Category>: <first sentence> (<n> times)``, after the block.
    """
    if verbose or os.environ.get("TORCH_LOGS"):
        yield
        return
    loggers = [logging.getLogger(name) for name in TORCH_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                sink = io.StringIO()
                with (
                    contextlib.redirect_stderr(sink),
                    contextlib.redirect_stdout(sink),
                    _fd_to_devnull(1),
                ):
                    yield
            finally:
                if warn is not None:
                    for line in summarize_warnings(caught):
                        warn(line)
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextlib.contextmanager
def _fd_to_devnull(fd: int) -> Iterator[None]:
    """Point file descriptor ``fd`` at /dev/null for the block.

    torch's TorchScript exporter logs the whole graph of a failed export from C++
    straight to the process's stdout (its ONNX log is always on: torch tests a function
    object for truth), past any Python-level redirection.
    """
    try:
        saved = os.dup(fd)
    except OSError:  # no such descriptor (a detached process): nothing to silence
        yield
        return
    _flush_real_stdout()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        _flush_real_stdout()
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def _flush_real_stdout() -> None:
    with contextlib.suppress(Exception):
        if sys.__stdout__ is not None:
            sys.__stdout__.flush()


def summarize_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """One line per distinct warning worth showing (see :func:`quiet_torch`)."""
    counts: dict[tuple[str, str], int] = {}
    for item in caught:
        if issubclass(item.category, (DeprecationWarning, FutureWarning)):
            continue
        # torch's remarks about its own internals (how it lowers an op): nothing to act on.
        internal = "/torch/" in item.filename.replace("\\", "/")
        if internal and item.category.__name__ != "TracerWarning":
            continue
        first = (str(item.message).strip().splitlines() or [""])[0]
        if len(first) > 160 and ". " in first:  # torch's warnings run on: first sentence
            first = first[: first.index(". ") + 1]
        key = (item.category.__name__, first[:200])
        counts[key] = counts.get(key, 0) + 1
    return [
        f"torch {category}: {first}" + (f" ({count} times)" if count > 1 else "")
        for (category, first), count in counts.items()
    ]
