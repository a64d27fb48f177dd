"""``graphtag export``: the command end to end, the way a user runs it (subprocesses).

Tiny models only: the embedded ``tiny_bert`` once (the README command), otherwise the
factories below written to a temporary ``factories.py`` and tiny transformers configs
saved with ``save_pretrained``. Every run starts at once in the ``runs`` fixture (two at
a time) and each test asserts on its own runs. A few runs (``SUBPROCESS``) are the real
command, started from nothing; the others are forked from a process that has imported
torch already (cli_helpers.CliPool): the same command line, exit status and output, without
a seconds-long import each.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import subprocess
import textwrap
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from cli_helpers import CliPool, assert_clean_failure

from graphtag.core import metadata

# Net: Linear layers around a custom block, plus a constant subexpression that only the
# optimizer folds. Branchy: data-dependent control flow, which torch.export cannot capture
# (it fails in the non-strict and strict modes alike) and TorchScript tracing can.
FACTORIES = textwrap.dedent(
    """
    import torch
    from torch import nn

    from graphtag.exporter.examples import perturb_parameters


    class Block(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.proj = nn.Linear(width, width)
            self.norm = nn.LayerNorm(width)

        def forward(self, x):
            return self.norm(torch.relu(self.proj(x)) + x)


    class Net(nn.Module):
        def __init__(self, width=8):
            super().__init__()
            self.fc1 = nn.Linear(width, width)
            self.act = nn.ReLU()
            self.block = Block(width)
            self.head = nn.Linear(width, 4)

        def forward(self, x):
            scale = torch.arange(8, dtype=torch.float32).reshape(1, 8) * 0.5 + 1.0
            return self.head(self.block(self.act(self.fc1(x))) * scale)


    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 4)
            self.fc2 = nn.Linear(4, 4)

        def forward(self, x):
            h = self.fc1(x)
            return self.fc2(h) if h.sum() > 0 else -self.fc2(h)


    def net():
        torch.manual_seed(0)
        model = Net().eval()
        perturb_parameters(model)
        return model, (torch.randn(2, 8, generator=torch.Generator().manual_seed(1)),)


    def branchy():
        torch.manual_seed(0)
        return Branchy(), (torch.randn(2, 4, generator=torch.Generator().manual_seed(1)),)


    class Spare(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = Block(8)
            self.spare = Block(8)  # never called: nothing to outline

        def forward(self, x):
            return self.used(x)


    class Unexportable(nn.Module):
        # An SVD: neither exporter has an ONNX translation for it.

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.linalg.svd(self.fc(x))[0]


    def spare():
        torch.manual_seed(0)
        model = Spare().eval()
        perturb_parameters(model)
        return model, (torch.randn(2, 8, generator=torch.Generator().manual_seed(1)),)


    def unexportable():
        return Unexportable().eval(), (torch.randn(4, 4),)


    class Listed(nn.Module):
        # A list and a dict as positional arguments.

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, xs, extra):
            return self.fc(xs[0] + xs[1]) * extra["scale"]


    def _listed_inputs():
        torch.manual_seed(0)  # the test rebuilds the CLI's model and inputs
        pair = [torch.randn(2, 3), torch.randn(2, 3)]
        return pair, {"scale": torch.tensor(2.0)}


    def listed_ambiguous():
        # (list, dict) reads as (args, kwargs), like torch.onnx.export's args.
        return Listed().eval(), _listed_inputs()


    def listed():
        from graphtag.exporter.example_inputs import ExampleInputs

        inputs = ExampleInputs(_listed_inputs(), {})
        return Listed().eval(), inputs


    def raises():
        raise ValueError("checkpoint shards are missing")


    def not_a_module():
        return {"weights": [1, 2, 3]}
    """
)

STRIPPED = {metadata.TORCH_STACK_TRACE, metadata.TORCH_FX_NODE}
WORKERS = 2  # CLI runs at a time


# ---------------------------------------------------------------------------- the runs


@dataclasses.dataclass
class Run:
    """One ``graphtag export MODEL OUT [options]`` run, started in the background."""

    out: Path
    future: Future = None

    @property
    def proc(self) -> subprocess.CompletedProcess:
        return self.future.result()


def _checkpoints(root: Path) -> tuple[str, str]:
    """A tiny BERT saved by save_pretrained (weights far from a fresh init); a config.json alone."""
    import transformers

    from graphtag.exporter.examples import perturb_parameters

    config = transformers.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    perturb_parameters(model, seed=3, scale=0.1)
    model.save_pretrained(root / "bert")
    gpt2 = transformers.GPT2Config(
        n_layer=1, n_embd=32, n_head=2, vocab_size=100, bos_token_id=0, eos_token_id=0
    )
    gpt2.architectures = ["GPT2Model"]
    gpt2.save_pretrained(root / "gpt2-config")
    return str(root / "bert"), str(root / "gpt2-config")


# run name -> (MODEL and options, None or the fragments of its one error line). Fields:
# {fac} factories.py, {bert} save_pretrained dir, {config} config-only dir, {root}.
JOBS: dict[str, tuple[list[str], tuple[str, ...] | None]] = {
    # Successful exports, the slow ones first.
    "tiny-bert": (["graphtag.exporter.examples:tiny_bert"], None),
    "pretrained": (["{bert}"], None),
    "random-init": (["{config}", "--random-init"], None),
    "baseline": (["{fac}:net"], None),
    "sidecar-strip": (["{fac}:net", "--sidecar", "--strip-torch-metadata"], None),
    "torchscript": (["{fac}:net", "--exporter", "torchscript"], None),
    "auto": (["{fac}:branchy", "--exporter", "auto"], None),
    "default-route": (["{fac}:branchy"], None),
    "outline": (["{fac}:spare", "--outline", "*/Block.*"], None),
    "no-optimize-verbose": (["{fac}:net", "--no-optimize", "--verbose"], None),
    "keep-linear": (["{fac}:net", "--keep-torch-class", "Linear"], None),
    "keep-all": (["{fac}:net", "--keep-all-modules"], None),
    "input-specs": (["{fac}:net", "--input-specs", "{root}/specs.json"], None),
    "list-and-dict-inputs": (["{fac}:listed"], None),
    # Bad input.
    "unknown-hub-id": (["nobody-here/no-such-model-42"], ("not in the Hugging Face", "offline")),
    "nonexistent-path": (["{root}/no/such/dir"], ("no such model",)),
    "no-weights": (["{config}"], ("no weights", "--random-init")),
    "factory-raises": (["{fac}:raises"], ("raised ValueError", "shards are missing")),
    "factory-non-module": (["{fac}:not_a_module"], ("returned dict", "nn.Module")),
    "inputs-do-not-fit": (
        ["{fac}:net", "--input-specs", "{root}/wrong-specs.json"],
        ("inputs do not fit the model", "--input-specs"),
    ),
    "factory-inputs-do-not-fit": (
        ["{fac}:listed_ambiguous"],
        ("inputs do not fit the model", "passed as 2 positional, keywords scale"),
    ),
    "dynamo-fails": (
        ["{fac}:branchy", "--exporter", "dynamo"],
        ("the dynamo exporter failed (", "--exporter auto"),
    ),
    "every-route-fails": (["{fac}:unexportable"], ("every export route failed",)),
    "missing-output-folder": (["{fac}:net"], ("does not exist",)),
    "output-is-a-directory": (["{fac}:net"], ("is a directory",)),
}
BAD = sorted(name for name, (_, fragments) in JOBS.items() if fragments)
# Runs that start a fresh interpreter: the README command (and everything its first lines
# and quietness depend on, imports included), a plain factory export, a bad input.
SUBPROCESS = {"tiny-bert", "baseline", "factory-raises"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Iterator[dict[str, Run]]:
    """Every CLI run of this file, all started at once, WORKERS at a time; tests wait on theirs."""
    root = tmp_path_factory.mktemp("export-cli")
    (root / "factories.py").write_text(FACTORIES, encoding="utf-8")
    for name, shape in (("specs", [3, 8]), ("wrong-specs", [2, 5])):
        (root / f"{name}.json").write_text(json.dumps({"x": {"shape": shape, "dtype": "float32"}}))
    bert, config = _checkpoints(root)
    fields = {"fac": root / "factories.py", "bert": bert, "config": config, "root": root}
    runs = {}
    pool = CliPool(WORKERS)
    try:
        for name, (args, _) in JOBS.items():
            run = runs[name] = Run(root / name / "out.onnx")
            run.out.parent.mkdir()
            if name == "missing-output-folder":
                run.out = root / name / "missing" / "out.onnx"
            elif name == "output-is-a-directory":
                run.out.mkdir()
            argv = [arg.format(**fields) for arg in args]
            start = pool.run if name in SUBPROCESS else pool.fork
            run.future = start("export", argv[0], run.out, *argv[1:])
        yield runs
    finally:
        pool.close()


@pytest.fixture(scope="module")
def factories(runs) -> object:
    """The factories module, imported in this process (same models as the CLI's)."""
    path = runs["baseline"].out.parent.parent / "factories.py"
    spec = importlib.util.spec_from_file_location("_test_cli_export_factories", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ok(run: Run) -> onnx.ModelProto:
    """Exit 0, a valid ONNX file written, nothing else left in its folder; the model."""
    proc = run.proc
    assert proc.returncode == 0, proc.stderr
    assert "graphtag: error" not in proc.stderr
    assert "Traceback" not in proc.stderr
    expected = {run.out.name, run.out.name + ".graphtag.json"}
    left = {p.name for p in run.out.parent.iterdir()} - expected
    assert not left, f"temporary files left behind: {left}"
    onnx.checker.check_model(str(run.out), full_check=True)
    return onnx.load(run.out)


# ---------------------------------------------------------------------------- helpers


def _nodes(model: onnx.ModelProto):
    """Every node: main graph, subgraphs and local functions."""
    graphs = [model.graph, *model.functions]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            yield node
            for attr in node.attribute:
                graphs.extend([attr.g] if attr.HasField("g") else list(attr.graphs))


def _props(message) -> dict[str, str]:
    return {p.key: p.value for p in message.metadata_props}


def _tags(model: onnx.ModelProto) -> dict[str, str | None]:
    return {node.name: _props(node).get(metadata.MODULE) for node in _nodes(model)}


def _hierarchy(model: onnx.ModelProto) -> dict:
    return json.loads(_props(model)[metadata.HIERARCHY])


def _table(stdout: str) -> dict[str, str]:
    """The summary table printed on stdout: first column -> rest of the line."""
    rows = {}
    for line in stdout.splitlines():
        key, _, value = line.strip().partition("  ")
        if key and value.strip() and not set(key) <= {"-"}:
            rows[key] = value.strip()
    return rows


def _assert_all_tagged(model: onnx.ModelProto) -> None:
    known = {m["tag"] for m in _hierarchy(model)["modules"]}
    tags = _tags(model)
    assert tags
    untagged = [name for name, tag in tags.items() if tag is None]
    assert not untagged, untagged
    assert set(tags.values()) <= known


def _assert_quiet(proc: subprocess.CompletedProcess) -> None:
    """No torch progress lines, log records, FX dumps or Python warnings in the output."""
    for noise in ("[torch.onnx]", "torchvision is not installed", "Warning:", "def forward"):
        assert noise not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def _run_ort(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})


def _linear_tags(model: onnx.ModelProto) -> set[str]:
    return {
        m["tag"]
        for m in _hierarchy(model)["modules"]
        if m["class_name"].endswith("torch.nn.modules.linear.Linear")
    }


# ---------------------------------------------------------------------------- main job


def test_readme_main_job_tiny_bert(runs):
    run = runs["tiny-bert"]
    model = _ok(run)
    nodes = list(_nodes(model))
    table = _table(run.proc.stdout)
    assert table["exporter"] == table["route"] == "dynamo"
    assert _props(model)[metadata.EXPORT_ROUTE] == "dynamo"
    assert table["nodes"] == str(len(nodes))
    assert table["tagged"] == f"{len(nodes)} (100.0%)"
    assert table["modules"].startswith(f"{len(_hierarchy(model)['modules'])} kept")
    _assert_all_tagged(model)
    # torch's own metadata stays by default (see the --strip-torch-metadata test).
    assert any(metadata.TORCH_STACK_TRACE in _props(n) for n in nodes)
    _assert_quiet(run.proc)
    # The test environment installs a deliberately broken plugin (tests/plugins): every
    # command names it in one warning; nothing else may be said.
    lines = [line for line in run.proc.stderr.splitlines() if line.strip()]
    assert [line for line in lines if "'demo-broken'" not in line] == [
        "[1/4] loading graphtag.exporter.examples:tiny_bert",
        "[2/4] preparing example inputs",
        "[3/4] exporting (auto: dynamo, dynamo with traceable switches, TorchScript)",
        f"[4/4] writing {run.out}",
    ]


def test_save_pretrained_directory_loads_the_weights(runs):
    import transformers

    from graphtag.exporter.example_inputs import make_example_inputs

    model = _ok(runs["pretrained"])
    _assert_all_tagged(model)
    saved = transformers.BertModel.from_pretrained(runs["pretrained"].out.parents[1] / "bert")
    inputs = make_example_inputs(saved.eval(), saved.config)  # deterministic: the CLI's
    with torch.no_grad():
        expected = saved(*inputs.args, **inputs.kwargs).last_hidden_state.numpy()
    feeds = {k: v.numpy() for k, v in inputs.kwargs.items() if isinstance(v, torch.Tensor)}
    got = _run_ort(runs["pretrained"].out, feeds)[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_random_init_builds_from_config_alone(runs):
    folder = runs["random-init"].out.parents[1] / "gpt2-config"
    assert {p.name for p in folder.iterdir()} == {"config.json"}
    model = _ok(runs["random-init"])
    _assert_all_tagged(model)
    assert _hierarchy(model)["modules"][0]["class_name"].endswith("GPT2Model")


# ---------------------------------------------------------------------------- options


def test_sidecar_and_strip_torch_metadata(runs):
    baseline, model = _ok(runs["baseline"]), _ok(runs["sidecar-strip"])
    out = runs["sidecar-strip"].out
    sidecar = json.loads(out.with_name(out.name + ".graphtag.json").read_text("utf-8"))
    assert sidecar["hierarchy"] == _hierarchy(model)
    assert sidecar["nodes"] == _tags(model)
    assert sidecar["version"] == _props(model)[metadata.VERSION]

    # Exactly the two bulky keys go; name_scopes (what tags come from) stays.
    before = {n.name: set(_props(n)) for n in _nodes(baseline)}
    after = {n.name: set(_props(n)) for n in _nodes(model)}
    assert after.keys() == before.keys()
    assert any(STRIPPED & keys for keys in before.values())
    for name, keys in after.items():
        assert keys == before[name] - STRIPPED, name
    assert all(metadata.TORCH_NAME_SCOPES in keys for keys in after.values())


def test_torchscript_exporter(runs, factories):
    baseline, model = _ok(runs["baseline"]), _ok(runs["torchscript"])
    assert _table(runs["torchscript"].proc.stdout)["exporter"] == "torchscript"
    _assert_all_tagged(model)
    # The same modules show up in the tags as with dynamo.
    assert set(_tags(model).values()) == set(_tags(baseline).values())
    module, (x,) = factories.net()
    with torch.no_grad():
        expected = module(x).numpy()
    (name,) = [i.name for i in model.graph.input]
    np.testing.assert_allclose(
        _run_ort(runs["torchscript"].out, {name: x.numpy()})[0], expected, atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("case", ["auto", "default-route"])
def test_auto_falls_back_to_torchscript_when_dynamo_fails(runs, case):
    run = runs[case]
    model = _ok(run)
    _assert_all_tagged(model)
    table = _table(run.proc.stdout)
    assert table["exporter"] == table["route"] == "torchscript"
    assert _props(model)[metadata.EXPORT_ROUTE] == "torchscript"
    lines = run.proc.stderr.splitlines()
    # One line per route tried before, then the route that worked.
    routes = [line for line in lines if line.startswith("graphtag:") and " route" in line]
    assert len(routes) == 3, run.proc.stderr
    assert routes[0].startswith("graphtag: warning: the dynamo route failed (")
    assert "GuardOnDataDependentSymNode" in routes[0]
    assert routes[1] == (
        "graphtag: warning: the dynamo-traceable route was skipped "
        "(the model exposes no implementation switches)"
    )
    assert routes[2] == "graphtag: exported by the torchscript route"
    # The tracer's warning about the frozen branch reaches the user, on one line.
    (tracer,) = [line for line in lines if "TracerWarning" in line]
    assert tracer.startswith("graphtag: warning:")
    assert "def forward" not in run.proc.stderr  # torch.export's partial-graph dump


def test_every_route_failing_names_each_cause_and_writes_nothing(runs):
    proc = runs["every-route-fails"].proc
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.startswith("graphtag: error:"))
    assert lines[start] == "graphtag: error: every export route failed:"
    rungs = lines[start + 1 : start + 4]
    assert [line.split(":")[0].strip() for line in rungs] == [
        "dynamo",
        "dynamo-traceable",
        "torchscript",
    ], proc.stderr
    assert "svd" in rungs[0] and "svd" in rungs[2]
    assert (
        rungs[1].strip()
        == "dynamo-traceable: skipped: the model exposes no implementation switches"
    )
    assert len(lines) == start + 4, proc.stderr  # nothing after the three causes
    assert proc.returncode == 1  # the model cannot be exported (usage errors exit 2)


def test_outline_reports_skipped_modules_from_the_pipeline(runs, factories):
    run = runs["outline"]
    model = _ok(run)
    table = _table(run.proc.stdout)
    assert table["functions"] == "1 for 1 modules"
    assert [f.name for f in model.functions] == ["Block"]
    assert (
        "graphtag: warning: function-outlining: not outlined /Spare/Block.spare: "
        "no nodes in the main graph"
    ) in run.proc.stderr.splitlines()
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    (name,) = [i.name for i in model.graph.input]
    module, _ = factories.spare()
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run_ort(run.out, {name: x})[0], expected, atol=1e-5, rtol=0)


def test_no_optimize_keeps_the_unoptimized_graph_and_verbose_shows_torch(runs):
    baseline, model = _ok(runs["baseline"]), _ok(runs["no-optimize-verbose"])
    _assert_all_tagged(model)
    # The constant subexpression in Net.forward is folded only by the optimizer.
    assert len(list(_nodes(model))) > len(list(_nodes(baseline)))
    proc = runs["no-optimize-verbose"].proc
    assert "[torch.onnx]" in proc.stdout + proc.stderr
    _assert_quiet(runs["baseline"].proc)


def test_keep_torch_class_and_keep_all_modules(runs, factories):
    baseline = _ok(runs["baseline"])
    linear, everything = _ok(runs["keep-linear"]), _ok(runs["keep-all"])
    assert not _linear_tags(baseline)
    module, _ = factories.net()
    for model in (linear, everything):
        _assert_all_tagged(model)
        tags = _linear_tags(model)
        assert len(tags) == sum(isinstance(m, torch.nn.Linear) for m in module.modules())
        # Each Linear now owns the nodes it computes: its tag is on some node.
        assert tags <= set(_tags(model).values())
        assert tags.isdisjoint(_tags(baseline).values())
    # keep-all: every module of the model has its own tag, ReLU included.
    assert len(_hierarchy(everything)["modules"]) == len(list(module.modules()))
    assert len(_hierarchy(linear)["modules"]) < len(_hierarchy(everything)["modules"])


def test_input_specs(runs):
    model = _ok(runs["input-specs"])
    (graph_input,) = model.graph.input
    assert graph_input.name == "x"
    assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim] == [3, 8]
    _assert_all_tagged(model)


