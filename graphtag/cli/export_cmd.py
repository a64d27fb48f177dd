"""``graphtag export MODEL OUTPUT.onnx``: export with every node tagged by its module."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from graphtag.cli.model_args import (
    MODEL_HELP,
    add_filter_options,
    add_loading_options,
    filter_config_from_args,
    inputs_from_args,
    load_from_args,
)
from graphtag.cli.tables import render_table
from graphtag.core.errors import GraphtagError


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export",
        help="export a PyTorch model to ONNX with every node tagged by its module",
        description=(
            "Export MODEL with torch.onnx.export and write OUTPUT.onnx where every node carries "
            "metadata 'pkg.graphtag.module' (its nn.Module path) and the model carries the "
            "module hierarchy. " + MODEL_HELP
        ),
        epilog=(
            "example (offline, embedded tiny BERT):\n"
            "  graphtag export graphtag.exporter.examples:tiny_bert bert-tiny.onnx"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL")
    parser.add_argument("output", metavar="OUTPUT.onnx")
    parser.add_argument(
        "--exporter",
        choices=("dynamo", "torchscript", "auto"),
        default="dynamo",
        help="torch exporter; auto tries dynamo then TorchScript (default dynamo)",
    )
    parser.add_argument(
        "--no-optimize",
        action="store_true",
        help="pass optimize=False to the dynamo exporter (exact metadata)",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset version")
    add_loading_options(parser)
    add_filter_options(parser)
    parser.add_argument(
        "--sidecar",
        action="store_true",
        help="also write OUTPUT.graphtag.json with the hierarchy and node tags",
    )
    parser.add_argument(
        "--outline",
        metavar="PATTERN",
        help="turn the modules whose tags match PATTERN into ONNX local functions, one "
        "function per distinct body (e.g. '*/BertLayer.*'; see function-outlining)",
    )
    parser.add_argument(
        "--namespace",
        action="store_true",
        help="write each node's tag into its 'namespace' metadata, so Model Explorer groups "
        "nodes by graphtag's module tree (torch's value kept; see the namespace pass)",
    )
    parser.add_argument(
        "--strip-torch-metadata",
        action="store_true",
        help="drop torch's stack_trace and fx_node node metadata (~1 KB/node)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show torch's own progress messages, logs and warnings during the export",
    )
    parser.set_defaults(func=run)


def _step(index: int, total: int, text: str) -> None:
    print(f"[{index}/{total}] {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    _check_output(output)  # before importing torch: a bad output path fails in an instant

    from graphtag.exporter.tagged_export import _root_cause, export

    started = time.perf_counter()
    _step(1, 4, f"loading {args.model}")
    loaded = load_from_args(args)
    _step(2, 4, "preparing example inputs")
    inputs = inputs_from_args(args, loaded)
    config = filter_config_from_args(args)
    options: dict = {}
    if args.no_optimize:
        options["optimize"] = False
    if args.opset is not None:
        options["opset_version"] = args.opset
    options["verbose"] = args.verbose  # torch's default (None) prints progress
    common = {"filter_config": config, "strip_torch_metadata": args.strip_torch_metadata}
    exporter = "dynamo" if args.exporter in ("dynamo", "auto") else "torchscript"
    _step(3, 4, f"exporting with the {exporter} exporter")
    stderr = sys.stderr  # torch's own noise is swallowed inside _torch_noise
    with _torch_noise(args.verbose):
        try:
            result = export(
                loaded.module,
                inputs.args,
                inputs.kwargs,
                dynamo=exporter == "dynamo",
                **common,
                **options,
            )
        except GraphtagError as exc:
            if args.exporter != "auto":
                raise
            reason = _root_cause(exc.__cause__) if exc.__cause__ is not None else str(exc)
            print(
                f"graphtag: warning: the dynamo exporter failed ({reason}); "
                "falling back to the TorchScript exporter",
                file=stderr,
            )
            options.pop("optimize", None)
            result = export(
                loaded.module, inputs.args, inputs.kwargs, dynamo=False, **common, **options
            )
    if args.outline:
        from graphtag.passes.function_outlining import outline

        outlined = outline(result.model, pattern=args.outline)
        for tag, reason in outlined.skipped:
            print(f"graphtag: warning: not outlined {tag}: {reason}", file=sys.stderr)
    if args.namespace:
        from graphtag.passes.namespace import NamespacePass

        NamespacePass()(result.model)
    _step(4, 4, f"writing {output}")
    result.save(output)
    if args.sidecar:
        _write_sidecar(result, output)
    elapsed = time.perf_counter() - started
    stats = result.stats
    rows = [
        ("model", loaded.description or args.model),
        ("exporter", result.exporter),
        ("nodes", stats.nodes),
        ("tagged", f"{stats.tagged} ({stats.tagged_share:.1%})"),
        ("modules", f"{stats.modules} kept, {stats.executed_modules} executed"),
        ("export time", f"{stats.export_seconds:.2f} s"),
        ("total time", f"{elapsed:.2f} s"),
        ("output", f"{output} ({output.stat().st_size / 1e6:.1f} MB)"),
    ]
    if args.outline:
        rows.insert(
            -2, ("functions", f"{len(result.model.functions)} for {len(outlined.outlined)} modules")
        )
    print(render_table(("", ""), rows))
    return 0


# Loggers that print torch's export progress and failure dumps (pages of FX graph code).
_TORCH_LOGGERS = (
    "torch.onnx",
    "torch.export",
    "torch._export",
    "torch._dynamo",
    "torch.fx.experimental.symbolic_shapes",
)


@contextlib.contextmanager
def _torch_noise(verbose: bool) -> Iterator[None]:
    """Unless verbose: quiet torch's export progress, logs, dumps and warnings.

    torch's loggers go to ERROR; what torch prints to sys.stderr itself (torch.export
    prints the partial FX graph of a failed capture) is dropped: graphtag's one-line error
    names the cause. Deprecation notices and torch's remarks on its own internals are
    dropped; other warnings (TracerWarning: the TorchScript trace may not generalise) get
    one line each.
    """
    if verbose or os.environ.get("TORCH_LOGS"):
        yield
        return
    stderr = sys.stderr
    loggers = [logging.getLogger(name) for name in _TORCH_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with contextlib.redirect_stderr(io.StringIO()):
                    yield
            finally:
                _summarize_warnings(caught, stderr)
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _summarize_warnings(caught: list[warnings.WarningMessage], stderr) -> None:
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
    for (category, first), count in counts.items():
        times = f" ({count} times)" if count > 1 else ""
        print(f"graphtag: warning: torch {category}: {first}{times}", file=stderr)
    if counts:
        print("graphtag: (rerun with --verbose for details)", file=stderr)


def _check_output(output: Path) -> None:
    """Fail before the (slow) export when the output cannot be written."""
    from graphtag.core.io import check_writable

    check_writable(output)


def _write_sidecar(result, output: Path) -> Path:
    from graphtag.core import metadata

    sidecar = output.with_name(output.name + ".graphtag.json")
    data = {
        "version": result.model.metadata_props.get(metadata.VERSION),
        "hierarchy": result.hierarchy.to_json_dict(),
        "nodes": {
            node.name: node.metadata_props.get(metadata.MODULE)
            for node in metadata.iter_all_nodes(result.model)
        },
    }
    from graphtag.core.io import write_text_atomic

    write_text_atomic(sidecar, json.dumps(data, indent=1))
    return sidecar
