"""``graphtag verify``: every extracted module reproduces PyTorch, and a broken one is caught.

The command-line runs start in the background when the module starts (each is mostly a
torch import and one export) and are checked by the tests that need them. Injected
faults (bench/sweep/faults.py: a perturbed weight, two swapped tags, a deleted node) must
each turn the module they hit into MISMATCH or ERROR, through the API and the command.
"""

from __future__ import annotations

import inspect
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
import torch
import torch.nn.functional as F
from alias_models import two_parents
from torch import nn
from zoo import ZOO

from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.exporter.example_inputs import ExampleInputs
from graphtag.exporter.verify import ModuleCheck, compare_arrays, verify_modules

sys.path.insert(0, str(Path(__file__).parents[1] / "bench" / "sweep"))
import faults  # the sweep's fault injectors

ZOO_DYNAMO = [name for name, entry in ZOO.items() if "dynamo" in entry.exporters]

# An honest mismatch: a module whose exported path differs from its eager one.
FACTORIES = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)

        def forward(self, x):
            return torch.relu(self.proj(x))


    class ExportOnly(nn.Module):
        def forward(self, x):
            y = x * 3.0
            if torch.onnx.is_in_onnx_export():
                return y + 1.0  # only the exported graph adds 1
            return y


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pre = Block()
            self.odd = ExportOnly()

        def forward(self, x):
            return self.odd(self.pre(x))


    def net():
        torch.manual_seed(0)
        return Net().eval(), (torch.randn(2, 4, generator=torch.Generator().manual_seed(1)),)
    """
)


def _command(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "graphtag", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module", autouse=True)
def cli_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("verify-cli")
    (folder / "factories.py").write_text(FACTORIES)
    bert = "graphtag.exporter.examples:tiny_bert"
    runs = {
        "tiny_bert": _command("verify", bert, cwd=folder),
        "tight": _command("verify", bert, "--rtol", "0", "--atol", "0", cwd=folder),
        "export_only": _command("verify", "factories.py:net", cwd=folder),
    }
    yield runs
    for proc in runs.values():
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _finished(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _by_tag(checks: list[ModuleCheck]) -> dict[str, ModuleCheck]:
    return {check.tag: check for check in checks}


@pytest.mark.parametrize("name", ZOO_DYNAMO)
def test_zoo_modules_all_ok(name):
    module, inputs = ZOO[name].build()
    checks = verify_modules(module, inputs)
    executed = [c for c in checks if c.status != "NOT-EXECUTED"]
    assert executed, name
    bad = [(c.tag, c.status, c.reason) for c in executed if c.status != "OK"]
    assert not bad, bad
    assert all(c.matched == c.total and c.max_abs_diff is not None for c in executed if c.total)
    assert all(c.max_abs_diff <= 1e-4 and c.max_rel_diff <= 1e-5 for c in executed if c.total)
    if name == "siblings":  # the module called twice: both calls captured and matched
        shared = _by_tag(checks)["/SiblingsNet/Block.shared"]
        assert shared.calls == 2 and shared.total == 2


def test_tampered_initializer_is_a_mismatch():
    module, inputs = ZOO["siblings"].build()

    def tamper(model: ir.Model) -> None:
        value = model.graph.initializers["left.proj.weight"]
        value.const_value = ir.tensor(value.const_value.numpy() * 1.5)

    checks = _by_tag(verify_modules(module, inputs, transform=tamper))
    left = checks["/SiblingsNet/Block.left"]
    assert left.status == "MISMATCH" and left.failed
    assert left.matched == 0 and left.total == 1 and left.max_abs_diff > 1e-4
    assert "output" in left.reason
    assert checks["/SiblingsNet"].status == "MISMATCH"
    # Modules that do not depend on the weight still match.
    assert checks["/SiblingsNet/Block.right"].status == "OK"
    assert checks["/SiblingsNet/Block.left/LayerNorm"].status == "MISMATCH"


def test_a_model_onnx_runtime_cannot_load_is_one_clear_error():
    """ONNX Runtime's own refusal (here an op no provider implements; a bfloat16 Gemm on
    CPU is the case users meet) is a GraphtagError naming ONNX Runtime, not a crash."""
    module, inputs = ZOO["siblings"].build()

    def unknown_op(model: ir.Model) -> None:
        node = next(iter(model.graph))
        node.domain, node.op_type = "test.nowhere", "NoSuchOp"
        model.opset_imports["test.nowhere"] = 1

    with pytest.raises(GraphtagError, match="ONNX Runtime cannot load the exported model"):
        verify_modules(module, inputs, transform=unknown_op)


class _Noisy(nn.Module):
    def forward(self, x):
        return x + torch.rand_like(x)  # a fresh draw on every run, in PyTorch and in ORT


class _Clean(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.tanh(self.fc(x))


class _WithNoise(nn.Module):
    def __init__(self):
        super().__init__()
        self.clean = _Clean()
        self.noisy = _Noisy()

    def forward(self, x):
        return self.noisy(self.clean(x))


def test_modules_pytorch_does_not_repeat_are_random_and_faults_stay_mismatch():
    torch.manual_seed(0)
    module, inputs = _WithNoise().eval(), (torch.randn(3, 4),)
    checks = _by_tag(verify_modules(module, inputs))
    assert checks["/_WithNoise/_Clean"].status == "OK"
    for tag in ("/_WithNoise", "/_WithNoise/_Noisy"):
        assert checks[tag].status == "RANDOM" and not checks[tag].failed
        assert "differently on two runs with the same inputs" in checks[tag].reason

    def tamper(model: ir.Model) -> None:
        value = model.graph.initializers["clean.fc.weight"]
        value.const_value = ir.tensor(value.const_value.numpy() * 1.5)

    faulty = _by_tag(verify_modules(module, inputs, transform=tamper))
    assert faulty["/_WithNoise/_Clean"].status == "MISMATCH"  # deterministic: twice the same


class _Patches(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 192, 16, stride=16)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class _TwoScales(nn.Module):
    """A CrossViT-style second scale: patches of the image resized bicubically."""

    def __init__(self):
        super().__init__()
        self.full, self.small = _Patches(), _Patches()

    def forward(self, x):
        resized = F.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False)
        return self.full(x).mean(1) + self.small(resized).mean(1)


def test_a_module_reading_a_bicubic_resize_verifies_at_the_default_tolerance():
    torch.manual_seed(0)
    module, inputs = _TwoScales().eval(), (torch.randn(1, 3, 240, 240),)
    checks = _by_tag(verify_modules(module, inputs))
    small = checks["/_TwoScales/_Patches.small"]
    assert small.status == "OK", small.reason
    # ONNX Runtime's cubic Resize is off torch's by more than rounding; the module after
    # it inherits that (2e-5 of its scale here): beyond the earlier default of 1e-5.
    assert small.max_rel_diff > 1e-5
    strict = _by_tag(verify_modules(module, inputs, atol=1e-5))
    assert strict["/_TwoScales/_Patches.small"].status == "MISMATCH"


class _PassThrough(nn.Module):
    def forward(self, x, y):
        return x, {"sum": x + y, "same": y}, [None, self.scale]

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))


class _Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = _PassThrough()
        self.unused = _PassThrough()

    def forward(self, x):
        a, parts, _ = self.inner(x, x * 2)
        return a * parts["sum"]


def test_pass_through_outputs_are_not_compared():
    checks = _by_tag(verify_modules(_Outer().eval(), (torch.randn(2, 3),)))
    inner = checks["/_Outer/_PassThrough.inner"]
    # x, y and the parameter come back unchanged: only x + y is compared.
    assert (inner.status, inner.matched, inner.total) == ("OK", 1, 1)
    assert checks["/_Outer/_PassThrough.unused"].status == "NOT-EXECUTED"
    assert checks["/_Outer"].status == "OK"


def test_optimized_export_fused_modules_have_no_nodes():
    module, inputs = ZOO["resnet"].build()
    assert isinstance(inputs, ExampleInputs) and inputs.kwargs
    checks = verify_modules(module, dict(inputs.kwargs), optimize=True)  # keyword form
    assert not [c.tag for c in checks if c.failed]
    fused = [c for c in checks if c.status == "NO-NODES"]
    assert fused and all(c.class_name.endswith("BatchNorm2d") for c in fused)
    for check in fused:  # the optimizer folded each into its parent's node
        parent = check.tag.rsplit("/", 1)[0]
        assert check.status_text() == f"NO-NODES: fused into {parent}"


def test_cli_tiny_bert_end_to_end(cli_runs):
    proc = _finished(cli_runs["tiny_bert"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = ["module", "outputs", "matched", "max", "abs", "diff", "max", "rel", "diff", "status"]
    assert lines[0].split() == header
    rows = [line.split() for line in lines[2:] if line.startswith("/")]
    assert len(rows) == 26 and all(row[-1] == "OK" for row in rows)
    assert "26 modules: 26 OK (rtol 0.001, atol 0.0001;" in proc.stdout
    assert "[26/26] /BertModel/BertPooler" in proc.stderr
    # The test environment installs a deliberately broken plugin (tests/plugins): every
    # command names it in one warning; nothing else may warn.
    stderr = "\n".join(line for line in proc.stderr.splitlines() if "'demo-broken'" not in line)
    assert "Traceback" not in stderr and "warning" not in stderr.lower()


def test_cli_export_only_path_is_a_mismatch(cli_runs):
    proc = _finished(cli_runs["export_only"])
    assert proc.returncode == 1, proc.stderr
    table = proc.stdout.split("\n\n")[0].splitlines()[2:]
    status = {row.split()[0]: row.split()[-1] for row in table}
    assert status == {"/Net": "MISMATCH", "/Net/Block": "OK", "/Net/ExportOnly": "MISMATCH"}
    assert "/Net/ExportOnly: no match for output (2, 4)" in proc.stdout


def test_cli_bad_inputs(capsys, tmp_path):
    from graphtag.cli import main

    assert main(["verify", str(tmp_path / "nothing_here")]) == 2
    assert "graphtag: error: no such model" in capsys.readouterr().err
    assert main(["verify", "graphtag.exporter.examples:no_such_factory"]) == 2
    assert "graphtag: error:" in capsys.readouterr().err
    factory = tmp_path / "f.py"
    factory.write_text(
        "import torch\ndef net():\n    return torch.nn.Linear(2, 2), (torch.ones(3),)\n"
    )
    assert main(["verify", f"{factory}:net"]) == 2
    assert "inputs do not fit the model" in capsys.readouterr().err
    assert main(["verify", f"{factory}:net", "--rtol", "-1"]) == 2
    assert "--rtol must be a finite number >= 0" in capsys.readouterr().err
    assert main(["verify", f"{factory}:net", "--atol", "nan"]) == 2
    assert "--atol must be a finite number >= 0" in capsys.readouterr().err


def _scale_left_weight(factor: float):
    def tamper(model: ir.Model) -> None:
        value = model.graph.initializers["left.proj.weight"]
        value.const_value = ir.tensor(value.const_value.numpy() * factor)

    return tamper


def test_a_module_whose_nodes_carry_another_tag_is_matched_by_value():
    """A module left without nodes (its nodes tagged as its parent's, as a rewrite may
    leave them) is NO-NODES when its outputs are among the graph's values, and MISMATCH
    when a fault changes them."""
    module, inputs = ZOO["siblings"].build()
    left = "/SiblingsNet/Block.left"

    def untag_left(model: ir.Model) -> None:
        for node in model.graph:
            if (metadata.node_tag(node) or "").startswith(left):
                node.metadata_props[metadata.MODULE] = "/SiblingsNet"

    moved = _by_tag(verify_modules(module, inputs, transform=untag_left))[left]
    assert moved.status == "NO-NODES", moved
    assert moved.reason == "its outputs are computed by nodes of other modules"

    def untag_and_fault(model: ir.Model) -> None:
        untag_left(model)
        _scale_left_weight(1.5)(model)

    faulty = _by_tag(verify_modules(module, inputs, transform=untag_and_fault))[left]
    assert faulty.status == "MISMATCH" and faulty.unmatched, faulty


def test_api_tolerance_decides_both_ways(capsys):
    """rtol/atol reach the comparison: a 2% weight error is a MISMATCH by default and
    accepted with rtol=atol=0.5 (tests/test_verify.py's tight command run shows the
    other direction: an untouched export fails rtol=atol=0)."""
    module, inputs = ZOO["siblings"].build()
    left = "/SiblingsNet/Block.left"
    strict = _by_tag(verify_modules(module, inputs, transform=_scale_left_weight(1.02)))
    assert strict[left].status == "MISMATCH"
    assert "torch.onnx" not in capsys.readouterr().out  # torch's progress stays quiet
    for bad in ({"rtol": -1e-3}, {"atol": float("nan")}, {"rtol": "0.1"}):
        with pytest.raises(GraphtagError, match="must be a finite number >= 0"):
            verify_modules(module, inputs, **bad)
    loose = _by_tag(
        verify_modules(module, inputs, transform=_scale_left_weight(1.02), rtol=0.5, atol=0.5)
    )
    assert all(c.status == "OK" for c in loose.values() if c.status != "NOT-EXECUTED")
    assert loose[left].max_rel_diff > 1e-3  # the error is still measured and shown


def test_cli_tolerance_options_reach_the_comparison(capsys, tmp_path):
    from graphtag.cli import main

    factory = tmp_path / "factories.py"
    factory.write_text(FACTORIES)
    # ExportOnly adds 1.0 to values of about 3: a MISMATCH by default (the command run in
    # the background shows it), OK once --atol covers it (scaled by max |value|).
    assert main(["verify", f"{factory}:net", "--atol", "1", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["atol"] == 1.0 and report["rtol"] == 1e-3
    assert {m["tag"]: m["status"] for m in report["modules"]} == {
        "/Net": "OK",
        "/Net/Block": "OK",
        "/Net/ExportOnly": "OK",
    }


def test_cli_too_tight_tolerance_fails(cli_runs):
    # Exact equality is not what float32 onnxruntime gives: the tolerance matters.
    proc = _finished(cli_runs["tight"])
    assert proc.returncode == 1, proc.stderr
    assert "MISMATCH" in proc.stdout and "(rtol 0, atol 0;" in proc.stdout


# ---------------------------------------------------------------- comparison


def test_compare_arrays_is_allclose_with_a_scaled_atol():
    ref = np.array([1000.0, 0.01, -3.0], dtype=np.float32)
    # 1e-3 off everywhere: fine next to values of 1000 (atol 1e-5 x 1000 = 0.01) ...
    near = compare_arrays(ref, ref + 1e-3, rtol=1e-3, atol=1e-5)
    assert near.within and near.abs == pytest.approx(1e-3, rel=1e-3)
    assert near.rel == pytest.approx(1e-6, rel=1e-2)
    # ... but not in a tensor whose values are all small (atol stays 1e-5 below 1).
    small = np.array([0.5, 0.01], dtype=np.float32)
    assert not compare_arrays(small, small + 1e-3, rtol=1e-3, atol=1e-5).within
    assert compare_arrays(small, small + 1e-3, rtol=0, atol=1e-3 + 1e-9).within
    # rtol is per element, as in numpy.allclose.
    assert compare_arrays(ref, ref * (1 + 5e-4), rtol=1e-3, atol=0).within
    assert not compare_arrays(ref, ref * (1 + 5e-3), rtol=1e-3, atol=0).within
    # An all-zero tensor: relative difference 0 when equal, infinite when not.
    zeros = np.zeros(3, np.float32)
    same = compare_arrays(zeros, zeros.copy(), rtol=1e-3, atol=1e-5)
    assert same.within and same.abs == 0.0 and same.rel == 0.0
    off = compare_arrays(zeros, zeros + 1e-6, rtol=1e-3, atol=1e-5)
    assert off.within and off.rel == np.inf


def test_compare_arrays_handles_nan_inf_and_ints():
    a = np.array([1.0, np.nan, np.inf], dtype=np.float32)
    assert compare_arrays(a, a.copy(), 0, 0).within
    assert compare_arrays(a, np.array([1.0, 2.0, np.inf], np.float32), 1e-3, 1e-5).abs == np.inf
    assert not compare_arrays(a, np.array([1.0, np.nan, -np.inf], np.float32), 1, 1).within
    ints = np.arange(3)
    assert compare_arrays(ints, ints.copy(), 0, 0).within
    assert not compare_arrays(ints, ints + 1, 1, 1).within  # integers compare exactly
    assert compare_arrays(np.zeros((0, 3)), np.zeros((0, 3)), 0, 0).within


# ---------------------------------------------------------------- liveness, internal values


class _Layer(nn.Module):
    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        return torch.tanh(self.proj(x)) + x


class _Encoder(nn.Module):
    """Returns every layer's output, like output_hidden_states=True."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_Layer(), _Layer(), _Layer()])

    def forward(self, x):
        states = [x]
        for layer in self.layers:
            x = layer(x)
            states.append(x)
        return x, tuple(states)


