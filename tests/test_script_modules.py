"""TorchScript modules (``torch.jit.script`` / ``torch.jit.trace``) as the model.

Their runtime class is ``RecursiveScriptModule`` for every module; the tags must read
as the eager model's (the class each was compiled from), and the commands that watch
modules through forward hooks, which TorchScript modules refuse, say so in one line.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from cli_helpers import assert_clean_failure, run_cli
from torch import nn

import graphtag
from graphtag.core.errors import GraphtagError
from graphtag.exporter.module_tree import FilterConfig, build_hierarchy
from graphtag.exporter.verify import verify_modules


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.norm = nn.LayerNorm(6)

    def forward(self, x):
        return self.norm(torch.relu(self.fc(x)))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        for block in self.blocks:
            x = x + block(x)
        return self.head(x)


def _eager() -> nn.Module:
    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _compiled(how: str, model: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how == "script":
            return torch.jit.script(model)
        return torch.jit.trace(model, torch.randn(3, 6))


def _shape(hierarchy) -> dict[str, tuple]:
    return {
        tag: (info.class_name, info.parent, sorted(info.children.items()), info.parameters)
        for tag, info in hierarchy.modules.items()
    }


@pytest.mark.parametrize("how", ["script", "trace"])
@pytest.mark.parametrize("keep_all", [False, True])
def test_a_torchscript_module_has_the_eager_models_hierarchy(how, keep_all):
    eager = _eager()
    config = FilterConfig(keep_all=keep_all)
    compiled = build_hierarchy(_compiled(how, eager), config)
    assert _shape(compiled) == _shape(build_hierarchy(eager, config))
    assert not any("ScriptModule" in tag for tag in compiled.modules)
    if not keep_all:  # torch.nn's Linear and ModuleList are filtered as in the eager model
        assert set(compiled.modules) == {
            "/Net",
            "/Net/Block.0",
            "/Net/Block.1",
            "/Net/Block.0/LayerNorm",
            "/Net/Block.1/LayerNorm",
        }


@pytest.mark.parametrize("how", ["script", "trace"])
def test_a_torchscript_model_exports_with_the_eager_tags(tmp_path: Path, how):
    eager = _eager()
    x = torch.randn(3, 6)
    path = tmp_path / f"{how}.onnx"
    result = graphtag.export(_compiled(how, eager), (x,), f=path, verbose=False)
    assert result.route == "torchscript"  # dynamo refuses a ScriptModule
    onnx.checker.check_model(str(path), full_check=True)
    assert graphtag.validate(graphtag.load(path), path=path).passed
    tags = {
        n.name: p.value
        for n in onnx.load(str(path)).graph.node
        for p in n.metadata_props
        if p.key == "pkg.graphtag.module"
    }
    assert set(tags.values()) <= set(build_hierarchy(eager).modules)
    # Where torch's node name keeps the module's scope, the tag is that module's. A
    # traced model's names may give bare attribute names (/0/fc/Gemm for blocks.0.fc);
    # a scripted one loses inner scopes of a method compiled once and called twice.
    for name, tag in tags.items():
        if name.endswith("norm/LayerNormalization"):
            assert tag.endswith("/LayerNorm"), (name, tag)
        if "/0/" in name or "blocks.0" in name:
            assert tag.startswith("/Net/Block.0"), (name, tag)
        if "/1/" in name or "blocks.1" in name:
            assert tag.startswith("/Net/Block.1"), (name, tag)
    assert {"/Net/Block.0", "/Net/Block.1", "/Net/Block.0/LayerNorm"} <= set(tags.values())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, eager(x).numpy(), rtol=1e-5, atol=1e-6)


def test_bare_attribute_scopes_resolve_below_the_current_module():
    from graphtag.analysis.attribution import TorchScriptScopeResolver

    resolver = TorchScriptScopeResolver(build_hierarchy(_eager()))
    assert resolver.tag("/0/fc/Gemm") == "/Net/Block.0"
    assert resolver.tag("/1/norm/LayerNormalization") == "/Net/Block.1/LayerNorm"
    assert resolver.tag("/blocks.1/norm/LayerNormalization") == "/Net/Block.1/LayerNorm"
    assert resolver.tag("/7/Relu") == "/Net"  # no such attribute: the root


def test_verify_refuses_a_torchscript_module_in_one_line(tmp_path: Path):
    with pytest.raises(GraphtagError, match="forward hooks.*give the eager module"):
        verify_modules(_compiled("script", _eager()), (torch.randn(3, 6),))
    source = tmp_path / "scripted_model.py"
    source.write_text(
        "import torch\n"
        "def make():\n"
        "    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)).eval()\n"
        "    return torch.jit.script(m), (torch.randn(2, 4),)\n"
    )
    for command in (["verify"], ["profile", "--torch", "--runs", "1", "--warmup", "0"]):
        proc = run_cli(*command, f"{source}:make", cwd=tmp_path)
        assert_clean_failure(proc, "TorchScript modules", "forward hooks")
        assert proc.returncode == 2
