"""Dynamic input axes: ``graphtag export --dynamic`` and torch's ``dynamic_shapes`` on
every route. Checked by ONNX Runtime at sizes other than the example's, against PyTorch.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from cli_helpers import assert_clean_failure, run_cli

import graphtag
from graphtag.core.errors import GraphtagError
from graphtag.exporter.dynamic_axes import (
    dynamo_shapes,
    named_inputs,
    parse_dynamic,
    torchscript_options,
)
from graphtag.exporter.examples import tiny_bert

BERT = "graphtag.exporter.examples:tiny_bert"
BERT_AXES = [
    f"--dynamic={name}:{axis}={label}"
    for name in ("input_ids", "attention_mask", "token_type_ids")
    for axis, label in ((0, "batch"), (1, "sequence"))
]


def _dims(path) -> list[list]:
    graph = onnx.load(str(path)).graph
    return [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input]


@pytest.mark.parametrize("exporter", ["auto", "torchscript"])
def test_cli_dynamic_axes_run_at_other_sizes_and_match_pytorch(tmp_path, exporter):
    out = tmp_path / "bert.onnx"
    proc = run_cli("export", BERT, out, "--exporter", exporter, *BERT_AXES)
    assert proc.returncode == 0, proc.stderr
    assert _dims(out) == [["batch", "sequence"]] * 3
    onnx.checker.check_model(str(out), full_check=True)
    assert graphtag.validate(graphtag.load(out), path=out).passed

    module, _ = tiny_bert()
    gen = torch.Generator().manual_seed(1)
    feeds = {
        "input_ids": torch.randint(0, 30522, (3, 11), generator=gen),
        "attention_mask": torch.ones(3, 11, dtype=torch.int64),
        "token_type_ids": torch.zeros(3, 11, dtype=torch.int64),
    }
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, {name: feeds[name].numpy() for name in names})[0]
    with torch.no_grad():
        expected = module(**feeds).last_hidden_state.numpy()
    assert got.shape == (3, 11, 128)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


class Scale(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x, y):
        return self.fc(x) * y


def test_torchscript_takes_dynamos_spelling_as_torch_does_not(tmp_path):
    module, args = Scale().eval(), (torch.randn(2, 4), torch.randn(2, 3))
    shapes = {"x": {0: torch.export.Dim("batch")}, "y": {0: "batch"}}
    with warnings.catch_warnings(), pytest.raises(ValueError, match="dynamic_axes"):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(tmp_path / "plain.onnx"), dynamo=False, dynamic_shapes=shapes
        )
    path = tmp_path / "scale.onnx"
    result = graphtag.export(
        module, args, f=path, exporter="torchscript", dynamic_shapes=shapes, verbose=False
    )
    assert result.route == "torchscript"
    assert _dims(path) == [["batch", 4], ["batch", 3]]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, y = torch.randn(5, 4), torch.randn(5, 3)
    (got,) = session.run(None, {"x": x.numpy(), "y": y.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, module(x, y).numpy(), rtol=1e-5, atol=1e-6)


class Branchy(torch.nn.Module):
    """A data-dependent branch: dynamo refuses it, the TorchScript trace takes one side."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > -1e9:
            return self.fc(x)
        return x


def test_auto_hands_the_dynamic_axes_to_the_torchscript_rung(tmp_path):
    path = tmp_path / "branchy.onnx"
    result = graphtag.export(
        Branchy().eval(),
        (torch.randn(2, 4),),
        f=path,
        dynamic_shapes={"x": {0: "rows"}},
        verbose=False,
    )
    assert result.route == "torchscript", result.attempts
    assert _dims(path) == [["rows", 4]]


def test_user_input_names_rename_the_dynamic_axes_keys():
    module, args = Scale(), (torch.randn(2, 4), torch.randn(2, 3))
    options = torchscript_options(
        {"dynamic_shapes": ({0: "n"}, None), "input_names": ["a", "b"]}, module, args, {}
    )
    assert options == {"input_names": ["a", "b"], "dynamic_axes": {"a": {0: "n"}}}
    # Forms it does not know go to torch unchanged; its own error then names them.
    for odd in (
        {"dynamic_shapes": {"z": {0: "n"}}},
        {"dynamic_shapes": ({0: "n"},)},
        {"dynamic_shapes": {"x": {0: "n"}}, "dynamic_axes": {"x": [0]}},
    ):
        assert torchscript_options(odd, module, args, {}) is odd