class _Attention(nn.Module):
    """Returns its probabilities as output[1]; the caller drops them."""

    def __init__(self, width: int = 6, reshape_probs: bool = False) -> None:
        super().__init__()
        self.qk = nn.Linear(width, 2 * width)
        self.reshape_probs = reshape_probs

    def forward(self, x):
        q, k = self.qk(x).chunk(2, dim=-1)
        probs = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        out = probs @ x
        # Reshaped for the caller only: an operation nothing downstream reads.
        return out, (probs.reshape(probs.shape[0], -1) if self.reshape_probs else probs)


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = _Encoder()
        self.attention = _Attention()
        self.dead_attention = _Attention(reshape_probs=True)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h, _states = self.encoder(x)  # only the last state is used
        a, _probs = self.attention(h)
        b, _reshaped = self.dead_attention(a)
        return self.head(b)


def _model_and_inputs():
    torch.manual_seed(0)
    model = _Model().eval()
    return model, (torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(1)),)


def test_internal_and_dead_outputs():
    checks = _by_tag(verify_modules(*_model_and_inputs()))
    encoder = checks["/_Model/_Encoder"]
    # states[0] is the input (not compared) and states[3] is h, output[0] (compared
    # once); states[1..2] are layer outputs read by the next layer inside the encoder:
    # internal values, matched as such.
    assert (encoder.status, encoder.matched, encoder.total) == ("OK", 3, 3)
    assert encoder.internal == 2
    # The probabilities: softmax output read by the matmul inside the module, then
    # dropped by the caller: an internal value of the module, matched.
    attention = checks["/_Model/_Attention.attention"]
    assert (attention.status, attention.matched, attention.total) == ("OK", 2, 2)
    assert attention.internal == 1
    # The reshaped probabilities: computed for the caller only, who drops them: the
    # exporter removed that node, nothing in the model needs it.
    dead = checks["/_Model/_Attention.dead_attention"]
    assert (dead.status, dead.matched, dead.total, dead.unused) == ("UNUSED", 1, 2, 1)
    assert not dead.failed and dead.unused_outputs == ["output[1] (2, 25)"]
    assert "output[1] (2, 25) not used by the model" in dead.status_text()
    assert checks["/_Model"].status == "OK"


