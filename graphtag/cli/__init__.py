"""The ``graphtag`` command. Subcommands import torch only when they export."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from graphtag.core.errors import GraphtagError

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


def build_parser() -> argparse.ArgumentParser:
    from graphtag.cli import passes_cmd, run_cmd

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
    for module in (passes_cmd, run_cmd, *_optional_commands()):
        module.add_parser(commands)
    return parser


def _optional_commands() -> list:
    """Commands whose modules exist in this version (the export edge is optional)."""
    import importlib

    found = []
    for name in (
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
        "profile_cmd",
    ):
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


def configure_logging(verbosity: int) -> None:
    """graphtag's loggers to stderr: warnings only, INFO with -v, DEBUG with -vv."""
    global _LOG_HANDLER
    logger = logging.getLogger("graphtag")
    if _LOG_HANDLER is not None:  # main() may run several times in one process
        logger.removeHandler(_LOG_HANDLER)
    _LOG_HANDLER = logging.StreamHandler(sys.stderr)
    _LOG_HANDLER.setFormatter(logging.Formatter("graphtag: %(levelname)s: %(name)s: %(message)s"))
    logger.addHandler(_LOG_HANDLER)
    logger.setLevel([logging.WARNING, logging.INFO, logging.DEBUG][min(verbosity, 2)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbosity)
    try:
        return int(args.func(args) or 0)
    except GraphtagError as exc:
        if args.debug:
            raise
        print(f"graphtag: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as other command-line tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("graphtag: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure still gets one line, not a traceback
        if args.debug or os.environ.get("GRAPHTAG_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"graphtag: internal error: {type(exc).__name__}: {first} (rerun with --debug)",
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())
