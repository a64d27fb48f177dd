"""The auto exporter's ladder on real transformers models (tiny configs, random weights).

Rungs: (a) dynamo as given, (b) dynamo with the model's implementation switches set to
their traceable values (read from its config), (c) TorchScript. A Mixtral-style MoE
fails (a) on transformers' grouped_mm custom op and (c) on aten::histc, and exports by
(b) with batched experts; T5 fails (a) on a strided view inside sdpa attention and
exports by (b) with eager attention. Every exported model must pass the full ONNX
checker and match PyTorch (run with the same switches) in ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
import transformers
from cli_helpers import assert_clean_failure, run_main
from torch.utils import _pytree
from zoo import ZOO, _hf

import graphtag
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes
from graphtag.exporter.exporters import (
    DynamoExporter,
    ExportFailed,
    FallbackExporter,
    TorchScriptExporter,
)
from graphtag.exporter.switches import (
    current_switches,
    implementation_switches,
    traceable_values,
)
from graphtag.exporter.verify import verify_modules
from graphtag.tools.snapshot import snapshot

mixtral = _hf(
    transformers.MixtralConfig,
    transformers.MixtralModel,
    vocab_size=100,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    num_local_experts=4,
    num_experts_per_tok=2,
    max_position_embeddings=64,
)
t5 = ZOO["t5"].build

MOE_ROUTE = "dynamo-traceable(attn_implementation=eager,experts_implementation=batched_mm)"
T5_ROUTE = "dynamo-traceable(attn_implementation=eager)"


@dataclasses.dataclass
class Case:
    module: torch.nn.Module
    inputs: object
    result: graphtag.exporter.tagged_export.ExportResult
    before: dict  # the model's switches before the export


@functools.cache
def exported(name: str) -> Case:
    module, inputs = {"mixtral": mixtral, "t5": t5}[name]()
    before = current_switches(module)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = graphtag.export(module, inputs.args, inputs.kwargs, verbose=False)
    return Case(module, inputs, result, before)


def _torch_outputs(case: Case) -> list[np.ndarray]:
    with torch.no_grad(), implementation_switches(case.module, case.result.switches):
        out = case.module(*case.inputs.args, **case.inputs.kwargs)
    return [t.numpy() for t in _pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _ort_outputs(model: ir.Model, inputs) -> list[np.ndarray]:
    data = ir.serde.serialize_model(model).SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    feeds = {
        spec.name: inputs.kwargs[spec.name].numpy()
        for spec in session.get_inputs()  # dynamo names graph inputs after the keywords
    }
    return session.run(None, feeds)


@pytest.mark.parametrize(
    ("name", "route", "cause"),
    [
        ("mixtral", MOE_ROUTE, "transformers.grouped_mm_fallback"),
        ("t5", T5_ROUTE, "Cannot view a tensor"),
    ],
)
def test_auto_exports_by_traceable_switches(name, route, cause):
    case = exported(name)
    result = case.result
    assert result.route == route
    assert result.exporter == "dynamo"
    # Rung (a) failed, with its cause on one line; nothing else was tried before (b).
    (attempt,) = result.attempts
    assert attempt.route == "dynamo" and not attempt.skipped
    assert cause in attempt.cause and "\n" not in attempt.cause
    # The route is in the model metadata and in the snapshot.
    assert result.model.metadata_props[metadata.EXPORT_ROUTE] == route
    assert snapshot(result.model)["export_route"] == route
    # The user's model is as it was.
    assert current_switches(case.module) == case.before
    onnx.checker.check_model(ir.serde.serialize_model(result.model), full_check=True)
    nodes = list(iter_all_nodes(result.model))
    assert nodes and all(metadata.node_tag(n) for n in nodes)
    expected, actual = _torch_outputs(case), _ort_outputs(result.model, case.inputs)
    assert len(actual) == len(expected)
    for want, got in zip(expected, actual, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_switches_are_read_from_the_config():
    case = exported("mixtral")
    assert case.before == {"attn_implementation": "sdpa", "experts_implementation": "grouped_mm"}
    assert traceable_values(case.module) == {
        "attn_implementation": "eager",
        "experts_implementation": "batched_mm",
    }
    assert case.result.switches == {
        "attn_implementation": "eager",
        "experts_implementation": "batched_mm",
    }
    config = case.module.config
    with implementation_switches(case.module, {"experts_implementation": "batched_mm"}) as changed:
        assert changed == {"experts_implementation": "batched_mm"}
        assert config._experts_implementation == "batched_mm"
        assert config._attn_implementation == "sdpa"
    assert config._experts_implementation == "grouped_mm"


def test_switches_of_a_model_nested_in_a_plain_module():
    """Owners are found anywhere in the tree; unrelated ``config`` objects are untouched."""
    import types

    wrapper = torch.nn.Module()
    wrapper.config = types.SimpleNamespace(size=3)  # not a transformers config
    wrapper.inner, _ = t5()
    assert current_switches(wrapper) == {
        "attn_implementation": "sdpa",
        "experts_implementation": "eager",
    }
    with implementation_switches(wrapper, traceable_values(wrapper)) as changed:
        assert changed == {"attn_implementation": "eager"}  # T5 has no experts switch to set
        assert wrapper.inner.config._attn_implementation == "eager"
        assert wrapper.inner.encoder.config._attn_implementation == "eager"
    assert wrapper.inner.config._attn_implementation == "sdpa"
    assert wrapper.inner.encoder.config._attn_implementation == "sdpa"
    assert vars(wrapper.config) == {"size": 3}


def test_moe_fails_under_torchscript_too():
    """Why rung (b) matters: the MoE exports by neither exporter as given."""
    module, inputs = mixtral()
    with pytest.raises(ExportFailed, match=r"^the torchscript exporter failed \(.*histc"):
        graphtag.export(module, inputs.args, inputs.kwargs, exporter="torchscript", verbose=False)


@pytest.mark.parametrize("spelling", [{"exporter": "dynamo"}, {"dynamo": True}])
def test_strict_dynamo_fails_with_one_clear_line(spelling):
    module, inputs = t5()
    with pytest.raises(ExportFailed) as info:
        graphtag.export(module, inputs.args, inputs.kwargs, verbose=False, **spelling)
    text = str(info.value)
    assert text.startswith("the dynamo exporter failed (ValueError: Cannot view a tensor")
    assert "\n" not in text and "--" not in text  # library errors name no CLI flags
    assert [a.route for a in info.value.attempts] == ["dynamo"]
    assert current_switches(module)["attn_implementation"] == "sdpa"


def test_unknown_switch_value_skips_the_rung_with_a_note():
    module, inputs = t5()
    module.config._experts_implementation_internal = "no_such_kernel"  # e.g. from a config
    result = graphtag.export(module, inputs.args, inputs.kwargs, verbose=False)
    assert result.route == "torchscript"
    dynamo, traceable = result.attempts
    assert dynamo.route == "dynamo" and not dynamo.skipped
    assert traceable.route == "dynamo-traceable" and traceable.skipped
    assert traceable.cause == (
        "config experts_implementation='no_such_kernel' is not an implementation transformers knows"
    )
    assert module.config._experts_implementation == "no_such_kernel"  # left alone
    assert module.config._attn_implementation == "sdpa"
    assert result.model.metadata_props[metadata.EXPORT_ROUTE] == "torchscript"


def test_rungs_in_order_and_every_cause_when_all_fail():
    class Svd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x):
            return torch.linalg.svd(self.fc(x))[0]

    with pytest.raises(ExportFailed) as info:
        graphtag.export(Svd(), (torch.randn(4, 4),), verbose=False)
    lines = str(info.value).splitlines()
    assert lines[0] == "every export route failed:"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "dynamo",
        "dynamo-traceable",
        "torchscript",
    ]
    assert "linalg_svd" in lines[1] and "linalg_svd" in lines[3]
    assert (
        lines[2].strip()
        == "dynamo-traceable: skipped: the model exposes no implementation switches"
    )


def test_ladder_is_configurable_and_resolves_names():
    ladder = FallbackExporter([TorchScriptExporter()])
    module, inputs = ZOO["siblings"].build()
    result = graphtag.export(module, inputs.args, exporter=ladder, verbose=False)
    assert result.route == "torchscript" and result.attempts == []
    with pytest.raises(graphtag.GraphtagError, match="unknown exporter 'onnxscript'"):
        graphtag.export(module, inputs.args, exporter="onnxscript")
    with pytest.raises(graphtag.GraphtagError, match="contradicts"):
        graphtag.export(module, inputs.args, exporter="torchscript", dynamo=True)
    raw = DynamoExporter().export(module, inputs.args, verbose=False)
    assert raw.metadata_props[metadata.EXPORT_ROUTE] == "dynamo"
    assert not any(metadata.node_tag(n) for n in raw.graph)  # raw: untagged


def test_verify_runs_pytorch_with_the_exports_switches(monkeypatch):
    from graphtag.exporter import verify

    seen = []
    capture = verify.capture_calls

    def spy(module, inputs, names):
        seen.append(current_switches(module))
        return capture(module, inputs, names)

    monkeypatch.setattr(verify, "capture_calls", spy)
    module, inputs = t5()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checks = verify_modules(module, inputs)
    assert seen == [{"attn_implementation": "eager", "experts_implementation": "eager"}]
    assert current_switches(module)["attn_implementation"] == "sdpa"  # restored
    assert not [c for c in checks if c.status == "ERROR"]
    attention = [c for c in checks if c.tag.endswith("/T5Attention")]
    assert len(attention) == 6
    for check in checks:
        if check.status in ("OK", "MISMATCH"):
            assert check.matched >= 1, check
            # Eager attention also returns its weights, which nothing uses: the export
            # drops them, so they have nothing to match (verify's comparison reports
            # them); every output that exists in the graph matches.
            assert all(u.startswith("output[2] ") for u in check.unmatched), check


# ---------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def config_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ladder-cli")
    for name, build in (("t5", t5), ("mixtral", mixtral)):
        module, _ = build()
        module.config.architectures = [type(module).__name__]
        module.config.save_pretrained(root / name)
    return root


# In this process (run_main): torch is imported already; test_cli_export runs the command
# as a real process.
def test_cli_strict_dynamo_names_the_cause_and_the_fallback(
    config_dirs, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "t5.onnx"
    args = ("export", config_dirs / "t5", out, "--random-init", "--exporter", "dynamo")
    proc = run_main(monkeypatch, capsys, *args)
    assert_clean_failure(
        proc, "the dynamo exporter failed (ValueError: Cannot view a tensor", "--exporter auto"
    )
    assert not out.exists() and not list(tmp_path.iterdir())


def test_cli_prints_the_route(config_dirs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "moe.onnx"
    args = ("export", config_dirs / "mixtral", out, "--random-init")
    proc = run_main(monkeypatch, capsys, *args, columns=250)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert any(
        line.startswith("graphtag: warning: the dynamo route failed (")
        and "grouped_mm_fallback" in line
        for line in lines
    ), proc.stderr
    assert f"graphtag: exported by the {MOE_ROUTE} route" in lines
    assert any(line.split() == ["route", MOE_ROUTE] for line in proc.stdout.splitlines())
    model = onnx.load(out)
    props = {p.key: p.value for p in model.metadata_props}
    assert props[metadata.EXPORT_ROUTE] == MOE_ROUTE
    onnx.checker.check_model(model, full_check=True)
