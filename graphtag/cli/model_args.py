"""Options and loading shared by the commands that take a PyTorch MODEL (export, verify).

The argparse helpers import nothing heavy; ``load_from_args`` and ``inputs_from_args``
import torch (through graphtag.exporter) when they run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

MODEL_HELP = (
    "MODEL is a local directory (config.json + weights), a Hugging Face hub id (needs the "
    "network), or package.module:factory / file.py:factory returning an nn.Module or "
    "(module, example_inputs)."
)


def add_loading_options(parser: argparse.ArgumentParser) -> None:
    """How to load MODEL and what to feed it."""
    parser.add_argument(
        "--random-init",
        action="store_true",
        help="build the architecture from its config alone (no weights read)",
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow a model directory's own Python code to run (off by default)",
    )
    parser.add_argument(
        "--input-specs",
        metavar="FILE.json",
        help='inputs as {"name": {"shape": [...], "dtype": "int64"}}',
    )


def add_export_options(parser: argparse.ArgumentParser, exporter_help: str) -> None:
    """The export route and torch's verbosity (graphtag.exporter.exporters)."""
    parser.add_argument(
        "--exporter",
        choices=("auto", "dynamo", "torchscript"),
        default="auto",
        help=exporter_help,
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset version")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show torch's own progress messages, logs and warnings during the export",
    )


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    """Which modules get a tag (graphtag.exporter.module_tree.FilterConfig)."""
    parser.add_argument(
        "--keep-all-modules",
        action="store_true",
        help="give every module a tag, torch.nn ones included",
    )
    parser.add_argument(
        "--keep-torch-class",
        action="append",
        default=[],
        metavar="CLASS",
        help="also tag this torch.nn class (repeatable), e.g. Linear",
    )
    parser.add_argument(
        "--drop-torch-class",
        action="append",
        default=[],
        metavar="CLASS",
        help="stop tagging this torch.nn class (repeatable), e.g. Embedding",
    )


def load_from_args(args: argparse.Namespace) -> Any:
    """The LoadedModel named by ``args.model`` (graphtag.exporter.sources.load_model)."""
    from graphtag.exporter.sources import load_model

    return load_model(
        args.model, random_init=args.random_init, trust_remote_code=args.trust_remote_code
    )


def inputs_from_args(args: argparse.Namespace, loaded: Any) -> Any:
    """Example inputs: --input-specs, else the factory's own, else generated; checked."""
    from graphtag.exporter.sources import prepare_inputs

    return prepare_inputs(loaded, args.input_specs)


def filter_config_from_args(args: argparse.Namespace) -> Any:
    from graphtag.exporter.module_tree import FilterConfig

    return FilterConfig.create(
        add=args.keep_torch_class, remove=args.drop_torch_class, keep_all=args.keep_all_modules
    )


def source_files(spec: str, *, loaded: bool = False) -> tuple[list[Path], list[Path]]:
    """(files, folders) that loading MODEL ``spec`` reads, for the output guard.

    ``file.py:factory`` reads the file, a directory is read as a whole; a
    ``package.module:factory`` module's file is known once it is imported
    (``loaded=True``: after loading); a hub id reads nothing local.
    """
    import re
    import sys

    spec = spec.strip()
    path = Path(spec).expanduser()
    match = re.match(r"^(?P<target>.+):(?P<attr>[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)$", spec)
    if match and not path.exists():
        target = match["target"]
        if target.endswith(".py") or "/" in target or "\\" in target:
            return [Path(target).expanduser()], []
        module = sys.modules.get(target) if loaded else None
        origin = getattr(module, "__file__", None)
        return ([Path(origin)] if origin else []), []
    if path.is_dir():
        return [], [path]
    return [], []