class _ManyDead(nn.Module):
    """Returns four values computed for the caller only; the caller drops them all."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 6)

    def forward(self, x):
        y = self.proj(x)
        return y, *((y + k).reshape(y.shape[0], -1) for k in range(1, 5))


class _DropsMany(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.many = _ManyDead()

    def forward(self, x):
        return self.many(x)[0]


def test_a_module_s_unused_outputs_are_named_up_to_three():
    checks = _by_tag(verify_modules(_DropsMany().eval(), (torch.randn(2, 5, 6),)))
    many = checks["/_DropsMany/_ManyDead"]
    assert (many.status, many.unused) == ("UNUSED", 4), many
    assert many.reason == ", ".join(many.unused_outputs[:3]) + " not used by the model"
    assert many.reason.count("output[") == 3


def test_a_fault_on_a_used_output_is_not_hidden_by_internal_matching():
    # The dead attention's live output, computed wrongly, is still a MISMATCH, and a
    # wrong weight in the first layer breaks every module downstream.
    model, inputs = _model_and_inputs()

    def tamper(onnx_model: ir.Model) -> None:
        for name, value in onnx_model.graph.initializers.items():
            if name.startswith("encoder.layers.0.proj.weight"):
                value.const_value = ir.tensor(value.const_value.numpy() * 1.5 + 0.1)

    checks = _by_tag(verify_modules(model, inputs, transform=tamper))
    assert checks["/_Model/_Encoder/_Layer.0"].status == "MISMATCH"
    assert checks["/_Model/_Encoder"].status == "MISMATCH"
    assert checks["/_Model/_Attention.dead_attention"].status == "MISMATCH"
    assert checks["/_Model"].status == "MISMATCH"


def test_dataflow_liveness():
    from graphtag.exporter.dataflow import DataflowRecorder

    recorder = DataflowRecorder()
    buffer = torch.zeros(4)
    with torch.no_grad(), recorder:
        x = torch.arange(4.0)
        dead = x * 2  # read by nothing
        dead_chain = (x + 1).reshape(2, 2)  # x + 1 is read, but only by a dead view
        written = x * 3
        buffer[1:3] = written[:2]  # an in-place write into a view of a live buffer
        used = buffer + x
        start = recorder.position
        late = x - 1  # read after `start` by a live op
        result = used * late
    live = recorder.liveness([result])
    assert live.is_live(result) and live.is_live(used) and live.is_live(late)
    assert live.is_live(written)  # copied into the buffer the result reads
    assert not live.is_live(dead) and not live.is_live(dead_chain)
    assert live.read_after(late, start) and not live.read_after(used, recorder.position)
    assert live.read_after(result, recorder.position)  # the result itself counts
    recorder.discard()


def test_dataflow_dependence():
    from graphtag.exporter.dataflow import DataflowRecorder

    recorder = DataflowRecorder()
    x = torch.arange(4.0)
    weight = torch.ones(4)
    with torch.no_grad(), recorder:
        zeros = torch.zeros(4)
        scaled = weight * 2  # parameters only: a constant
        shifted = x + scaled
        buffer = torch.zeros(4)
        head = buffer[:2]  # a view of the buffer, still constant here
        start = recorder.position
        buffer[2:].copy_(x[:2])  # the input written into the buffer's storage
    dependence = recorder.dependence([x])
    assert dependence.depends(x) and dependence.depends(shifted)
    assert not dependence.depends(zeros) and not dependence.depends(scaled)
    assert not dependence.depends(head, start)  # before the write
    assert dependence.depends(head) and dependence.depends(buffer)  # after it
    recorder.discard()


class _CondBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda x: self.a(x), lambda x: self.b(x) * 2, (x,))


class _WithCond(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch, self.post = _CondBranch(), nn.Linear(4, 2)

    def forward(self, x):
        return self.post(self.branch(x))


def _with_cond():
    torch.manual_seed(0)
    return _WithCond().eval(), (torch.randn(2, 4, generator=torch.Generator().manual_seed(1)) + 1,)


def test_dataflow_records_inside_higher_order_operators():
    """cond, while_loop, map, scan: the subgraphs' ATen operations are recorded (the
    weight they read is live, their results depend on the input), nothing is opaque,
    and torch.cond still works outside the recorder afterwards."""
    from torch._higher_order_ops.map import map as hop_map
    from torch._higher_order_ops.scan import scan
    from torch._higher_order_ops.while_loop import while_loop

    from graphtag.exporter.dataflow import DataflowRecorder

    x = torch.randn(4, 3) + 1
    weight, unread = torch.randn(3, 3), torch.randn(3, 3)
    runs = {
        "cond": lambda: torch.cond(x.sum() > 0, lambda x: x @ weight, lambda x: x @ unread, (x,)),
        "while_loop": lambda: while_loop(
            lambda i, y: i < 3, lambda i, y: (i + 1, y @ weight), (torch.tensor(0), x)
        )[1],
        "map": lambda: hop_map(lambda row: row @ weight, x),
        "scan": lambda: scan(lambda c, row: (c + row @ weight, c * 2), torch.zeros(3), x)[1],
    }
    for name, run in runs.items():
        recorder = DataflowRecorder()
        with torch.no_grad(), recorder:
            dead = x @ weight  # read by nothing
            result = run()
        live = recorder.liveness([result])
        assert live.is_live(weight) and live.is_live(x), name
        assert not live.is_live(dead) and not live.is_live(unread), name
        assert recorder.dependence([x]).depends(result), name
        assert not recorder.opaque, name
        torch.testing.assert_close(result, run())  # also: Dynamo was left usable
        recorder.discard()


def test_dataflow_an_operator_it_cannot_see_into_is_opaque(caplog):
    """A higher-order operator given an object the recorder cannot wrap (its work may
    read tensors the recorder never sees) is noted, and verify then assumes every
    captured tensor live, used outside and input-dependent, and says so."""
    from torch._C import DispatchKey
    from torch._ops import HigherOrderOperator

    from graphtag.exporter.dataflow import DataflowRecorder
    from graphtag.exporter.verify import capture_calls

    class _Holder:  # hides a tensor from the recorder
        def __init__(self, tensor):
            self.tensor = tensor

    class _Opaque(HigherOrderOperator):
        def __init__(self):
            super().__init__("graphtag_test_opaque")

        def __call__(self, holder, x):
            return super().__call__(holder, x)

    opaque = _Opaque()
    opaque.py_impl(DispatchKey.CompositeExplicitAutograd)(lambda holder, x: x + holder.tensor)
    opaque.py_autograd_impl(lambda holder, x: opaque(holder, x))

    class _Dead(nn.Module):
        def forward(self, x):
            return x * 0  # dead and input-dependent; exact dataflow says not live

    class _Uses(nn.Module):
        def __init__(self):
            super().__init__()
            self.dead, self.holder = _Dead(), _Holder(torch.ones(3))

        def forward(self, x):
            self.dead(x)
            return opaque(self.holder, x)

    recorder = DataflowRecorder()
    x = torch.randn(3)
    with torch.no_grad(), recorder:
        out = opaque(_Holder(torch.ones(3)), x)
    assert recorder.opaque == ["graphtag_test_opaque"]
    torch.testing.assert_close(out, x + 1)
    recorder.discard()

    with caplog.at_level(logging.WARNING, logger="graphtag"):
        captured = capture_calls(_Uses(), ExampleInputs(args=(x,)), {"/_Uses/_Dead": "dead"})
    [[item]] = captured["/_Uses/_Dead"]
    assert item.live and item.outside and not item.constant
    assert "not recorded inside graphtag_test_opaque" in caplog.text


def test_a_torch_cond_model_verifies_and_a_fault_in_the_branch_taken_is_caught():
    module, inputs = _with_cond()
    checks = verify_modules(module, inputs)
    assert [check.status for check in checks] == ["OK", "OK"], checks
    # A wrong weight in the branch PyTorch takes (the inputs' sum is positive).
    tampered = _scale_initializer("branch.a.weight", 1.5)
    checks = _by_tag(verify_modules(module, inputs, transform=tampered))
    branch = checks["/_WithCond/_CondBranch"]
    assert branch.status == "MISMATCH" and branch.unmatched, branch
    assert checks["/_WithCond"].status == "MISMATCH"


# ---------------------------------------------------------------- injected faults


def _right_module_fails(checks: dict[str, ModuleCheck], fault) -> None:
    assert fault is not None
    for tag in fault.modules:
        assert checks[tag].failed, (fault, checks[tag].status, checks[tag].reason)


@pytest.mark.parametrize("kind", list(faults.INJECTORS))
def test_injected_faults_are_caught(kind):
    # Real transformers models get the same faults in tests/test_sweep.py.
    module, inputs = ZOO["siblings"].build()
    made = []

    def inject(model: ir.Model) -> None:
        made.append(faults.INJECTORS[kind](model))

    checks = _by_tag(verify_modules(module, inputs, transform=inject))
    _right_module_fails(checks, made[0])
    root = next(iter(checks.values()))
    # A wrong weight or a lost node changes the model's result; swapped tags do not
    # (the whole graph, the root's extraction, is unchanged).
    assert root.failed == (kind != "tags")


def test_node_dropped_from_an_extracted_module_is_an_error(monkeypatch):
    from graphtag.surgery.extraction import Extractor

    module, inputs = ZOO["siblings"].build()
    target = "/SiblingsNet/Block.right/LayerNorm"
    extract = Extractor.extract

    def extract_without_last_node(self, tag):
        sub = extract(self, tag)
        if tag == target:
            sub.graph.remove(list(sub.graph)[-1])
        return sub

    monkeypatch.setattr(Extractor, "extract", extract_without_last_node)
    checks = _by_tag(verify_modules(module, inputs))
    assert checks[target].status == "ERROR" and checks[target].failed
    others = [c for tag, c in checks.items() if tag != target and c.status != "NOT-EXECUTED"]
    assert all(c.status == "OK" for c in others)


@pytest.mark.parametrize("kind", list(faults.INJECTORS))
def test_cli_reports_injected_faults(kind, monkeypatch, capsys):
    import graphtag.exporter.tagged_export as tagged_export
    from graphtag.cli import main

    export = tagged_export.export
    made = []

    def faulty_export(*args, **kwargs):
        result = export(*args, **kwargs)
        made.append(faults.INJECTORS[kind](result.model))
        return result

    monkeypatch.setattr(tagged_export, "export", faulty_export)
    factory = f"{Path(__file__).parent / 'zoo.py'}:siblings"
    assert main(["verify", factory, "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    status = {m["tag"]: m["status"] for m in report["modules"]}
    assert made and made[0] is not None
    assert all(status[tag] in ("MISMATCH", "ERROR") for tag in made[0].modules), status
    assert report["rtol"] == 1e-3 and report["atol"] == 1e-4


def test_deep_cnn_with_large_activations():
    """Issue: 16 bottleneck blocks, activations in the hundreds: a fixed max abs diff of
    1e-4 called dozens of correct modules MISMATCH; the default tolerance does not, and a
    tight one still fails."""
    import transformers

    from graphtag.exporter.example_inputs import make_example_inputs
    from graphtag.exporter.examples import perturb_parameters
    from graphtag.exporter.tagged_export import export
    from graphtag.exporter.verify import capture_calls, check_export

    config = transformers.ResNetConfig(
        embedding_size=32,
        hidden_sizes=[64, 128, 256, 512],
        depths=[3, 4, 6, 3],
        layer_type="bottleneck",
    )
    torch.manual_seed(0)
    model = transformers.ResNetModel(config).eval()
    perturb_parameters(model)
    inputs = make_example_inputs(model, config, seq_len=8)
    inputs.kwargs["pixel_values"] = inputs.kwargs["pixel_values"][:, :, :64, :64]
    result = export(model, inputs.args, inputs.kwargs, optimize=False, verbose=False)
    captured = capture_calls(model, inputs, {i.tag: i.name for i in result.hierarchy})
    checks = check_export(result, model, inputs, captured=captured)
    assert len(checks) == 129 and all(c.status == "OK" for c in checks)
    assert sum(c.max_abs_diff > 1e-4 for c in checks) >= 40  # the old rule's failures
    assert max(c.max_rel_diff for c in checks) < 1e-5
    tight = check_export(result, model, inputs, captured=captured, rtol=1e-6, atol=1e-8)
    assert sum(c.status == "MISMATCH" for c in tight) >= 40


def test_only_fused_contexts_make_a_module_fused_into_another():
    """Producer/consumer/shared contexts name neighbours whose nodes still exist; only a
    ``fused`` context (an optimizer merged that module's nodes) counts, never the node's
    own module."""
    from onnx_builders import tagged_mlp

    from graphtag.exporter.verify import _fused_into

    model = tagged_mlp()
    add = model.graph.node(1)  # tagged /MLP/Layer.fc1
    metadata.set_contexts(add, [
        {"module": "/MLP/Norm", "role": metadata.FUSED_ROLE},
        {"module": "/MLP/Layer.fc1", "role": metadata.FUSED_ROLE},
        {"module": "/MLP/Layer.fc2", "role": "consumer"},
    ])  # fmt: skip
    assert _fused_into(model) == {"/MLP/Norm": "fused into /MLP/Layer.fc1"}


def test_a_fault_in_a_module_called_twice_names_the_calls():
    module, inputs = ZOO["siblings"].build()

    def tamper(model: ir.Model) -> None:
        value = model.graph.initializers["shared.proj.weight"]
        value.const_value = ir.tensor(value.const_value.numpy() * 1.5)

    shared = _by_tag(verify_modules(module, inputs, transform=tamper))["/SiblingsNet/Block.shared"]
    assert shared.status == "MISMATCH" and shared.calls == 2, shared
    assert {u.split(" output")[0] for u in shared.unmatched} == {"call 1", "call 2"}, shared


# ---------------------------------------------------------------- folded constants


class _BiasAttention(nn.Module):
    """Returns its attention bias too; without one, a zeros bias (T5 cross-attention).

    ``input_bias``: PyTorch computes the same zeros from the input (``x * 0``), the
    export uses the constant: an input-dependent value that no module output carries.
    """

    def __init__(self, input_bias: bool = False) -> None:
        super().__init__()
        self.q = nn.Linear(8, 8)
        self.input_bias = input_bias

    def forward(self, x, bias=None):
        if bias is None:
            bias = torch.zeros(1, 4, 4, dtype=x.dtype)
            if self.input_bias and not torch.onnx.is_in_onnx_export():
                bias = x[..., :4] * 0
        scores = self.q(x) @ x.transpose(-1, -2) + bias
        return scores.softmax(-1) @ x, bias


class _ReusesBias(nn.Module):
    """The second layer reuses the bias the first one returns."""

    def __init__(self, input_bias: bool = False) -> None:
        super().__init__()
        self.a0 = _BiasAttention(input_bias)
        self.a1 = _BiasAttention()

    def forward(self, x):
        y, bias = self.a0(x)
        return self.a1(y, bias)[0]


def _reused_bias(input_bias: bool = False):
    torch.manual_seed(0)
    x = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(1))
    return _ReusesBias(input_bias).eval(), (x,)


_A0, _A1 = "/_ReusesBias/_BiasAttention.a0", "/_ReusesBias/_BiasAttention.a1"


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_returned_constant_the_next_module_reuses(exporter):
    """TorchScript copies the zeros bias into each layer that reads it, so it is no
    output of a0's subgraph: CONSTANT (matched by a constant of the graph), not a
    failure. Dynamo keeps it a0's output: OK."""
    checks = _by_tag(verify_modules(*_reused_bias(), exporter=exporter))
    a0 = checks[_A0]
    assert (a0.matched, a0.total) == (2, 2) and not a0.failed, a0
    if exporter == "torchscript":
        assert (a0.status, a0.constant) == ("CONSTANT", 1)
        assert a0.constant_outputs[0].startswith("output[1] (1, 4, 4) = ")
        assert a0.status_text().startswith("CONSTANT: folded constant output[1] (1, 4, 4) = ")
        assert "input-independent" in a0.reason
    else:
        assert (a0.status, a0.constant, a0.reason) == ("OK", 0, "")
    assert checks[_A1].status == "OK" and checks["/_ReusesBias"].status == "OK"


def test_cli_a_returned_constant_is_not_a_failure(capsys, tmp_path):
    from graphtag.cli import main

    factory = tmp_path / "reused_bias.py"
    source = [inspect.getsource(obj) for obj in (_BiasAttention, _ReusesBias, _reused_bias)]
    factory.write_text("import torch\nfrom torch import nn\n\n\n" + "\n\n".join(source))
    args = ["verify", f"{factory}:_reused_bias", "--exporter", "torchscript"]
    assert main([*args, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["CONSTANT"] == 1 and report["counts"]["MISMATCH"] == 0
    assert {m["tag"]: m["status"] for m in report["modules"]}[_A0] == "CONSTANT"
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "3 modules: 2 OK, 1 CONSTANT" in out and "CONSTANT: folded" in out


def _scale_initializer(name: str, factor: float):
    def tamper(model: ir.Model) -> None:
        value = model.graph.initializers[name]
        value.const_value = ir.tensor(value.const_value.numpy() * factor)

    return tamper


def _shift_bias_constants(model: ir.Model) -> None:
    """Every (1, 4, 4) Constant node, i.e. each layer's copy of the zeros bias, + 1.

    Softmax does not change when all scores shift by 1: the layers' results stay
    right, only the folded bias is wrong."""
    for node in model.graph:
        value = node.attributes.get("value") if node.op_type == "Constant" else None
        if value is not None and list(value.value.shape) == [1, 4, 4]:
            node.attributes["value"] = ir.AttrTensor("value", ir.tensor(value.value.numpy() + 1))


def test_a_fault_next_to_a_folded_constant_is_still_a_mismatch():
    module, inputs = _reused_bias()
    # A wrong weight in a0: its result has no match, its folded bias still does.
    tampered = _scale_initializer("a0.q.bias", 1.5)
    checks = _by_tag(verify_modules(module, inputs, exporter="torchscript", transform=tampered))
    a0 = checks[_A0]
    assert a0.status == "MISMATCH" and a0.failed, a0
    assert a0.unmatched == ["output[0] (1, 4, 8)"] and a0.constant == 1
    assert checks["/_ReusesBias"].status == "MISMATCH"
    # A wrong folded value: no constant of the graph equals the bias any more.
    checks = _by_tag(
        verify_modules(module, inputs, exporter="torchscript", transform=_shift_bias_constants)
    )
    a0 = checks[_A0]
    assert a0.status == "MISMATCH" and a0.unmatched == ["output[1] (1, 4, 4)"], a0
    assert a0.constant == 0 and checks[_A1].status == "OK"


def test_an_input_dependent_output_matching_a_constant_is_a_mismatch():
    """a0 returns ``x * 0`` in PyTorch and the exported zeros constant: the values agree
    but the tensor depends on the input, so a constant cannot stand for it."""
    checks = _by_tag(verify_modules(*_reused_bias(input_bias=True), exporter="torchscript"))
    a0 = checks[_A0]
    assert a0.status == "MISMATCH" and a0.unmatched == ["output[1] (1, 4, 4)"], a0
    assert a0.constant == 0


def test_a_module_under_two_names_is_no_false_mismatch():
    """ParentB's call of the shared module is tagged inside ParentA (one object, one
    tag): ParentA's output is then read inside its own subgraph. It is compared with
    the values that subgraph computes, not reported missing (was: MISMATCH "no match
    for output"); a fault in ParentA's own weight is still caught."""
    module, inputs = two_parents()
    checks = _by_tag(verify_modules(module, inputs))
    parent_a = "/_TwoParents/_AliasParentA"
    assert parent_a in checks and "/_TwoParents/_AliasParentA/_AliasShared" in checks
    assert {c.status for c in checks.values()} <= {"OK", "NO-NODES"}, {
        t: (c.status, c.reason) for t, c in checks.items()
    }
    assert checks[parent_a].status == "OK" and checks[parent_a].matched == 1
    faulty = _by_tag(
        verify_modules(module, inputs, transform=_scale_initializer("pa.own.weight", 1.5))
    )
    assert faulty[parent_a].status == "MISMATCH"


class _UnsortedRouter(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Linear(8, 6, bias=False)

    def forward(self, x):
        scores = self.w(x).sigmoid()
        index = torch.topk(scores, k=3, dim=-1, sorted=False)[1]
        return scores.gather(1, index), index


class _ExpertRows(nn.Module):
    def forward(self, rows):
        return torch.nn.functional.silu(rows * 2)


class _Mixture(nn.Module):
    def __init__(self):
        super().__init__()
        self.router = _UnsortedRouter()
        self.experts = nn.Parameter(torch.randn(6, 8))
        self.act = _ExpertRows()

    def forward(self, x):
        weights, index = self.router(x)
        picked = self.experts[index]  # (token, k) rows in the router's order
        rows = self.act(picked.reshape(-1, picked.shape[-1])).reshape(picked.shape)
        return (weights.unsqueeze(-1) * rows).sum(1)  # order-independent


def test_an_unsorted_top_k_is_reordered_not_a_mismatch(tmp_path):
    """topk(sorted=False) leaves the order of its result unspecified, and PyTorch and
    onnxruntime pick different ones: the router is REORDERED (matched, named, not a
    failure) exactly when onnxruntime's indices differ from PyTorch's in order only,
    which is checked here independently of verify. A wrong weight is still a MISMATCH."""
    import onnxruntime as ort

    torch.manual_seed(0)
    module, x = _Mixture().eval(), torch.randn(16, 8)
    inputs = ExampleInputs((x,), {})
    _, torch_index = module.router(x)
    program = torch.onnx.export(module, (x,), dynamo=True, optimize=False, verbose=False)
    topk = next(node for node in program.model.graph if node.op_type == "TopK")
    program.model.graph.outputs.append(topk.outputs[1])
    program.save(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    ort_index = session.run(None, {session.get_inputs()[0].name: x.numpy()})[1]
    same_sets = np.array_equal(np.sort(ort_index, -1), np.sort(torch_index.numpy(), -1))
    assert same_sets  # the same experts, whatever their order
    reordered = not np.array_equal(ort_index, torch_index.numpy())

    checks = _by_tag(verify_modules(module, inputs))
    router = checks["/_Mixture/_UnsortedRouter"]
    assert router.status == ("REORDERED" if reordered else "OK"), router.reason
    assert not router.failed and router.matched == router.total == 2
    if reordered:
        assert router.reordered == 2 and "output[1]" in router.reason
        assert "order" in router.status_text()
    # The activation sees the (token, k) rows in that order: rows reordered (axis 0).
    assert checks["/_Mixture/_ExpertRows"].status == ("REORDERED" if reordered else "OK")
    assert checks["/_Mixture"].status == "OK"
    faulty = _by_tag(verify_modules(module, inputs, transform=_scale_initializer("experts", 1.5)))
    assert faulty["/_Mixture"].status == "MISMATCH"


def test_reordered_along_one_axis_matches_but_mixed_elements_do_not():
    from graphtag.exporter.verify import best_match_unordered

    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    within = rows[:, ::-1].copy()
    across = rows.T.reshape(3, 4).copy()  # the same elements, moved between rows
    found, name = best_match_unordered(rows, [("within", within)], 1e-5, 1e-5)
    assert name == "within" and found.within
    found, _ = best_match_unordered(rows, [("across", across)], 1e-5, 1e-5)
    assert not found.within
    found, name = best_match_unordered(rows, [("rows", rows[[2, 0, 1]])], 1e-5, 1e-5)
    assert name == "rows" and found.within  # whole rows in another order (axis 0)
    found, _ = best_match_unordered(rows, [("changed", rows[:, ::-1] + 0.5)], 1e-5, 1e-5)
    assert not found.within
    assert best_match_unordered(rows[:1, :1], [("one", rows[:1, :1])], 1e-5, 1e-5) == (None, None)


class _ChannelsLastBlock(nn.Module):
    """Works channels-last and hands NCHW back, as windowed-attention blocks do."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.fc = nn.Linear(channels, channels)

    def forward(self, x):
        y = x.permute(0, 2, 3, 1)
        y = y + self.fc(self.norm(y))
        return y.permute(0, 3, 1, 2)


class _Norm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor: permutes in, and back out."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ChannelsLastNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.block = _ChannelsLastBlock(16)
        self.head_norm = _Norm2d(16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.head_norm(self.block(self.stem(x))).mean((2, 3)))


def _channels_last_net():
    torch.manual_seed(0)
    module = _ChannelsLastNet().eval()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return module, ExampleInputs((torch.randn(1, 3, 6, 5),), {})


def test_a_module_output_kept_only_in_its_consumers_layout_is_transposed(tmp_path):
    """TorchScript merges the block's closing permute with the norm's opening one, so the
    block's NCHW output exists only channels-last (checked here on the export itself):
    TRANSPOSED, naming the value and the axes, not a MISMATCH. A wrong weight in the
    block is still a MISMATCH; dynamo keeps the value, so there it is OK."""
    module, inputs = _channels_last_net()
    path = tmp_path / "m.onnx"
    graphtag_export = __import__("graphtag").export
    graphtag_export(module, inputs.args, f=path, exporter="torchscript", verbose=False)
    import onnx

    inferred = ir.from_proto(onnx.shape_inference.infer_shapes(onnx.load(path)))
    shapes = {
        tuple(value.shape)
        for node in inferred.graph
        if metadata.node_tag(node) == "/_ChannelsLastNet/_ChannelsLastBlock"
        for value in node.outputs
        if value.shape is not None
    }
    assert (1, 6, 5, 16) in shapes and (1, 16, 6, 5) not in shapes, shapes

    checks = _by_tag(verify_modules(module, inputs, exporter="torchscript"))
    block = checks["/_ChannelsLastNet/_ChannelsLastBlock"]
    assert block.status == "TRANSPOSED" and not block.failed, block.reason
    assert block.matched == block.transposed == 1 and "axes (0, 3, 1, 2)" in block.reason
    others = {tag: c.status for tag, c in checks.items() if c is not block}
    assert set(others.values()) == {"OK"}, others
    faulty = _by_tag(
        verify_modules(
            module,
            inputs,
            exporter="torchscript",
            transform=_scale_initializer("block.fc.bias", 1.5),
        )
    )
    assert faulty["/_ChannelsLastNet/_ChannelsLastBlock"].status == "MISMATCH"
    dynamo = _by_tag(verify_modules(module, inputs, exporter="dynamo"))
    assert {c.status for c in dynamo.values()} == {"OK"}


def test_transposed_matches_only_another_layout_of_the_same_values():
    from graphtag.exporter.verify import best_match_transposed

    nchw = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    nhwc = nchw.transpose(0, 2, 3, 1).copy()
    found, name, axes = best_match_transposed(nchw, [("nhwc", nhwc)], 1e-5, 1e-5)
    assert name == "nhwc" and found.within and axes == (0, 3, 1, 2)
    # The same elements in another arrangement (not a permutation of the axes).
    shuffled = nhwc.reshape(-1)[::-1].reshape(nhwc.shape).copy()
    found, _, _ = best_match_transposed(nchw, [("shuffled", shuffled)], 1e-5, 1e-5)
    assert not found.within
    # A candidate of the very shape is best_match's, not a transposition.
    assert best_match_transposed(nchw, [("same", nchw)], 1e-5, 1e-5) == (None, None, None)
    assert best_match_transposed(nchw[0, 0, 0], [("v", nchw[0, 0, 0])], 1e-5, 1e-5)[0] is None