def test_a_list_and_a_dict_as_positional_inputs(runs, factories):
    # The factory's ExampleInputs puts the dict in args: torch must not take it for kwargs.
    model = _ok(runs["list-and-dict-inputs"])
    _assert_all_tagged(model)
    module, inputs = factories.listed()
    with torch.no_grad():
        expected = module(*inputs.args).numpy()
    (pair, extra) = inputs.args
    flat = [*pair, extra["scale"]]  # the exporter's order: the arguments flattened
    feeds = {i.name: t.numpy() for i, t in zip(model.graph.input, flat, strict=True)}
    (got,) = _run_ort(runs["list-and-dict-inputs"].out, feeds)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_quiet_torch_also_quiets_the_loggers_of_torchs_onnx_optimizer():
    from graphtag.exporter.noise import quiet_torch

    # The loggers of torch's ONNX optimizer: its own, and the onnx_ir passes it runs.
    loggers = [
        logging.getLogger("onnx_ir.passes.common.initializer_deduplication"),
        logging.getLogger("onnxscript.optimizer"),
    ]
    before = [logger.getEffectiveLevel() for logger in loggers]
    with quiet_torch():
        assert not any(logger.isEnabledFor(logging.WARNING) for logger in loggers)
    assert [logger.getEffectiveLevel() for logger in loggers] == before
    with quiet_torch(verbose=True):  # --verbose: left as they were
        assert [logger.getEffectiveLevel() for logger in loggers] == before


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("case", BAD)
def test_bad_input_fails_cleanly(runs, case):
    run = runs[case]
    assert_clean_failure(run.proc, *JOBS[case][1])
    _assert_quiet(run.proc)
    assert not run.proc.stdout.strip(), run.proc.stdout  # no summary table
    folder = run.out.parent
    if case == "missing-output-folder":
        assert not folder.exists()
    else:  # nothing written, no temporary file left; a directory in the way stays
        assert {p.name for p in folder.iterdir()} == ({run.out.name} if run.out.is_dir() else set())
