"""Exports of torch constructs the zoo does not hold, end to end against torch and ORT.

Each model goes through ``graphtag.export`` to a file: the topology equals a plain
``torch.onnx.export`` with the same options, ``graphtag validate`` passes on the file,
and ONNX Runtime matches PyTorch.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.utils import _pytree as pytree

import graphtag
from graphtag.analysis.liveness import dead_nodes
from graphtag.checks.compare import compare_topology
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes
from graphtag.core.hierarchy import Hierarchy
from graphtag.exporter.module_tree import FilterConfig
from graphtag.tools.profile import RunSettings
from graphtag.tools.profile.collect import collect_ort


def _export(module: torch.nn.Module, args: tuple, path, *, rtol: float = 1e-5, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = graphtag.export(module, args, f=path, verbose=False, **options)
        plain = torch.onnx.export(module, args, dynamo=True, verbose=False).model
    saved = graphtag.load(path)
    diff = compare_topology(saved, plain)
    assert diff.identical, diff.report()
    report = graphtag.validate(saved, path=path)
    assert report.passed, [(r.rule, r.detail) for r in report.results if r.status == "FAIL"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args, strict=True)}
    got = session.run(None, feeds)
    with torch.no_grad():
        expected = pytree.tree_leaves(module(*args))
    assert len(got) == len(expected)
    for actual, wanted in zip(got, expected, strict=True):
        np.testing.assert_allclose(actual, wanted.numpy(), rtol=rtol, atol=rtol / 10)
    return result, saved, report


class _Recurrent(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(50, 16)
        self.rnn = torch.nn.LSTM(16, 24, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(24, 5)

    def forward(self, ids):
        hidden, _ = self.rnn(self.emb(ids))
        return self.head(hidden[:, -1])


class _Parametrized(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        parametrize = torch.nn.utils.parametrizations
        self.fc = parametrize.weight_norm(torch.nn.Linear(6, 6))
        self.sn = parametrize.spectral_norm(torch.nn.Linear(6, 3))

    def forward(self, x):
        return self.sn(torch.tanh(self.fc(x)))


class _TiedHooked(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(40, 8)
        self.mix = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 40, bias=False)
        self.head.weight = self.emb.weight
        self.mix.register_forward_hook(lambda module, inputs, out: out * 0.5)

    def forward(self, ids):
        return self.head(torch.relu(self.mix(self.emb(ids))))


def _half_mlp():
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    return mlp.half(), (torch.randn(3, 8).half(),)


# name -> (model, args) factory; each a torch.nn construct the zoo's models do not use.
CONSTRUCTS = {
    "lstm": lambda: (_Recurrent(), (torch.randint(0, 50, (2, 7)),)),
    "nn-transformer": lambda: (
        torch.nn.Transformer(16, 2, 1, 1, 32, dropout=0.0, batch_first=True),
        (torch.randn(1, 5, 16), torch.randn(1, 4, 16)),
    ),
    "parametrizations": lambda: (_Parametrized(), (torch.randn(2, 6),)),
    "tied-and-hooked": lambda: (_TiedHooked(), (torch.randint(0, 40, (2, 5)),)),
    "data-parallel": lambda: (torch.nn.DataParallel(_Parametrized()), (torch.randn(2, 6),)),
    "float16": _half_mlp,
}


@pytest.mark.parametrize("name", CONSTRUCTS)
def test_torch_nn_constructs_export_with_every_module_kept(tmp_path, name):
    torch.manual_seed(0)
    module, args = CONSTRUCTS[name]()
    module.eval()
    rtol = 1e-2 if name == "float16" else 1e-4
    _, saved, _ = _export(module, args, tmp_path / f"{name}.onnx", rtol=rtol,
                          filter_config=FilterConfig(keep_all=True))  # fmt: skip
    tags = {metadata.node_tag(node) for node in iter_all_nodes(saved)}
    assert None not in tags
    # Nodes sit in the modules below the root, not all at the top (validate checked that
    # every tag is a module of the stored hierarchy).
    root = Hierarchy.from_model(saved).root
    assert any(tag != root for tag in tags), tags


class Bags(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bag = torch.nn.EmbeddingBag(30, 8, mode="mean")
        self.out = torch.nn.Linear(8, 2)

    def forward(self, ids, offsets):
        return self.out(self.bag(ids, offsets))


def test_embedding_bag_records_follow_the_saved_graph(tmp_path):
    """torch's optimizer folds EmbeddingBag's per-bag If chains and leaves one dead
    Identity whose stale uses sat in the dropped bodies: the consumer records must follow
    the graph as saved, and the dead node torch left is recorded, not reported."""
    torch.manual_seed(0)
    args = (torch.randint(0, 30, (10,)), torch.tensor([0, 4]))
    path = tmp_path / "bags.onnx"
    _, saved, report = _export(Bags().eval(), args, path)
    assert {r.rule: r.status for r in report.results}["consumers"] == "PASS"
    assert {n.name for n in dead_nodes(saved)} == metadata.exporter_dead_nodes(saved)
    # ONNX Runtime expands the loop body's CastLike into unnamed Casts it names Cast_<n>
    # at run time: their kernels still reach a module.
    measured = collect_ort(path, RunSettings(warmup=1, runs=2))
    assert measured.kernel_events and measured.mapped_events == measured.kernel_events
    assert not any("not in the saved optimized graph" in note for note in measured.notes)


class Branches(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Linear(4, 4)

    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda t: self.a(t), lambda t: self.b(t) - 1, (x,))


def test_nodes_inside_cond_branches_get_the_module_whose_weights_they_read(tmp_path):
    """torch's exporter records no module for nodes inside torch.cond branches."""
    torch.manual_seed(0)
    module = Branches().eval()
    filter_config = FilterConfig(keep_all=True)
    _, saved, _ = _export(module, (torch.randn(2, 4),), tmp_path / "cond.onnx",
                          filter_config=filter_config)  # fmt: skip
    in_bodies = {
        node.op_type + ":" + (metadata.node_tag(node) or "")
        for node in iter_all_nodes(saved)
        if node.graph is not saved.graph
    }
    # The Sub follows its producer (propagation cannot tell it ran in the lambda).
    assert in_bodies == {
        "Gemm:/Branches/Linear.a",
        "Gemm:/Branches/Linear.b",
        "Sub:/Branches/Linear.b",
    }


