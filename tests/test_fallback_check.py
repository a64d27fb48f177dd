"""When ``auto`` falls back to TorchScript, ``graphtag export`` checks the written
model's outputs against PyTorch's on the example inputs: torch's TorchScript exporter
can be wrong on the very inputs it traced (here an in-place write to a diagonal view is
lost), and nothing else would say so before ``graphtag verify``."""

from __future__ import annotations

import warnings

import pytest
import torch
from cli_helpers import run_cli, run_main

import graphtag
from graphtag.exporter.verify import check_outputs

MODELS = """
import torch


class Wrong(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        if y.sum() > -1e9:  # data-dependent: dynamo refuses, the trace keeps this side
            z = y.new_zeros(4, 4)
            z.diagonal().copy_(y[0])  # TorchScript's export drops this write
            return z + y
        return y


class Right(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        y = self.fc(x)
        return y * 2 if y.sum() > -1e9 else y


class Plain(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x)


class Noisy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x) + torch.rand_like(x)


def make(name):
    torch.manual_seed(0)
    return globals()[name]().eval(), (torch.randn(4, 4),)


def wrong():
    return make("Wrong")


def right():
    return make("Right")


def plain():
    return make("Plain")
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fallback")
    (folder / "fallback_models.py").write_text(MODELS)
    return folder


def _export(models, factory, *options):
    out = models / f"{factory}.onnx"
    proc = run_cli("export", f"{models / 'fallback_models.py'}:{factory}", out, *options)
    assert proc.returncode == 0, proc.stderr
    assert out.exists()
    return proc.stderr


def test_a_wrong_torchscript_fallback_is_written_with_a_warning(models):
    err = _export(models, "wrong")
    assert "exported by the torchscript route" in err
    (line,) = [line for line in err.splitlines() if "does not reproduce PyTorch" in line]
    assert line.startswith("graphtag: warning: the TorchScript export does not reproduce")
    assert "output 0 differs by up to" in line and "graphtag verify" in line


def test_a_right_fallback_is_checked_quietly_and_dynamo_not_at_all(models):
    err = _export(models, "right")
    assert "checking the TorchScript export's outputs" in err
    assert "does not reproduce" not in err
    err = _export(models, "plain")
    assert "checking" not in err  # dynamo as given: no fallback, nothing to check
    # Asked for by name, TorchScript is the user's choice: no check either.
    assert "checking" not in _export(models, "wrong", "--exporter", "torchscript")
    # Turned off, a wrong fallback is written without the check or its warning.
    err = _export(models, "wrong", "--no-fallback-check")
    assert "exported by the torchscript route" in err
    assert "checking" not in err and "does not reproduce" not in err


def test_check_outputs_compares_and_leaves_random_models_alone(models, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(models))
    import fallback_models

    for name, expected in (("Wrong", "output 0 differs"), ("Right", None), ("Noisy", None)):
        module, args = fallback_models.make(name)
        path = tmp_path / f"{name}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graphtag.export(module, args, f=path, exporter="torchscript", verbose=False)
        problem = check_outputs(path, module, args)
        if expected is None:
            assert problem is None, (name, problem)
        else:
            assert problem is not None and expected in problem, (name, problem)
    # The noisy model's outputs really differ between runs: the check must skip, not pass.
    module, args = fallback_models.make("Noisy")
    assert not torch.equal(module(*args), module(*args))


def test_the_python_api_checks_a_fallback_too(models, tmp_path, monkeypatch):
    """``graphtag.export`` (``auto`` by default) runs the same check as the CLI and says
    so in the result and with a FallbackOutputsWarning."""
    from graphtag.exporter.tagged_export import FallbackOutputsWarning

    monkeypatch.syspath_prepend(str(models))
    import fallback_models

    module, args = fallback_models.make("Wrong")
    with pytest.warns(FallbackOutputsWarning, match="output 0 differs by up to"):
        result = graphtag.export(module, args, tmp_path / "wrong.onnx", verbose=False)
    assert result.fell_back and result.exporter == "torchscript"
    assert result.output_check is not None and not result.output_check.passed
    assert "output 0 differs" in result.output_check.problem
    # No file, or a file whose weights are graph inputs: the check runs on a temporary
    # copy with the weights as initializers.
    for f, options in (
        (None, {}),
        (tmp_path / "inputs.onnx", {"keep_initializers_as_inputs": True}),
    ):
        with pytest.warns(FallbackOutputsWarning, match="output 0 differs"):
            again = graphtag.export(module, args, f, verbose=False, **options)
        assert "output 0 differs" in again.output_check.problem
    # Exported without its weights, the model cannot be run on the example inputs alone:
    # said, not passed.
    with pytest.warns(FallbackOutputsWarning, match="could not be checked"):
        bare = graphtag.export(
            module, args, tmp_path / "bare.onnx", export_params=False, verbose=False
        )
    assert bare.output_check.problem is None and "graph inputs" in bare.output_check.error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.onnx", "inputs.onnx", "wrong.onnx"]

    # A right fallback passes without a warning; turned off, or TorchScript asked for by
    # name, nothing is checked.
    right, right_args = fallback_models.make("Right")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FallbackOutputsWarning)
        checked = graphtag.export(right, right_args, verbose=False)
        assert checked.fell_back and checked.output_check.passed
        skipped = graphtag.export(module, args, verbose=False, check_fallback=False)
        assert skipped.fell_back and skipped.output_check is None
        strict = graphtag.export(module, args, exporter="torchscript", verbose=False)
        assert not strict.fell_back and strict.output_check is None


def test_a_profile_of_a_wrong_fallback_says_so(models, monkeypatch, capsys):
    """``graphtag profile`` of a model source exports it first: a profile of a graph that
    does not reproduce the model carries the check's line among its notes."""
    source = f"{models / 'fallback_models.py'}:wrong"
    proc = run_main(monkeypatch, capsys, "profile", source, "--warmup", "0", "--runs", "1")
    assert proc.returncode == 0, proc.stderr
    (note,) = [line for line in proc.stderr.splitlines() if "does not reproduce" in line]
    assert note.startswith("graphtag: note: the TorchScript export does not reproduce PyTorch")
