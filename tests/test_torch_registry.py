"""torch's ONNX function table built once per process (graphtag.exporter.torch_registry)."""

from __future__ import annotations

import io

import pytest
import torch
from onnxscript import opset18 as op
from torch import nn
from torch.onnx._internal.exporter import _registration

import graphtag
from graphtag.exporter import torch_registry


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.fc(x)) * 2.0


def _net():
    torch.manual_seed(0)
    return _Net().eval(), (torch.randn(2, 4),)


def _torch_export(**options) -> bytes:
    model, args = _net()
    program = torch.onnx.export(model, args, dynamo=True, verbose=False, **options)
    buffer = io.BytesIO()
    program.save(buffer)
    return buffer.getvalue()


def _ops(data: bytes) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load_from_string(data).graph.node}


@pytest.fixture
def cache():
    """The cache installed for the test; left installed after, as graphtag leaves it."""
    assert torch_registry.install()
    yield torch_registry


def test_graphtag_export_installs_it(tmp_path):
    model, args = _net()
    graphtag.export(model, args, {}, tmp_path / "net.onnx", verbose=False)
    assert isinstance(_registration.ONNXRegistry.__dict__["from_torchlib"], classmethod)
    assert torch_registry._original is not None


def test_exports_are_the_same_bytes_with_and_without_it(cache):
    cached = _torch_export()
    cache.uninstall()
    try:
        assert _registration.ONNXRegistry.__dict__["from_torchlib"].__func__.__module__ == (
            _registration.__name__
        )  # torch's own method is back
        plain = _torch_export()
    finally:
        cache.install()
    assert cached == plain


def test_each_call_gets_its_own_table_and_torch_builds_it_once(cache):
    first = _registration.ONNXRegistry.from_torchlib()
    builds = cache.builds
    target = next(iter(first.functions))
    first.functions[target].append("added by the first caller")
    first.functions["graphtag::added"] = ["added by the first caller"]
    second = _registration.ONNXRegistry.from_torchlib(opset_version=first.opset_version)
    assert cache.builds == builds  # no second build: the same arguments, defaults filled in
    assert "added by the first caller" not in second.functions[target]
    assert "graphtag::added" not in second.functions
    assert second.functions.keys() == first.functions.keys() - {"graphtag::added"}
    assert second.opset_version == first.opset_version


def _named_but_not_loaded() -> str:
    """An operator onnxscript's torch library names that no loaded library defines
    (torchvision's, when it is not installed), outside the namespaces torch's own
    exports use."""
    from onnxscript.function_libs.torch_lib import registration

    loaded = {name.partition(".")[0] for name in torch._C._dispatch_get_all_op_names()}
    named = {name.partition(".")[0] for name, _ in registration.default_registry.items()}
    absent = sorted(
        name
        for name in named - loaded
        if name.partition("::")[0] not in {"aten", "prims", "_operator", "math"}
    )
    if not absent:
        pytest.skip("every operator onnxscript's torch library names is loaded")
    return absent[0]


def test_an_operator_the_table_names_loaded_later_rebuilds_it(cache):
    _registration.ONNXRegistry.from_torchlib()
    builds = cache.builds
    # torch registers operators of its own on its first export: no rebuild for those.
    elsewhere = torch.library.Library("graphtag_registry_test", "DEF")
    namespace, _, name = _named_but_not_loaded().partition("::")
    arrives = torch.library.Library(namespace, "FRAGMENT")
    try:
        elsewhere.define("twice(Tensor x) -> Tensor")
        _registration.ONNXRegistry.from_torchlib()
        assert cache.builds == builds
        # As when torchvision loads its operators after the first export.
        arrives.define(f"{name}(Tensor x) -> Tensor")
        _registration.ONNXRegistry.from_torchlib()
        assert cache.builds == builds + 1
        _registration.ONNXRegistry.from_torchlib()
        assert cache.builds == builds + 1
    finally:
        arrives._destroy()
        elsewhere._destroy()
    _registration.ONNXRegistry.from_torchlib()  # gone again: built once more
    assert cache.builds == builds + 2


def test_a_custom_translation_does_not_reach_the_next_export(cache):
    def relu_as_sigmoid(x):
        return op.Sigmoid(x)

    table = {torch.ops.aten.relu.default: relu_as_sigmoid}
    custom = _ops(_torch_export(custom_translation_table=table))
    assert "Sigmoid" in custom and "Relu" not in custom
    plain = _ops(_torch_export())
    assert "Relu" in plain and "Sigmoid" not in plain


def test_nothing_is_installed_where_torch_is_not_as_expected(monkeypatch):
    torch_registry.uninstall()
    try:
        monkeypatch.delattr(torch._C, "_dispatch_get_all_op_names")
        assert not torch_registry.install()
        assert isinstance(_registration.ONNXRegistry.__dict__["from_torchlib"], classmethod)
        assert torch_registry._original is None  # torch's own method left in place
    finally:
        monkeypatch.undo()
        assert torch_registry.install()
