"""Everything graphtag writes passes its own ``validate`` and ``onnx.checker`` full_check.

Over the zoo (every exporter that works for each model): the export itself, the export
with ``--outline``, ``run`` with each built-in pass, outlining then inlining, ``extract``
of every module (``--all``) and of one module, and ``retag`` of ONNX Runtime's optimized
graph. The commands run in-process through ``graphtag.cli.main``, writing real files.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from zoo_exports import zoo_cases, zoo_export

import graphtag
from graphtag.checks.validation import validate
from graphtag.cli import main
from graphtag.passes import BUILTIN_PASSES

CASES = [pytest.param((n, e), id=f"{n}-{e}") for n, e in zoo_cases()]

# One pipeline per built-in pass (with the options it needs), plus round trips.
PIPELINES = {
    "toposort": "toposort",
    "scope-tagging": "scope-tagging{retag=true}",
    "torch-optimizer": "torch-optimizer",
    "strip-torch-metadata": "strip-torch-metadata",
    "tag-propagation": "tag-propagation",
    "multi-consumer": "multi-consumer",
    "residual-resolution": "residual-resolution",
    "boundary-detection": "boundary-detection{store=true}",
    "function-outlining": "function-outlining{all=true}",
    "function-inlining": "function-outlining{depth=2},function-inlining",
    "namespace": "namespace",
    "retag": "retag{reference=MODEL}",
}


def test_every_builtin_pass_is_covered():
    assert set(PIPELINES) == set(BUILTIN_PASSES)


def assert_valid(path: Path, *, checker: bool = True) -> None:
    """``checker=False``: the ONNX checker's verdict is not graphtag's to answer for."""
    if checker:
        onnx.checker.check_model(str(path), full_check=True)
    report = validate(graphtag.load(path), path=path)
    failed = {r.rule: r.detail for r in report.results if r.status == "FAIL"}
    if not checker:
        failed.pop("onnx-checker", None)
    assert not failed, f"{path.name}: {failed}"


def checker_error(path: Path) -> str | None:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        return str(exc).splitlines()[0]
    return None


@pytest.fixture(params=CASES)
def case(request):
    return zoo_export(*request.param)


def test_export(case):
    assert_valid(case.path)


@pytest.mark.parametrize("name", list(PIPELINES))
def test_run_each_builtin_pass(case, tmp_path, name):
    out = tmp_path / "out.onnx"
    pipeline = PIPELINES[name].replace("MODEL", str(case.path))
    if name == "scope-tagging" and case.exporter == "torchscript":
        pipeline = "scope-tagging{retag=true,source=node-names}"
    assert main(["run", str(case.path), "-p", pipeline, "-o", str(out)]) == 0
    assert_valid(out)


def test_extract_every_module_and_one(case, tmp_path):
    out = tmp_path / "modules"
    assert main(["extract", str(case.path), "--all", "-o", str(out)]) == 0
    files = sorted(p for p in out.iterdir() if p.suffix == ".onnx")
    assert files
    for path in files:
        assert_valid(path)
    index = __import__("json").loads((out / "index.json").read_text())
    deepest = max(index, key=lambda tag: (tag.count("/"), tag))
    one = tmp_path / "one.onnx"
    assert main(["extract", str(case.path), "--module", deepest, "-o", str(one)]) == 0
    assert_valid(one)


def test_retag_of_onnxruntime_optimized_graph(case, tmp_path):
    reference = graphtag.save(graphtag.load(case.path), tmp_path / "ref.onnx")  # one file
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "ort.onnx")
    ort.InferenceSession(str(reference), options, providers=["CPUExecutionProvider"])
    out = tmp_path / "retagged.onnx"
    code = main(["retag", str(reference), str(tmp_path / "ort.onnx"), "-o", str(out), "--force"])
    assert code == 0
    # ONNX Runtime may write ops of its own in the default domain (T5 over TorchScript:
    # SimplifiedLayerNormalization) that the checker refuses: retag must add no error of
    # its own, and every graphtag rule must pass.
    inherited = checker_error(tmp_path / "ort.onnx")
    assert checker_error(out) == inherited
    assert_valid(out, checker=inherited is None)


@pytest.mark.parametrize("pattern", ["*/BertLayer.*", None])
def test_export_command_with_and_without_outline(tmp_path, pattern):
    out = tmp_path / "bert.onnx"
    argv = ["export", "graphtag.exporter.examples:tiny_bert", str(out)]
    if pattern:
        argv += ["--outline", pattern]
    assert main(argv) == 0
    assert_valid(out)
    if pattern:
        assert len(graphtag.load(out).functions) == 1
