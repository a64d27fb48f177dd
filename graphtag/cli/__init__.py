"""The ``graphtag`` command.

Each command is a module ``graphtag/cli/<name>_cmd.py`` listed in :data:`COMMANDS`, with
``add_parser(commands)``; it imports nothing heavy at module level (argparse and the
light ``graphtag.core.errors``/``outputs`` only): onnx, onnx_ir, torch and the rest are
imported inside the function that runs the command, so parsing arguments and ``--help``
are instant. Exit status: 0 ok, 1 a check failed (validate, verify, compare, zoo
check, an export no route can make), 2 bad input or usage, 3 an internal error (a bug
in graphtag; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from graphtag.core.errors import GraphtagError, first_line

DESCRIPTION = """\
graphtag exports PyTorch models to ONNX with every node tagged by the nn.Module it
came from (node metadata "pkg.graphtag.module"), and rewrites ONNX graphs with
composable passes.
"""

EPILOG = """\
examples:
  graphtag passes list
  graphtag run model.onnx -p "toposort" -o sorted.onnx --time-passes
  graphtag -v run model.onnx -p "tag-propagation,multi-consumer" -o out.onnx
Run 'graphtag COMMAND --help' for a command's options.
"""


# Command modules, in --help order (graphtag.cli.<name>); a module missing from this
# installation is skipped. A new command is one more name here.
COMMANDS = (
    "passes_cmd",
    "run_cmd",
    "export_cmd",
    "compare_cmd",
    "analyze_cmd",
    "validate_cmd",
    "extract_cmd",
    "verify_cmd",
    "dag_cmd",
    "report_cmd",
    "zoo_cmd",
    "retag_cmd",
    "nodes_cmd",
    "profile_cmd",
)

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of ``command`` alone when its module is known
    (building all of them costs ~20 ms, a noticeable share of a quick command)."""
    parser = argparse.ArgumentParser(
        prog="graphtag",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks for errors (for bug reports)"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        dest="verbosity",  # not "verbose": `graphtag export --verbose` has its own meaning
        help="log what graphtag does on stderr (-v: why passes skip things; -vv: debug); "
        "give it before the command",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for module in _command_modules(command):
        module.add_parser(commands)
    return parser


def _command_word(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names when a module of that name holds it, else None."""
    for word in argv:
        if word == "--" or not word.startswith("-"):
            return word if f"{word}_cmd" in COMMANDS else None
    return None


def _command_modules(command: str | None = None) -> list:
    """The command modules of :data:`COMMANDS` present in this installation (only
    ``command``'s when given)."""
    import importlib

    found = []
    for name in [f"{command}_cmd"] if command else COMMANDS:
        try:
            found.append(importlib.import_module(f"graphtag.cli.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"graphtag.cli.{name}":
                raise
    return found


def _version() -> str:
    from graphtag import __version__

    return f"graphtag {__version__}"


_LOG_HANDLER: logging.Handler | None = None


# Libraries whose log records reach the user: with graphtag's prefix, warnings and up.
_LIBRARY_LOGGERS = ("onnx_ir", "onnxscript", "onnx")


class _Formatter(logging.Formatter):
    """``graphtag: WARNING: onnx_ir.serde: ...``: one line per record (a library's
    multi-line warning keeps its first line; a traceback is reduced to its message)."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += f" ({record.exc_info[1]})"
        if record.levelno >= logging.WARNING:
            text = text.strip().split("\n", 1)[0]
        return f"graphtag: {record.levelname}: {record.name}: {text}"


def configure_logging(verbosity: int) -> None:
    """graphtag's loggers to stderr: warnings only, INFO with -v, DEBUG with -vv; the
    libraries' warnings and Python warnings (onnx_ir's among them) one line each, with
    the same prefix."""
    global _LOG_HANDLER
    names = ("graphtag", *_LIBRARY_LOGGERS)
    if _LOG_HANDLER is not None:  # main() may run several times in one process
        for name in names:
            logging.getLogger(name).removeHandler(_LOG_HANDLER)
    _LOG_HANDLER = logging.StreamHandler(sys.stderr)
    _LOG_HANDLER.setFormatter(_Formatter())
    for name in names:
        logger = logging.getLogger(name)
        logger.addHandler(_LOG_HANDLER)
        logger.propagate = False  # no second copy through a root handler
    logging.getLogger("graphtag").setLevel(
        [logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)]
    )
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.showwarning = _show_warning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    text = " ".join(str(message).split())
    print(f"graphtag: warning: {category.__name__}: {text}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_word(argv))
    args = parser.parse_args(argv)
    configure_logging(args.verbosity)
    from graphtag.cli.startup import defer_sympy

    defer_sympy()
    try:
        return int(args.func(args) or 0)
    except GraphtagError as exc:
        if args.debug:
            raise
        print(f"graphtag: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as other command-line tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("graphtag: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the file system refused (permissions, a full disk): not a bug
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"graphtag: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError:
        if args.debug:
            raise
        print("graphtag: error: out of memory", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # an unexpected failure still gets one line, not a traceback
        if args.debug or os.environ.get("GRAPHTAG_DEBUG"):
            raise
        print(
            f"graphtag: internal error: {first_line(exc, typed=True)} (rerun with --debug)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
