"""``graphtag export MODEL OUTPUT.onnx``: export with every node tagged by its module."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from graphtag.cli.model_args import (
    MODEL_HELP,
    add_export_options,
    add_filter_options,
    add_loading_options,
    filter_config_from_args,
    inputs_from_args,
    load_from_args,
    source_files,
)
from graphtag.cli.tables import add_format_option, emit
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
    add_export_options(
        parser,
        "auto (default) tries dynamo, then dynamo with the model's traceable "
        "implementation switches (eager attention, batched experts), then TorchScript; "
        "dynamo or torchscript use that exporter alone",
    )
    parser.add_argument(
        "--no-optimize",
        action="store_true",
        help="pass optimize=False to the dynamo exporter (exact metadata)",
    )
    parser.add_argument(
        "--no-fallback-check",
        action="store_true",
        help="when auto ends on TorchScript, skip checking the written model's outputs "
        "against PyTorch's (two forward passes and an ONNX Runtime session)",
    )
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
        "function per distinct body (e.g. '*/BertLayer.*', or an exact tag, even one "
        "holding '[', ']' or '|'; see function-outlining)",
    )
    parser.add_argument(
        "--namespace",
        action="store_true",
        help="write each node's tag into its 'namespace' metadata, so Model Explorer groups "
        "nodes by graphtag's module tree (torch's value kept; see the namespace pass)",
    )
    parser.add_argument(
        "--dynamic",
        action="append",
        default=[],
        metavar="INPUT:AXIS[=NAME]",
        help="make an axis of an input dynamic (repeatable), e.g. --dynamic input_ids:0=batch "
        "--dynamic input_ids:1=sequence; torch's dynamic_shapes (dynamic_axes for TorchScript)",
    )
    parser.add_argument(
        "--strip-torch-metadata",
        action="store_true",
        help="drop torch's stack_trace and fx_node node metadata (~1 KB/node)",
    )
    add_format_option(parser)
    parser.set_defaults(func=run)


def _check_fallback(output: Path, module, inputs) -> None:
    """A TorchScript export auto fell back to can be silently wrong (torch mistranslates
    some in-place writes to views): its outputs are checked against PyTorch's."""
    from graphtag.exporter.tagged_export import check_fallback_outputs

    print("checking the TorchScript export's outputs against PyTorch", file=sys.stderr)
    line = check_fallback_outputs(output, module, inputs).warning()
    if line is not None:
        print(f"graphtag: warning: {line}", file=sys.stderr)


def _step(index: int, total: int, text: str) -> None:
    print(f"[{index}/{total}] {text}", file=sys.stderr, flush=True)


def _guard(args: argparse.Namespace, *, loaded: bool = False) -> None:
    """Refuse an output that is a file loading MODEL reads (its factory's source, a file
    of its directory), the input specs, or the other output."""
    from graphtag.cli.outputs import guard

    files, folders = source_files(args.model, loaded=loaded)
    output = Path(args.output)
    outputs = {"OUTPUT": output, "--sidecar": _sidecar_path(output) if args.sidecar else None}
    guard(outputs, [*files, args.input_specs], folders_read=folders)


