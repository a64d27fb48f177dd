"""graphtag profile on real exports: the zoo at ORT_ENABLE_ALL, a deliberately slow module,
and the PyTorch side (--torch).

For every zoo export, read back against ONNX Runtime's own trace file (plain json):
every kernel event lands on a module (coverage 100%), the modules' self times add up
exactly to the median run's kernel time, and every module's total is its self time plus
its children's totals.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_profile import _cli, assert_consistent, raw_runs, top_level_us
from torch import nn
from zoo_exports import zoo_cases, zoo_export

from graphtag.core.errors import GraphtagError
from graphtag.core.hierarchy import is_ancestor_or_self
from graphtag.exporter.example_inputs import ExampleInputs
from graphtag.exporter.module_timing import profile_source, time_modules
from graphtag.exporter.module_tree import build_hierarchy
from graphtag.exporter.verify import graph_feeds
from graphtag.tools.profile import ModuleProfile, RunSettings, collect_ort

FAST = RunSettings(warmup=1, runs=3, threads=1)


@pytest.mark.parametrize(("name", "exporter"), zoo_cases(), ids=lambda v: v)
def test_zoo_every_kernel_is_attributed_and_the_tree_adds_up(name, exporter, tmp_path):
    case = zoo_export(name, exporter)
    feeds = graph_feeds(case.result.model, case.module, case.inputs)
    trace = tmp_path / "trace.json"
    measured = collect_ort(case.path, FAST, feeds=feeds, save_trace=trace)
    data = ModuleProfile(measured).to_json()
    assert data["onnxruntime"]["optimization"] == "all"
    coverage = data["coverage"]
    assert coverage["kernel_events"] > 0
    assert coverage["mapped_events"] == coverage["kernel_events"], data["notes"]
    assert coverage["time_by_match_ms"].get("unmatched", 0) == 0
    runs = raw_runs(trace)[FAST.warmup :]
    assert measured.series.busy_ns() == [1000 * top_level_us(run) for run in runs]
    assert_consistent(data)
    hierarchy = {info.tag for info in case.result.hierarchy}
    assert set(data["modules"]) <= hierarchy
    root = case.result.hierarchy.root
    assert data["modules"][root]["total_ms"] == data["kernel_ms"]
    assert data["modules"][root]["percent"] == 100.0


class Cheap(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x) * 0.5 + 1.0


class Slow(nn.Module):
    """Four chained 512x512 matrix products: far more work than anything else (about 1
    GFLOP a run, so PyTorch's per-call overhead in the root cannot outweigh it on a busy
    machine, as it could with 256x256)."""

    def __init__(self) -> None:
        super().__init__()
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(512, 512, generator=torch.Generator().manual_seed(i)) / 22.6)
            for i in range(4)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for weight in self.weights:
            x = x @ weight
        return x


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pre = Cheap()
        self.slow = Slow()
        self.post = Cheap()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.slow(self.pre(x)))


def test_the_slow_module_is_on_top_in_both_runtimes():
    inputs = ExampleInputs((torch.randn(512, 512, generator=torch.Generator().manual_seed(9)),))
    profile = profile_source(Net().eval(), inputs, FAST, with_torch=True)
    view = profile.view()
    by_ort = max(view.rows, key=lambda r: r.ort.self_ns)
    by_torch = max(view.rows, key=lambda r: r.torch.self_ns)
    assert by_ort.tag == by_torch.tag == "/Net/Slow"
    slow = by_ort
    assert slow.ort.self_ns > 0.5 * view.ort.run_busy_ns
    assert slow.torch.self_ns > 0.5 * view.torch.run_busy_ns
    # ONNX Runtime may fuse the last product with the next module's scaling (that kernel
    # then belongs to their common parent); the rest are Slow's own products.
    assert dict(slow.ops).keys() <= {"MatMul", "Gemm", "FusedMatMul"}
    assert slow.torch.calls == 1 and slow.ort.calls in (3, 4)
    assert_consistent(profile.to_json())


def test_torch_times_add_up_and_count_forward_calls():
    from zoo import SiblingsNet

    torch.manual_seed(0)
    model = SiblingsNet().eval()
    hierarchy = build_hierarchy(model)
    inputs = ExampleInputs((torch.randn(2, 5, 16),))
    series = time_modules(
        model, inputs, {i.tag: i.name for i in hierarchy}, warmup=1, runs=4, threads=1
    )
    assert series.runs == 4
    shared = next(t for t in hierarchy.modules if t.endswith("Block.shared"))
    for times, calls, wall in zip(series.self_ns, series.calls, series.wall_ns):
        assert set(times) == set(hierarchy.modules)  # every kept module ran
        assert calls[shared] == 2 and calls[hierarchy.root] == 1
        assert all(v >= 0 for v in times.values()) and 0 < sum(times.values()) <= wall
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_torch_failure_is_one_line_and_removes_the_hooks():
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Cheap()

        def forward(self, x):
            return self.inner(x) @ torch.ones(3, 3)

    model = Broken()
    names = {i.tag: i.name for i in build_hierarchy(model)}
    with pytest.raises(GraphtagError, match="the PyTorch model failed on the inputs"):
        time_modules(model, ExampleInputs((torch.ones(2, 2),)), names, warmup=0, runs=1)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_command_torch_side_by_side(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # tables fit 80 columns when not a terminal
    out = tmp_path / "p.json"
    source = "tests/zoo.py:siblings"
    args = ("--runs", 2, "--warmup", 1, "--threads", 1, "--torch")
    proc = _cli(capsys, "profile", source, *args, "-o", out)
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0:5]
    assert any(line.startswith("PyTorch eager: forward ") for line in header)
    assert "torch self" in proc.stdout and "ort/torch" in proc.stdout
    data = json.loads(out.read_text())
    assert data["torch"]["runs"] == 2 and data["torch"]["total_ms"] > 0
    shared = next(t for t in data["modules"] if t.endswith("Block.shared"))
    assert data["modules"][shared]["torch"]["calls"] == 2
    root = next(iter(data["modules"]))
    assert sum(m["torch"]["self_ms"] for m in data["modules"].values()) == pytest.approx(
        data["modules"][root]["torch"]["total_ms"], abs=1e-5
    )
    assert all(is_ancestor_or_self(root, t) for t in data["modules"])
    assert_consistent(data)
    plain = _cli(capsys, "profile", source, "--runs", 1, "--warmup", 0, "--format", "json")
    assert "torch" not in json.loads(plain.stdout)  # exported and profiled, not timed
