"""``graphtag verify``: every extracted module reproduces PyTorch, and a broken one is caught.

The two command-line runs start in the background when the module starts (each is
mostly a torch import and one export) and are checked by the last tests.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
import torch
from torch import nn
from zoo import ZOO

from graphtag.exporter.example_inputs import ExampleInputs
from graphtag.exporter.verify import ModuleCheck, verify_modules

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
    runs = {
        "tiny_bert": _command("verify", "graphtag.exporter.examples:tiny_bert", cwd=folder),
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
    assert all(c.max_abs_diff <= 1e-4 for c in executed if c.total)
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
    assert lines[0].split() == ["module", "outputs", "matched", "max", "abs", "diff", "status"]
    rows = [line.split() for line in lines[2:] if line.startswith("/")]
    assert len(rows) == 26 and all(row[-1] == "OK" for row in rows)
    assert "26 modules: 26 OK" in proc.stdout
    assert "[26/26] /BertModel/BertPooler" in proc.stderr
    assert "Traceback" not in proc.stderr and "warning" not in proc.stderr.lower()


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
    assert main(["verify", f"{factory}:net", "--tolerance", "-1"]) == 2
    assert "--tolerance" in capsys.readouterr().err


def test_max_abs_diff_handles_nan_and_ints():
    from graphtag.exporter.verify import _best_diff

    a = np.array([1.0, np.nan], dtype=np.float32)
    assert _best_diff(a, [a.copy()]) == 0.0
    assert _best_diff(a, [np.array([1.0, 2.0], dtype=np.float32)]) == float("inf")
    assert _best_diff(np.arange(3), [np.arange(3) + 1, np.arange(4)]) == 1.0
    assert _best_diff(np.arange(3), [np.arange(4)]) is None