class Star(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, first, *rest, **extra):
        return self.fc(first) + sum(rest) + sum(extra.values())


def test_star_args_and_kwargs_get_dynamos_structure_and_back():
    module = Star()
    args = (torch.randn(2, 4), torch.randn(2, 4), 3, torch.randn(2, 4))
    kwargs = {"bias": torch.randn(2, 4)}
    names = named_inputs(module, args, kwargs)
    assert list(names) == ["first", "arg1", "arg3", "bias"]  # the int is no input
    per_input = parse_dynamic(["first:0=b", "arg3:0=b", "bias:0=b"], names)
    shapes = dynamo_shapes(per_input, module, args, kwargs)
    assert shapes == {
        "first": {0: "b"},
        "rest": (None, None, {0: "b"}),
        "extra": {"bias": {0: "b"}},
    }
    options = torchscript_options({"dynamic_shapes": shapes}, module, args, kwargs)
    assert options["dynamic_axes"] == {"first": {0: "b"}, "arg3": {0: "b"}, "bias": {0: "b"}}


def test_cli_dynamic_axes_of_a_star_args_forward_export_by_dynamo(tmp_path):
    source = tmp_path / "varargs_model.py"
    source.write_text(
        "import torch\n"
        "class VarArgs(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(4, 3)\n"
        "    def forward(self, *args):\n"
        "        return self.fc(args[0]) * args[1]\n"
        "def make():\n"
        "    return VarArgs().eval(), (torch.randn(2, 4), torch.randn(2, 3))\n"
    )
    out = tmp_path / "varargs.onnx"
    proc = run_cli(
        "export", f"{source}:make", out, "--dynamic=arg0:0=batch", "--dynamic=arg1:0=batch"
    )
    assert proc.returncode == 0, proc.stderr
    assert "exported by" not in proc.stderr  # dynamo as given: no fallback announced
    assert _dims(out) == [["batch", 4], ["batch", 3]]


def test_parse_dynamic_names_inputs_and_checks_axes():
    inputs = named_inputs(Scale(), (torch.randn(2, 4),), {"y": torch.randn(2, 3), "k": 3})
    assert list(inputs) == ["x", "y"]
    assert parse_dynamic(["x:0=batch", "y:-2"], inputs) == {"x": {0: "batch"}, "y": {0: "y_0"}}
    with pytest.raises(GraphtagError, match="no input named z \\(inputs: x, y\\)"):
        parse_dynamic(["z:0"], inputs)
    with pytest.raises(GraphtagError, match="x has 2 axes \\(shape \\[2, 4\\]\\), no axis 2"):
        parse_dynamic(["x:2"], inputs)


@pytest.fixture(scope="module")
def small_source(tmp_path_factory) -> str:
    """A two-input model source that loads in an instant (no transformers)."""
    source = tmp_path_factory.mktemp("small") / "small_model.py"
    source.write_text(
        "import torch\n"
        "class Small(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(4, 3)\n"
        "    def forward(self, x, scale):\n"
        "        return self.fc(x) * scale\n"
        "def make():\n"
        "    return Small().eval(), (torch.randn(2, 4), torch.randn(2, 3))\n"
    )
    return f"{source}:make"


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("x", "expected INPUT:AXIS or INPUT:AXIS=NAME"),
        ("x:0=1st", "expected INPUT:AXIS or INPUT:AXIS=NAME"),
        ("pixels:0", "no input named pixels (inputs: x, scale)"),
        ("x:5", "x has 2 axes (shape [2, 4]), no axis 5"),
    ],
)
def test_cli_bad_dynamic_axis_is_one_line_and_writes_nothing(
    tmp_path, small_source, spec, fragment
):
    out = tmp_path / "small.onnx"
    proc = run_cli("export", small_source, out, f"--dynamic={spec}")
    assert_clean_failure(proc, fragment)
    assert proc.returncode == 2
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_dynamic_syntax_fails_before_the_model_loads(tmp_path):
    proc = run_cli("export", "no_such_package.models:factory", tmp_path / "m.onnx", "--dynamic=x")
    assert_clean_failure(proc, "dynamic axis 'x'")
    assert "loading" not in proc.stderr