def run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    _guard(args)  # before importing torch: a bad output path fails in an instant

    from graphtag.exporter.exporters import ExportFailed
    from graphtag.exporter.noise import quiet_torch
    from graphtag.exporter.tagged_export import export

    if args.dynamic:  # a typo fails before the model loads
        from graphtag.exporter.dynamic_axes import parse_dynamic

        parse_dynamic(args.dynamic, None)
    started = time.perf_counter()
    _step(1, 4, f"loading {args.model}")
    loaded = load_from_args(args)
    _guard(args, loaded=True)  # the factory's module is known now
    _step(2, 4, "preparing example inputs")
    inputs = inputs_from_args(args, loaded)
    options: dict = {}
    if args.no_optimize:
        options["optimize"] = False
    if args.opset is not None:
        options["opset_version"] = args.opset
    options["verbose"] = args.verbose  # torch's default (None) prints progress
    if args.dynamic:
        from graphtag.exporter.dynamic_axes import dynamo_shapes, named_inputs, parse_dynamic

        module, call = loaded.module, (inputs.args, inputs.kwargs)
        per_input = parse_dynamic(args.dynamic, named_inputs(module, *call))
        options["dynamic_shapes"] = dynamo_shapes(per_input, module, *call)
    _step(3, 4, f"exporting ({ROUTES[args.exporter]})")
    warnings: list[str] = []  # printed after the block: quiet_torch swallows stderr
    failure = None
    try:
        with quiet_torch(args.verbose, warn=warnings.append):
            result = export(
                loaded.module,
                inputs.args,
                inputs.kwargs,
                exporter=args.exporter,
                filter_config=filter_config_from_args(args),
                strip_torch_metadata=args.strip_torch_metadata,
                outline=args.outline,
                namespace=args.namespace,
                check_fallback=False,  # checked below, on the file as written
                **options,
            )
    except ExportFailed as exc:
        failure = exc
    finally:
        print_torch_warnings(warnings)
    if failure is not None:
        if getattr(args, "debug", False):
            raise failure
        # The model could not be exported (not a usage error): exit status 1.
        print(f"graphtag: error: {failure}{export_hint(failure, args.exporter)}", file=sys.stderr)
        return 1
    print_route(result)
    for record in result.report.records:
        for line in record.diagnostics:
            print(f"graphtag: warning: {record.name}: {line}", file=sys.stderr)
    _step(4, 4, f"writing {output}")
    if args.sidecar:
        _save_with_sidecar(result, output)
    else:
        result.save(output)
    if result.fell_back and not args.no_fallback_check:
        _check_fallback(output, loaded.module, inputs)
    elapsed = time.perf_counter() - started
    stats = result.stats
    rows = [
        ("model", loaded.description or args.model),
        ("exporter", result.exporter),
        ("route", result.route),
        ("nodes", stats.nodes),
        ("tagged", f"{stats.tagged} ({stats.tagged_share:.1%})"),
        ("modules", f"{stats.modules} kept, {stats.executed_modules} executed"),
        ("export time", f"{stats.export_seconds:.2f} s"),
        ("total time", f"{elapsed:.2f} s"),
        ("output", f"{output} ({output.stat().st_size / 1e6:.1f} MB)"),
    ]
    if args.outline:
        (outlining,) = [r for r in result.report.records if r.name == "function-outlining"]
        modules = outlining.stats.get("outlined", 0)
        rows.insert(-2, ("functions", f"{len(result.model.functions)} for {modules} modules"))
    if args.format == "table":
        emit(("", ""), rows, "table")
    else:
        emit(
            ("field", "value"),
            rows,
            args.format,
            json_data={k.replace(" ", "_"): v for k, v in rows},
        )
    return 0


# What --exporter tries, for the progress line.
ROUTES = {
    "auto": "auto: dynamo, dynamo with traceable switches, TorchScript",
    "dynamo": "dynamo exporter",
    "torchscript": "TorchScript exporter",
}


def export_hint(exc: GraphtagError, exporter: str) -> str:
    """The CLI's hint after an export failure (the library never names CLI flags)."""
    from graphtag.exporter.exporters import ExportFailed

    if not isinstance(exc, ExportFailed) or exporter == "auto":
        return ""
    return (
        "; --exporter auto also tries the model's traceable implementation switches "
        "and the TorchScript exporter"
    )


def print_torch_warnings(lines: list[str]) -> None:
    for line in lines:
        print(f"graphtag: warning: {line}", file=sys.stderr)
    if lines:
        print("graphtag: (rerun with --verbose for details)", file=sys.stderr)


def print_route(result) -> None:
    """One warning per route tried before the one that worked, then that route."""
    for attempt in result.attempts:
        what = "was skipped" if attempt.skipped else "failed"
        print(
            f"graphtag: warning: the {attempt.route} route {what} ({attempt.cause})",
            file=sys.stderr,
        )
    if result.attempts:
        print(f"graphtag: exported by the {result.route} route", file=sys.stderr)


def _sidecar_path(output: Path) -> Path:
    return output.with_name(output.name + ".graphtag.json")


def _save_with_sidecar(result, output: Path) -> None:
    """The model and its sidecar, both or neither: the sidecar is renamed into place
    only after the model was written."""
    from graphtag.core import metadata
    from graphtag.core.graphs import iter_all_nodes
    from graphtag.core.io import atomic_output

    data = {
        "version": result.model.metadata_props.get(metadata.VERSION),
        "hierarchy": result.hierarchy.to_json_dict(),
        "nodes": {
            node.name: node.metadata_props.get(metadata.MODULE)
            for node in iter_all_nodes(result.model)
        },
    }
    with atomic_output(_sidecar_path(output)) as tmp_name:
        Path(tmp_name).write_text(json.dumps(data, indent=1), encoding="utf-8")
        result.save(output)
