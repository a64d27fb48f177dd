"""The export's own passes, each alone through ``graphtag run`` on files on disk.

``scope-tagging``, ``torch-optimizer`` and ``strip-torch-metadata`` are ordinary passes:
a raw export (the exporter's model with the hierarchy attached, as the export edge
leaves it) goes through them one at a time, and the result equals what
``graphtag.export`` makes in one go. Each runs twice: modified, then not modified.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from cli_helpers import assert_clean_failure, run_cli
from zoo import ZOO

import graphtag
from graphtag.checks.compare import compare_topology
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes
from graphtag.core.hierarchy import Hierarchy
from graphtag.exporter.exporters import DynamoExporter, TorchScriptExporter
from graphtag.exporter.module_tree import build_hierarchy
from graphtag.exporter.tagged_export import write_model_metadata
from graphtag.passes.torch_optimizer import TorchOptimizerPass
from graphtag.pipeline import Pipeline

WORK = Path(tempfile.mkdtemp(prefix="graphtag-export-passes-"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)
STRIPPED = (metadata.TORCH_STACK_TRACE, metadata.TORCH_FX_NODE)


@functools.cache
def raw(exporter: str) -> Path:
    """The siblings model exported raw (optimize=False), hierarchy attached, untagged."""
    module, inputs = ZOO["siblings"].build()
    chosen = DynamoExporter() if exporter == "dynamo" else TorchScriptExporter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = chosen.export(module, inputs.args, optimize=False, verbose=False)
    write_model_metadata(model, build_hierarchy(module))
    path = WORK / f"raw-{exporter}.onnx"
    graphtag.save(model, path)
    return path


@functools.cache
def reference(exporter: str, optimize: bool) -> graphtag.exporter.tagged_export.ExportResult:
    module, inputs = ZOO["siblings"].build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return graphtag.export(
            module, inputs.args, exporter=exporter, optimize=optimize, pipeline=None, verbose=False
        )


def run_pass(source: Path, pipeline: str, name: str) -> tuple[Path, bool]:
    """``graphtag run SOURCE -p PIPELINE --time-passes``: the output and its modified flag."""
    out = WORK / name
    proc = run_cli("run", source, "-p", pipeline, "-o", out, "--time-passes")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    (row,) = [r for r in rows if r and r[0] == pipeline.split("{")[0]]
    onnx.checker.check_model(str(out), full_check=True)
    return out, {"yes": True, "no": False}[row[2]]  # columns: pass, ms, modified, stats


def _tags(model) -> list[str | None]:
    return [metadata.node_tag(n) for n in iter_all_nodes(model)]


def _outputs(path: Path) -> list[np.ndarray]:
    _, inputs = ZOO["siblings"].build()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (spec,) = session.get_inputs()
    return session.run(None, {spec.name: inputs.args[0].numpy()})


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_scope_tagging_alone(exporter):
    source = raw(exporter)
    before = graphtag.load(source)
    assert not any(_tags(before))
    tagged, modified = run_pass(source, "scope-tagging", f"tagged-{exporter}.onnx")
    assert modified
    model = graphtag.load(tagged)
    expected = reference(exporter, optimize=False).model
    assert _tags(model) == _tags(expected) and all(_tags(model))
    # Executed modules are marked in the stored hierarchy.
    hierarchy = Hierarchy.from_model(model)
    assert [i.executed for i in hierarchy] == [
        i.executed for i in reference(exporter, False).hierarchy
    ]
    assert all(i.executed for i in hierarchy)
    # Metadata survives: torch's node metadata and every model key.
    for old, new in zip(iter_all_nodes(before), iter_all_nodes(model)):
        assert {k: v for k, v in new.metadata_props.items() if k != metadata.MODULE} == dict(
            old.metadata_props
        )
    assert set(before.metadata_props) <= set(model.metadata_props)
    assert model.metadata_props[metadata.EXPORT_ROUTE] == exporter
    np.testing.assert_array_equal(_outputs(tagged)[0], _outputs(source)[0])
    # A second run changes nothing.
    _, again = run_pass(tagged, "scope-tagging", f"tagged-twice-{exporter}.onnx")
    assert not again


def test_scope_tagging_needs_the_hierarchy(mlp_path, tmp_path):
    assert metadata.HIERARCHY not in graphtag.load(mlp_path).metadata_props
    proc = run_cli("run", mlp_path, "-p", "scope-tagging", "-o", tmp_path / "o.onnx")
    assert_clean_failure(proc, "scope-tagging", "module hierarchy")
    assert not (tmp_path / "o.onnx").exists()


def test_torch_optimizer_alone():
    tagged, _ = run_pass(raw("dynamo"), "scope-tagging", "opt-input.onnx")
    optimized, modified = run_pass(tagged, "torch-optimizer", "optimized.onnx")
    assert modified
    model = graphtag.load(optimized)
    # graphtag.export, optimizer on; through a file like the pass's (floats as stored)
    path = reference("dynamo", optimize=True).save(WORK / "reference-optimized.onnx")
    expected = graphtag.load(path)
    diff = compare_topology(model, expected)
    assert diff.identical, diff.report()
    assert _tags(model) == _tags(expected)
    fused = [n for n in iter_all_nodes(model) if metadata.tag_source(n) == "fused"]
    assert all(metadata.contexts(n) for n in fused)
    # Metadata survives: the hierarchy and the route; torch's keys on surviving nodes.
    source = graphtag.load(tagged)
    for key in (metadata.HIERARCHY, metadata.EXPORT_ROUTE, metadata.VERSION):
        assert model.metadata_props[key] == source.metadata_props[key]
    assert all(metadata.TORCH_NAME_SCOPES in n.metadata_props for n in model.graph)
    for want, got in zip(_outputs(tagged), _outputs(optimized), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Optimizing an optimized graph finds nothing more to do.
    _, again = run_pass(optimized, "torch-optimizer", "optimized-twice.onnx")
    assert not again


def test_torch_optimizer_reports_what_it_did():
    model = graphtag.load(raw("dynamo"))
    pipeline = Pipeline([("torch-optimizer", TorchOptimizerPass())])
    pipeline(model)
    (record,) = pipeline.report.records
    assert record.modified
    assert record.stats["nodes_before"] > record.stats["nodes_after"] > 0
    assert record.stats["removed"] > 0
    assert not any(_tags(model))  # nothing was tagged: nothing to reconcile
    with pytest.raises(ValueError, match="framework_api"):
        TorchOptimizerPass(framework_api="../../etc")


def test_strip_torch_metadata_alone():
    tagged, _ = run_pass(raw("dynamo"), "scope-tagging", "strip-input.onnx")
    stripped, modified = run_pass(tagged, "strip-torch-metadata", "stripped.onnx")
    assert modified
    before, after = graphtag.load(tagged), graphtag.load(stripped)
    assert any(k in n.metadata_props for n in before.graph for k in STRIPPED)
    for old, new in zip(before.graph, after.graph, strict=True):
        expected = {k: v for k, v in old.metadata_props.items() if k not in STRIPPED}
        assert dict(new.metadata_props) == expected  # tags and name_scopes survive
    assert dict(after.metadata_props) == dict(before.metadata_props)
    _, again = run_pass(stripped, "strip-torch-metadata", "stripped-twice.onnx")
    assert not again


def test_export_report_lists_every_pass_with_stats():
    result = reference("dynamo", optimize=True)
    assert [r.name for r in result.report.records] == ["scope-tagging", "torch-optimizer"]
    tagging, optimizer = result.report.records
    assert tagging.stats["tagged"] == tagging.stats["nodes"] > 0
    assert optimizer.stats["nodes_after"] == result.stats.nodes
    module, inputs = ZOO["siblings"].build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = graphtag.export(
            module, inputs.args, strip_torch_metadata=True, outline="*/Block.left", verbose=False
        )
    assert [r.name for r in full.report.records] == [
        "scope-tagging",
        "torch-optimizer",
        "strip-torch-metadata",
        "tag-propagation",
        "multi-consumer",
        "residual-resolution",
        "function-outlining",
    ]
    assert full.report.records[-1].stats["outlined"] == 1
    assert torch.is_tensor(inputs.args[0])