def test_verify_says_a_module_inside_a_cond_branch_runs_in_the_body():
    from graphtag.exporter.verify import verify_modules

    torch.manual_seed(0)
    x = torch.randn(2, 4).abs()  # the true branch runs: self.a
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checks = verify_modules(Branches().eval(), (x,), filter_config=FilterConfig(keep_all=True))
    by_tag = {check.tag: check for check in checks}
    assert by_tag["/Branches"].status == "OK"
    assert by_tag["/Branches/Linear.b"].status == "NOT-EXECUTED"
    inside = by_tag["/Branches/Linear.a"]
    assert inside.status == "NO-NODES"
    assert inside.reason.startswith("computed inside a control-flow body of If node")
    assert inside.reason.endswith("(/Branches)")


class Scaled(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 3)

    def forward(self, x, extra=None):
        scale = 1.0 if extra is None else extra["scale"]
        return self.fc(x) * scale


def test_a_trailing_dict_is_kwargs_as_in_torch_unless_kwargs_are_given():
    torch.manual_seed(0)
    module, x = Scaled().eval(), torch.randn(2, 3)
    extra = {"scale": torch.tensor(2.0)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # kwargs None: torch.onnx.export's convention, the dict holds keyword arguments.
        as_kwargs = graphtag.export(module, (x, {"extra": extra}), verbose=False).model
        # kwargs given (even empty): the dict is the last positional argument.
        as_given = graphtag.export(module, (x, extra), {}, verbose=False).model
    assert [v.name for v in as_kwargs.graph.inputs] == [v.name for v in as_given.graph.inputs]
    assert len(as_given.graph.inputs) == 2  # x and the dict's tensor: the scale is an input


class _Counting(torch.nn.Module):
    """A forward that updates buffers: one in place (a running mean), one rebound (a count)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(6, 6)
        self.register_buffer("running", torch.zeros(6))
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        y = self.fc(x)
        self.running.mul_(0.5).add_(y.mean(0))
        self.calls = self.calls + 1
        return y - self.running * self.calls


class Stateful(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.count = _Counting()
        self.head = torch.nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.count(x))


_STATEFUL_SOURCE = """
import torch
from tests.test_export_constructs import Stateful

def stateful():
    torch.manual_seed(0)
    return Stateful().eval(), (torch.randn(3, 6),)
"""


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: b.clone() for name, b in module.named_buffers()}


def _eager_runners():
    from graphtag.exporter.example_inputs import ExampleInputs, check_inputs_fit
    from graphtag.exporter.module_timing import time_modules
    from graphtag.exporter.verify import capture_calls

    names = {"/Stateful": "", "/Stateful/_Counting": "count"}
    return {
        "check_inputs_fit": lambda m, x: check_inputs_fit(m, ExampleInputs((x,), {})),
        "capture_calls": lambda m, x: capture_calls(m, ExampleInputs((x,), {}), names),
        "time_modules": lambda m, x: time_modules(
            m, ExampleInputs((x,), {}), names, warmup=1, runs=2
        ),
    }


@pytest.mark.parametrize("runner", ["check_inputs_fit", "capture_calls", "time_modules"])
def test_graphtags_eager_runs_leave_the_buffers_a_forward_updates_as_given(runner):
    torch.manual_seed(0)
    module, x = Stateful().eval(), torch.randn(3, 6)
    before = _state(module)
    buffers = dict(module.named_buffers())
    _eager_runners()[runner](module, x)
    after = dict(module.named_buffers())
    assert all(after[name] is buffers[name] for name in before)  # the rebound one too
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    with torch.no_grad():  # the check above can fail: a plain forward does move them
        module(x)
    assert not torch.equal(module.count.running, before["count.running"])
    assert module.count.calls is not buffers["count.calls"]


def test_a_stateful_model_source_exports_and_verifies_in_the_state_given(tmp_path, monkeypatch):
    from graphtag.exporter.sources import load_model, prepare_inputs
    from graphtag.exporter.verify import verify_modules

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent))
    (tmp_path / "stateful_factory.py").write_text(_STATEFUL_SOURCE)
    spec = f"{tmp_path / 'stateful_factory.py'}:stateful"

    # The CLI's steps: load the source, check its inputs (one eager run), export.
    loaded = load_model(spec)
    inputs = prepare_inputs(loaded)
    path = tmp_path / "stateful.onnx"
    _export(loaded.module, inputs.args, path)  # ORT equals the module's next forward
    fresh = load_model(spec).module
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: inputs.args[0].numpy()})
    with torch.no_grad():
        first = fresh(*inputs.args).numpy()  # a plain export holds the state before it
        second = fresh(*inputs.args).numpy()
    np.testing.assert_allclose(got, first, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, second, rtol=1e-3, atol=1e-4)

    module = load_model(spec).module
    checks = verify_modules(module, inputs)
    assert [(c.tag, c.status) for c in checks] == [
        ("/Stateful", "OK"),
        ("/Stateful/_Counting", "OK"),
    ]


def test_export_takes_the_file_third_as_torch_onnx_export_does(tmp_path):
    torch.manual_seed(0)
    module, x = (
        torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh()).eval(),
        torch.randn(2, 4),
    )
    path = tmp_path / "positional.onnx"
    result = graphtag.export(module, (x,), path, verbose=False)  # torch's (model, args, f)
    assert result.model is not None and path.exists()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, module(x).numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(graphtag.GraphtagError, match="kwargs must be a dict.*got list"):
        graphtag.export(module, (x,), [x], verbose=False)


class Sampler(torch.nn.Module):
    """Draws 3 of 8 indices without replacement (ViLT picks image patches this way)."""

    def __init__(self) -> None:
        super().__init__()
        self.score = torch.nn.Linear(4, 8)
        # Zero weight: never drawn; 0.5 of the mass on index 0.
        self.register_buffer("weights", torch.tensor([0.5, 0, 0.3, 0, 0.2, 0, 0, 0]))

    def forward(self, x):
        picks = torch.multinomial(self.weights.expand(x.shape[0], 8), 3)
        return torch.gather(self.score(x), 1, picks), picks


def test_multinomial_without_replacement_exports_through_graphtags_lowering(tmp_path):
    import onnx

    from graphtag.exporter.verify import verify_modules

    torch.manual_seed(0)
    module, x = Sampler().eval(), torch.randn(2, 4)
    with warnings.catch_warnings(), pytest.raises(Exception, match="replacement=False"):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(tmp_path / "plain.onnx"), dynamo=False)

    path = tmp_path / "sampler.onnx"
    result = graphtag.export(module, (x,), f=path, exporter="torchscript", verbose=False)
    assert result.route == "torchscript"
    onnx.checker.check_model(str(path), full_check=True)
    assert graphtag.validate(graphtag.load(path), path=path).passed
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    firsts = []
    for _ in range(400):
        scores, picks = session.run(None, {name: x.numpy()})
        assert picks.shape == (2, 3) and picks.dtype == np.int64
        for row in picks:  # without replacement, and never an index of zero weight
            assert sorted(row.tolist()) == [0, 2, 4]
        firsts.extend(picks[:, 0].tolist())
        with torch.no_grad():
            expected = module.score(x).numpy()
        np.testing.assert_allclose(scores, np.take_along_axis(expected, picks, 1), rtol=1e-5)
    # The first draw is index 0 with probability 0.5 (800 draws: 5 standard deviations).
    assert 0.41 < firsts.count(0) / len(firsts) < 0.59

    # torch's own translation is back after the export.
    with warnings.catch_warnings(), pytest.raises(Exception, match="replacement=False"):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(tmp_path / "again.onnx"), dynamo=False)
    # Every draw is an order of {0, 2, 4}: PyTorch's and ONNX Runtime's outputs match up
    # to order (REORDERED), or exactly when both drew the same order (OK).
    (check,) = verify_modules(module, (x,), exporter="torchscript")
    assert check.tag == "/Sampler" and check.status in ("OK", "REORDERED"), check.reason


def test_a_users_own_multinomial_translation_is_used_and_kept(tmp_path):
    import onnx

    def users(g, probabilities, num_samples, replacement=False, generator=None):
        # Their choice: the most likely indices, no sampling (an ArgMax-like TopK).
        k = g.op("Constant", value_t=torch.tensor([3], dtype=torch.int64))
        return g.op("TopK", probabilities, k, axis_i=-1, outputs=2)[1]

    torch.manual_seed(0)
    module, x = Sampler().eval(), torch.randn(2, 4)
    torch.onnx.register_custom_op_symbolic("aten::multinomial", users, 10)
    try:
        path = tmp_path / "users.onnx"
        graphtag.export(module, (x,), f=path, exporter="torchscript", verbose=False)
        ops = {node.op_type for node in onnx.load(str(path)).graph.node}
        assert "RandomUniformLike" not in ops  # graphtag's lowering was not used
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        _, picks = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        assert picks.tolist() == [[0, 2, 4], [0, 2, 4]]  # theirs: sorted by weight
        # Still registered after graphtag's export: a second export uses it again.
        again = tmp_path / "again.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (x,), str(again), dynamo=False, opset_version=17)
        assert "RandomUniformLike" not in {n.op_type for n in onnx.load(str(again)).graph.node}
        assert "TopK" in {n.op_type for n in onnx.load(str(again)).graph.node}
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::multinomial", 10)
