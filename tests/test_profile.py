"""graphtag profile without torch: the trace reader, the median run, the tree, inputs,
providers, attribution on hand-built models (control flow, duplicate names, no tags),
the command, --compare and the report reading the profile.

The figures are checked against ONNX Runtime's own trace file, read here with plain
``json`` (``--save-trace``), not against graphtag's reading of it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from types import SimpleNamespace

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from cli_helpers import assert_clean_failure, digest, run_cli
from onnx import TensorProto
from onnx import helper as oh
from onnx_builders import tagged_mlp

import graphtag
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.core.input_specs import load_input_specs
from graphtag.tools.profile import ModuleProfile, RunSeries, RunSettings, collect_ort
from graphtag.tools.profile.inputs import make_feeds
from graphtag.tools.profile.series import median_run, summarize
from graphtag.tools.profile.session import resolve_providers
from graphtag.tools.profile.trace import parse_events, read_trace
from graphtag.tools.profile.tree import SYNTHETIC_ROOT, ModuleTree
from graphtag.tools.report import report_data
from graphtag.tools.report.profile import load_profile, parse_profile

FAST = RunSettings(warmup=1, runs=3, threads=1)


def _cli(capsys, *args) -> SimpleNamespace:
    """The command run in this process (faster than a subprocess; same output path)."""
    from graphtag.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


# -- ONNX Runtime's own trace, read independently --------------------------------------


def raw_runs(trace_path) -> list[list[dict]]:
    """Kernel events per model_run, from the trace file with plain json."""
    with open(trace_path, encoding="utf-8") as f:
        events = json.load(f)
    windows = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e["cat"] == "Session" and e["name"] == "model_run"
    )
    runs: list[list[dict]] = [[] for _ in windows]
    for e in events:
        if e["cat"] == "Node" and e["name"].endswith("_kernel_time"):
            for i, (start, end) in enumerate(windows):
                if start <= e["ts"] <= end:
                    runs[i].append(e)
    return runs


def top_level_us(kernels: list[dict]) -> int:
    """Time of a run's kernels not inside another kernel (a Loop's body is inside it)."""
    total, end = 0, -1
    for e in sorted(kernels, key=lambda e: (e["ts"], -e["dur"])):
        if e["ts"] >= end:
            total += e["dur"]
            end = e["ts"] + e["dur"]
    return total


def assert_consistent(data: dict) -> None:
    """Self times add up to the run's kernel time; total = self + children everywhere."""
    modules = data["modules"]
    us = {tag: round(m["self_ms"] * 1000) for tag, m in modules.items()}
    assert sum(us.values()) == round(data["kernel_ms"] * 1000)
    children: dict[str, list[str]] = {tag: [] for tag in modules}
    for tag in modules:
        parent = tag.rsplit("/", 1)[0] if tag.count("/") > 1 else None
        if parent is not None:
            children[parent].append(tag)
        elif tag != SYNTHETIC_ROOT and len([t for t in modules if t.count("/") == 1]) > 1:
            children[SYNTHETIC_ROOT].append(tag)
    for tag, entry in modules.items():
        below = sum(round(modules[c]["total_ms"] * 1000) for c in children[tag])
        assert round(entry["total_ms"] * 1000) == us[tag] + below, tag


# -- trace reader ----------------------------------------------------------------------


def _event(cat, name, ts, dur, tid=1, op="Op"):
    return {"cat": cat, "pid": 1, "tid": tid, "dur": dur, "ts": ts, "ph": "X", "name": name,
            "args": {"op_name": op} if cat == "Node" else {}}  # fmt: skip


def test_nested_kernels_count_once_and_runs_are_split():
    events = [
        _event("Session", "model_run", 100, 100),
        _event("Node", "loop_kernel_time", 110, 60),
        _event("Node", "body_a_kernel_time", 115, 20),
        _event("Node", "body_b_kernel_time", 140, 25),
        _event("Node", "after_kernel_time", 175, 10),
        _event("Node", "other_thread_kernel_time", 120, 30, tid=2),
        _event("Node", "x_fence_before", 110, 1),
        _event("Session", "model_run", 300, 50),
        _event("Node", "after_kernel_time", 310, 7),
        _event("Node", "stray_kernel_time", 500, 5),
    ]
    trace = parse_events(events)
    assert trace.wall_us == [100, 50] and trace.outside == 1 and trace.events == len(events)
    first = {k.node: k.exclusive_us for k in trace.runs[0]}
    assert first == {"loop": 15, "body_a": 20, "body_b": 25, "after": 10, "other_thread": 30}
    assert [(k.node, k.exclusive_us) for k in trace.runs[1]] == [("after", 7)]


def _ort_line(e: dict) -> str:
    """One event the way ONNX Runtime's profiler writes it (the name not JSON-escaped)."""
    args = ",".join(f'"{k}" : "{v}"' for k, v in e["args"].items())
    return (
        f'{{"cat" : "{e["cat"]}","pid" :{e["pid"]},"tid" :{e["tid"]},"dur" :{e["dur"]},'
        f'"ts" :{e["ts"]},"ph" : "X","name" :"{e["name"]}","args" : {{{args}}}}}'
    )


def test_fast_reader_equals_json_and_reads_names_as_written(tmp_path):
    events = [
        _event("Session", "model_run", 0, 100),
        _event("Node", "a_kernel_time", 5, 10),
        _event("Node", "/m/b_kernel_time", 20, 10),
    ]
    ort_layout = tmp_path / "ort.json"
    ort_layout.write_text("[\n" + ",\n".join(map(_ort_line, events)) + "\n]\n")
    assert json.loads(ort_layout.read_text()) == events  # the writer above is faithful
    compact = tmp_path / "compact.json"
    compact.write_text(json.dumps(events))
    want = parse_events(events)
    assert read_trace(ort_layout) == want == read_trace(compact)
    # ONNX Runtime does not escape names: a quote or backslash is the node's own.
    odd = [*events, _event("Node", 'we"ird\\name_kernel_time', 40, 10)]
    ort_layout.write_text("[\n" + ",\n".join(map(_ort_line, odd)) + "\n]\n")
    assert [k.node for k in read_trace(ort_layout).runs[0]] == ["a", "/m/b", 'we"ird\\name']
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(GraphtagError, match="not an ONNX Runtime profile"):
        read_trace(bad)


def test_reader_takes_one_event_per_line_in_other_spacing(tmp_path):
    """ONNX Runtime's exact spacing is read fastest; other spacing, one event per line,
    is still read by the line reader, not by the slow decoder."""
    from graphtag.tools.profile import trace

    events = [
        _event("Session", "model_run", 0, 100),
        _event("Node", "a_kernel_time", 5, 10),
        _event("Node", "loop_kernel_time", 20, 50),
        _event("Node", "body_kernel_time", 30, 15),
        _event("Session", "model_run", 200, 100),
        _event("Node", "a_kernel_time", 210, 12),
    ]
    spaced = tmp_path / "spaced.json"
    spaced.write_text("[\n" + ",\n".join(map(json.dumps, events)) + "\n]\n")
    data = spaced.read_bytes()
    assert not trace._EXACT.findall(data) and len(trace._SPACED.findall(data)) == len(events)
    got = trace._scan(data)
    assert got is not None and got == parse_events(events)
    assert [list(run) for run in got.runs] == [
        [("a", 10), ("loop", 35), ("body", 15)],
        [("a", 12)],
    ]


def _write_slowly(lines: list[str], path, pause: float = 0.002) -> None:
    """Append ``lines`` to ``path`` a few at a time, cutting some lines in two, as a
    buffered writer would."""
    import time

    text = "".join(lines).encode()
    with open(path, "ab") as out:
        for start in range(0, len(text), 97):  # cuts lines anywhere
            out.write(text[start : start + 97])
            out.flush()
            time.sleep(pause)


@pytest.mark.parametrize("layout", ["ort", "spaced", "one-line"])
def test_trace_read_while_it_is_written_equals_reading_it_after(tmp_path, layout):
    """The helper process parses the lines as they are written; another layout (one JSON
    line) is refused by the helper and read here: the same trace either way."""
    import threading

    from graphtag.tools.profile.trace import TraceFollower

    # ONNX Runtime writes names unescaped; a JSON writer (the spaced lines here) escapes.
    odd = "plain" if layout == "spaced" else 'we"ird'
    events = []
    for run in range(3):
        base = 1000 * run
        events += [
            _event("Node", "loop_kernel_time", base + 10, 60),
            _event("Node", "body_kernel_time", base + 20, 15),
            _event("Node", f"{odd}_kernel_time", base + 80, 5, tid=2),
            _event("Session", "model_run", base, 100),
        ]
    if layout == "one-line":
        lines = [json.dumps(events) + "\n"]
    else:
        line = _ort_line if layout == "ort" else json.dumps
        lines = ["[\n", *(line(e) + ",\n" for e in events[:-1]), line(events[-1]) + "\n", "]\n"]
    path = tmp_path / "trace.json"
    path.write_bytes(b"")
    with TraceFollower() as follower:
        assert follower.wait_ready()
        follower.follow(path)
        writer = threading.Thread(target=_write_slowly, args=(lines, path))
        writer.start()
        writer.join()
        given = follower._collect(path)
    assert (given is None) == (layout == "one-line")
    want = read_trace(path)
    assert [list(run) for run in want.runs] == [[("loop", 45), ("body", 15), (odd, 5)]] * 3
    if given is not None:
        assert given == want
    with TraceFollower() as follower:  # the public path: the helper's, or read here
        assert follower.wait_ready()
        follower.follow(path)
        assert follower.result(path) == want


def test_trace_is_read_here_when_the_helper_cannot_start(tmp_path, monkeypatch):
    from graphtag.tools.profile import trace

    path = tmp_path / "trace.json"
    path.write_text("[\n" + _ort_line(_event("Session", "model_run", 0, 10)) + "\n]\n")
    monkeypatch.setattr(trace.sys, "executable", str(tmp_path / "no-such-python"))
    with trace.TraceFollower() as follower:
        assert not follower.wait_ready()
        follower.follow(path)
        assert follower.result(path) == read_trace(path)


def test_attribution_sums_per_module_and_keeps_unknown_and_untagged_apart():
    """Per run: each module's exclusive time and kernel calls, modules in the order their
    first kernel ran; kernels of untagged or unknown nodes in the root, counted apart."""
    from graphtag.tools.profile.collect import _attribute
    from graphtag.tools.profile.tree import SYNTHETIC_ROOT

    events = [
        _event("Session", "model_run", 0, 100),
        _event("Node", "b_kernel_time", 1, 4),
        _event("Node", "a1_kernel_time", 10, 5),
        _event("Node", "gone_kernel_time", 20, 3),
        _event("Node", "a2_kernel_time", 30, 7),
        _event("Session", "model_run", 200, 50),
        _event("Node", "a1_kernel_time", 201, 6),
        _event("Node", "a2_kernel_time", 210, 8),
    ]
    trace = parse_events(events)
    tags = {"a1": ("/M/A", "MatMul", 1), "a2": ("/M/A", "Add", 2), "b": ("", "Relu", 3)}
    got = _attribute(trace.runs, trace.wall_us, tags, {1: "exact", 2: "fused"})
    first, second = got.series.self_ns
    assert list(first.items()) == [(SYNTHETIC_ROOT, 4000 + 3000), ("/M/A", 12000)]
    assert second == {"/M/A": 14000}
    assert got.series.calls == [{SYNTHETIC_ROOT: 2, "/M/A": 2}, {"/M/A": 2}]
    assert got.series.wall_ns == [100_000, 50_000]
    assert (got.events, got.untagged_events, got.unknown_events) == (6, 1, 1)
    assert got.unknown == {"gone"}
    # The median run (the lower middle of 19 and 14 µs) is the second.
    assert got.ops == {"/M/A": {"MatMul": 6000, "Add": 8000}}
    assert got.match_ns == {"exact": 6000, "fused": 8000}


# -- median run, tree ------------------------------------------------------------------


def test_median_run_figures_add_up_with_spreads():
    tree = ModuleTree(["/M/A", "/M/B/C", "/M"])
    series = RunSeries(
        self_ns=[
            {"/M": 10, "/M/A": 50, "/M/B/C": 40},  # 100
            {"/M": 12, "/M/A": 30, "/M/B/C": 200},  # 242
            {"/M": 11, "/M/A": 90, "/M/B/C": 20, "": 5},  # 126, "" lands in the root
        ],
        calls=[{"/M/A": 1}, {"/M/A": 1}, {"/M/A": 2}],
        wall_ns=[150, 300, 160],
    )
    assert median_run(series.busy_ns()) == 2
    summary = summarize(series, tree)
    m = summary.modules
    assert summary.run == 2 and summary.run_busy_ns == 126 and summary.run_wall_ns == 160
    assert [m[t].self_ns for t in ("/M", "/M/A", "/M/B", "/M/B/C")] == [16, 90, 0, 20]
    assert sum(t.self_ns for t in m.values()) == 126
    assert m["/M/B"].total_ns == 20 and m["/M"].total_ns == 126
    assert (m["/M/A"].self_min_ns, m["/M/A"].self_median_ns, m["/M/A"].self_max_ns) == (30, 50, 90)
    assert m["/M/A"].calls == 2


def test_tree_roots_order_and_folding():
    tree = ModuleTree(["/M/B/X", "/M/A", "/M"], order_hint=["/M", "/M/A", "/M/B", "/M/B/X"])
    assert tree.root == "/M" and tree.order == ["/M", "/M/A", "/M/B", "/M/B/X"]
    assert tree.depth["/M/B/X"] == 2 and tree.folded_into(1)["/M/B/X"] == "/M/B"
    several = ModuleTree(["/A/x", "/B"])
    assert several.root == SYNTHETIC_ROOT and several.order == ["", "/A", "/A/x", "/B"]
    assert several.label("") == "(model)"
    assert ModuleTree([]).order == [SYNTHETIC_ROOT]


# -- inputs, providers -----------------------------------------------------------------


def _typed_model() -> ir.Model:
    ids = ir.Value(name="ids", shape=ir.Shape(["batch", 4]), type=ir.TensorType(ir.DataType.INT64))
    x = ir.Value(name="x", shape=ir.Shape([2, 3]), type=ir.TensorType(ir.DataType.FLOAT))
    node = ir.Node("", "Identity", [x], name="id")
    graph = ir.Graph([ids, x], [node.outputs[0]], nodes=[node], opset_imports={"": 21})
    return ir.Model(graph, ir_version=10)


def test_inputs_from_types_and_specs(tmp_path):
    model = _typed_model()
    feeds = make_feeds(model)
    assert feeds["ids"].shape == (1, 4) and feeds["ids"].dtype == np.int64
    assert set(np.unique(feeds["ids"])) <= {0, 1}
    assert feeds["x"].shape == (2, 3) and feeds["x"].dtype == np.float32
    path = tmp_path / "specs.json"
    path.write_text(json.dumps({"ids": {"shape": [3, 4], "dtype": "int64", "low": 5, "high": 9}}))
    feeds = make_feeds(model, load_input_specs(path))
    assert feeds["ids"].shape == (3, 4) and feeds["ids"].min() >= 5 and feeds["ids"].max() < 9
    assert np.array_equal(make_feeds(model)["x"], make_feeds(model)["x"])  # fixed seed


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (
            {"nope": {"shape": [1]}},
            "input 'nope' is not an input of the model (its inputs: ids, x)",
        ),
        ({"x": {"shape": [2, 3], "dtype": "int64"}}, "input 'x' is int64 in the spec but float32"),
        ({"x": {"shape": [6]}}, "input 'x' has 1 dimensions in the spec [6] but 2"),
        ({"x": {"shape": [2, 4]}}, "input 'x' has size 4 on axis 1 in the spec"),
    ],
)
def test_inputs_that_do_not_fit_name_the_input(tmp_path, spec, fragment):
    path = tmp_path / "specs.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(GraphtagError, match=re.escape(fragment)):
        make_feeds(_typed_model(), load_input_specs(path))


def test_providers_are_resolved_or_listed():
    import onnxruntime as ort

    assert resolve_providers(["cpu", "CPUExecutionProvider"]) == ("CPUExecutionProvider",)
    available = ", ".join(ort.get_available_providers())
    missing = next(p for p in ort.get_all_providers() if p not in ort.get_available_providers())
    with pytest.raises(GraphtagError, match=re.escape(f"is not available in this onnxruntime; available: {available}")):  # fmt: skip
        resolve_providers([missing])
    with pytest.raises(GraphtagError, match="'warp-drive' is unknown; available: "):
        resolve_providers(["warp-drive"])


# -- attribution on real ONNX Runtime runs ---------------------------------------------


@pytest.fixture
def mlp(tmp_path):
    path = tmp_path / "mlp.onnx"
    graphtag.save(tagged_mlp(hidden=256), path)
    return path


@pytest.mark.parametrize("follow", [False, True], ids=["read-after", "read-while-written"])
def test_every_kernel_lands_in_its_module_exactly(mlp, tmp_path, monkeypatch, follow):
    """Also with the trace read by the helper process while ONNX Runtime writes it (here
    forced: this model is below the size that starts the helper)."""
    from graphtag.tools.profile import collect

    if follow:
        monkeypatch.setattr(collect, "_FOLLOW_EVENTS", 0)

        def read_here(path):
            raise AssertionError(f"the helper did not give the trace; read here: {path}")

        monkeypatch.setattr(collect, "read_trace", read_here)
    trace, optimized = tmp_path / "trace.json", tmp_path / "optimized.onnx"
    before = digest(mlp)
    measured = collect_ort(mlp, FAST, save_trace=trace, save_optimized=optimized)
    data = ModuleProfile(measured).to_json()
    assert digest(mlp) == before
    runs = raw_runs(trace)[FAST.warmup :]
    assert len(runs) == FAST.runs == data["runs"]
    sums = [sum(e["dur"] for e in run) for run in runs]
    assert measured.series.busy_ns() == [1000 * s for s in sums]
    chosen = sorted(range(len(sums)), key=lambda i: (sums[i], i))[(len(sums) - 1) // 2]
    assert data["median_run"] == chosen and round(data["kernel_ms"] * 1000) == sums[chosen]
    assert_consistent(data)
    # Per module: the kernels of the nodes the saved (retagged) graph gives its tag.
    graph = onnx.load(optimized, load_external_data=False).graph
    tag_of = {
        n.name: {p.key: p.value for p in n.metadata_props}[metadata.MODULE] for n in graph.node
    }
    want: dict[str, list[int]] = {}
    for e in runs[chosen]:
        want.setdefault(tag_of[e["name"].removesuffix("_kernel_time")], []).append(e["dur"])
    got = {t: m for t, m in data["modules"].items() if m["calls"]}
    assert {t: (round(m["self_ms"] * 1000), m["calls"]) for t, m in got.items()} == {
        t: (sum(d), len(d)) for t, d in want.items()
    }
    assert data["coverage"]["mapped_events"] == data["coverage"]["kernel_events"]
    assert data["coverage"]["kernel_events"] == len(graph.node) * FAST.runs
    assert set(data["modules"]) <= {"/MLP", "/MLP/Layer.fc1", "/MLP/Layer.fc2"}
    assert parse_profile(data).modules["/MLP"].total_ms == data["kernel_ms"]


def _loop_model(tagged: bool = True) -> onnx.ModelProto:
    """x -> Loop(n) { MatMul W, Relu } -> Relu -> z; tags /Net, /Net/Loop, /Net/Loop/Body."""
    rng = np.random.default_rng(0)
    w = onnx.numpy_helper.from_array(rng.standard_normal((128, 128)).astype(np.float32), "W")
    body = oh.make_graph(
        [
            oh.make_node("MatMul", ["x_in", "W"], ["y0"], name="body_mm"),
            oh.make_node("Relu", ["y0"], ["x_out"], name="body_relu"),
            oh.make_node("Identity", ["cond_in"], ["cond_out"], name="body_id"),
        ],
        "body",
        [
            oh.make_tensor_value_info("i", TensorProto.INT64, []),
            oh.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            oh.make_tensor_value_info("x_in", TensorProto.FLOAT, [128, 128]),
        ],
        [
            oh.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            oh.make_tensor_value_info("x_out", TensorProto.FLOAT, [128, 128]),
        ],
    )
    graph = oh.make_graph(
        [
            oh.make_node("Loop", ["n", "c", "x"], ["y"], name="the_loop", body=body),
            oh.make_node("Relu", ["y"], ["z"], name="outer_relu"),
        ],
        "loop",
        [
            oh.make_tensor_value_info("x", TensorProto.FLOAT, [128, 128]),
            oh.make_tensor_value_info("n", TensorProto.INT64, []),
            oh.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [oh.make_tensor_value_info("z", TensorProto.FLOAT, [128, 128])],
        initializer=[w],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 21)], ir_version=10)
    if tagged:
        tags = {"the_loop": "/Net/Loop", "outer_relu": "/Net"}
        tags.update(dict.fromkeys(("body_mm", "body_relu", "body_id"), "/Net/Loop/Body"))
        body_nodes = model.graph.node[0].attribute[0].g.node
        for node in [*model.graph.node, *body_nodes]:
            node.metadata_props.add(key=metadata.MODULE, value=tags[node.name])
    onnx.checker.check_model(model, full_check=True)
    return model


def test_control_flow_body_is_counted_once_in_its_module(tmp_path):
    path = tmp_path / "loop.onnx"
    onnx.save(_loop_model(), path)
    specs = {
        "n": {"shape": [], "dtype": "int64", "value": 4},
        "c": {"shape": [], "dtype": "bool", "value": 1},
    }
    trace = tmp_path / "trace.json"
    profile = ModuleProfile(collect_ort(path, FAST, input_specs=specs, save_trace=trace))
    data = profile.to_json()
    runs = raw_runs(trace)[FAST.warmup :]
    assert profile.ort.series.busy_ns() == [1000 * top_level_us(run) for run in runs]
    assert sum(e["dur"] for e in runs[0]) > top_level_us(runs[0])  # the body is nested
    assert_consistent(data)
    modules = data["modules"]
    assert modules["/Net/Loop/Body"]["calls"] == 3 * 4  # three nodes, four iterations
    assert modules["/Net/Loop"]["calls"] == 1 and modules["/Net"]["calls"] == 1
    assert modules["/Net/Loop/Body"]["ops_ms"].keys() == {"MatMul", "Relu", "Identity"}
    assert data["coverage"]["mapped_events"] == data["coverage"]["kernel_events"]


def test_unnamed_and_repeated_node_names_get_unique_names(tmp_path):
    model = tagged_mlp(hidden=64)
    nodes = list(model.graph)
    nodes[0].name = ""
    nodes[3].name = nodes[2].name
    path = tmp_path / "names.onnx"
    graphtag.save(model, path)
    before = digest(path)
    profile = ModuleProfile(collect_ort(path, FAST))
    data = profile.to_json()
    assert digest(path) == before
    assert any("2 unnamed or same-named nodes" in note for note in data["notes"])
    assert data["coverage"]["mapped_events"] == data["coverage"]["kernel_events"]
    assert data["modules"]["/MLP/Layer.fc2"]["calls"] == 1  # its MatMul, under its new name
    assert_consistent(data)


def test_model_without_tags_is_profiled_at_the_root(tmp_path):
    path = tmp_path / "plain.onnx"
    onnx.save(_loop_model(tagged=False), path)
    data = ModuleProfile(collect_ort(path, FAST)).to_json()
    assert list(data["modules"]) == [SYNTHETIC_ROOT] and not data["tagged"]
    assert "has no module tags" in data["notes"][0]
    assert data["modules"][""]["self_ms"] == data["kernel_ms"] > 0
    profile_path = tmp_path / "p.json"
    profile_path.write_text(json.dumps(data))
    report = report_data(graphtag.load(path), title="plain", profile=load_profile(profile_path))
    root = report["modules"][0]
    assert root["tag"] == "" and root["self_ms"] == data["kernel_ms"]
    assert not any("does not have" in note for note in report["notes"])


# -- the command -----------------------------------------------------------------------


def test_command_table_json_csv_and_depth(mlp, tmp_path, capsys):
    out, optimized, trace = tmp_path / "p.json", tmp_path / "opt.onnx", tmp_path / "t.json"
    table = _cli(capsys, "profile", mlp, "--runs", 3, "--warmup", 1, "--threads", 1, "-o", out,
                 "--save-optimized", optimized, "--save-trace", trace)  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert all(metadata.node_tag(n) for n in graphtag.load(optimized).graph)
    assert len(raw_runs(trace)) == 4
    row = r"^MLP\s+[\d.]+\s+[\d.]+-[\d.]+\s+[\d.]+\s+100\.0\s+\d+\s+\d+\s+\w+ \d+%"
    assert re.search(row, table.stdout, re.M), table.stdout
    assert re.search(r"^  Layer\.fc2\s", table.stdout, re.M)
    assert "top modules by self time" in table.stdout and f"wrote {out}" in table.stderr
    saved = json.loads(out.read_text())
    assert load_profile(out).runs == 3 and saved["depth"] is None
    assert_consistent(saved)

    folded = _cli(capsys, "profile", mlp, "--runs", 2, "--warmup", 0, "--depth", 0,
                  "--format", "json")  # fmt: skip
    data = json.loads(folded.stdout)
    assert list(data["modules"]) == ["/MLP"] and data["depth"] == 0
    assert data["modules"]["/MLP"]["self_ms"] == data["kernel_ms"]
    per_run = data["coverage"]["kernel_events"] // data["runs"]
    assert data["modules"]["/MLP"]["calls"] == data["modules"]["/MLP"]["nodes"] == per_run

    rows = list(csv.DictReader(io.StringIO(
        _cli(capsys, "profile", mlp, "--runs", 2, "--warmup", 0, "--format", "csv").stdout
    )))  # fmt: skip
    assert [r["tag"] for r in rows] == ["/MLP", "/MLP/Layer.fc1", "/MLP/Layer.fc2"]
    assert float(rows[0]["percent"]) == 100.0 and rows[2]["depth"] == "1"


def test_report_reads_the_profile(mlp, tmp_path, capsys):
    profile = tmp_path / "p.json"
    _cli(capsys, "profile", mlp, "--runs", 2, "--warmup", 0, "-o", profile)
    html = tmp_path / "r.html"
    proc = _cli(capsys, "report", mlp, "-o", html, "--profile", profile)
    assert proc.returncode == 0 and "does not have" not in proc.stderr
    data = report_data(graphtag.load(mlp), title="mlp", profile=load_profile(profile))
    saved = json.loads(profile.read_text())
    for entry in data["modules"]:
        assert entry["self_ms"] == saved["modules"][entry["tag"]]["self_ms"]


def _profile_file(path, total, modules):
    path.write_text(json.dumps({"schema": "graphtag.profile/1", "total_ms": total,
                                "modules": modules}))  # fmt: skip
    return path


def test_compare_two_profiles(tmp_path, capsys):
    a = _profile_file(tmp_path / "a.json", 10.0, {
        "/M": {"self_ms": 1.0, "total_ms": 8.0},
        "/M/A": {"self_ms": 4.0, "total_ms": 5.0},
        "/M/A/X": {"self_ms": 1.0, "total_ms": 1.0},
        "/M/B": {"self_ms": 2.0, "total_ms": 2.0},
    })  # fmt: skip
    b = _profile_file(tmp_path / "b.json", 8.0, {
        "/M": {"self_ms": 1.0, "total_ms": 6.0},
        "/M/A": {"self_ms": 1.5, "total_ms": 2.0},
        "/M/A/X": {"self_ms": 0.5, "total_ms": 0.5},
        "/M/C": {"self_ms": 3.0, "total_ms": 3.0},
    })  # fmt: skip
    table = _cli(capsys, "profile", "--compare", a, b)
    assert table.returncode == 0
    assert "(-20.0%)" in table.stdout
    assert re.search(r"^  A\s+5\.000\s+2\.000\s+-3\.000\s+-60\.0%\s+4\.000\s+1\.500\s+-2\.500$",
                     table.stdout, re.M)  # fmt: skip
    assert re.search(r"^  B\s+2\.000\s+-\s+-\s+-\s+2\.000\s+-\s+-$", table.stdout, re.M)
    assert table.stdout.index("/M/C ") < table.stdout.index("/M/A/X ")  # +3.0 before -0.5
    data = json.loads(_cli(capsys, "profile", "--compare", a, b, "--depth", 1,
                           "--format", "json").stdout)  # fmt: skip
    assert list(data["modules"]) == ["/M", "/M/A", "/M/B", "/M/C"]
    assert data["modules"]["/M/A"]["self_ms"] == {"a": 5.0, "b": 2.0, "delta": -3.0}
    rows = list(csv.DictReader(io.StringIO(_cli(capsys, "profile", "--compare", a, b,
                                                "--format", "csv").stdout)))  # fmt: skip
    assert rows[-1]["tag"] == "/M/C" and rows[-1]["total_a_ms"] == ""


def test_bad_input_is_one_line(mlp, tmp_path, capsys):
    import onnxruntime as ort

    missing = next(p for p in ort.get_all_providers() if p not in ort.get_available_providers())
    proc = run_cli("profile", mlp, "--providers", missing)
    assert_clean_failure(proc, f"execution provider '{missing}' is not available", "available: ")
    specs = tmp_path / "specs.json"
    specs.write_text(json.dumps({"x": {"shape": [2, 5]}}))
    proc = run_cli("profile", mlp, "--input-specs", specs)
    assert_clean_failure(proc, "input 'x' has size 5 on axis 1")
    proc = run_cli("profile", mlp, "--torch")
    assert_clean_failure(proc, "--torch needs a PyTorch MODEL")
    for args, fragment in [
        ((tmp_path / "none.onnx",), "no such file"),
        ((mlp, "--runs", 0), "--runs must be at least 1"),
        ((mlp, "-o", tmp_path / "no" / "p.json"), "output folder"),
        ((), "give a MODEL to profile"),
        ((mlp, "--compare", mlp, mlp), "--compare takes two profiles and no MODEL"),
        (("--compare", mlp, mlp), "cannot read the profile"),
    ]:
        proc = _cli(capsys, "profile", *args)
        assert proc.returncode == 2 and fragment in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "no").exists()


def test_profiling_an_onnx_file_never_imports_torch(mlp):
    code = (
        "import sys; from graphtag.cli import main; "
        f"rc = main(['profile', {str(mlp)!r}, '--runs', '1', '--warmup', '0']); "
        "assert rc == 0 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    )
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_runs_cut_by_the_profilers_event_limit():
    from graphtag.tools.profile.collect import measured_runs
    from graphtag.tools.profile.trace import MAX_EVENTS, Kernel, Run, Trace

    settings = RunSettings(warmup=2, runs=3)
    runs = [Run.of([Kernel("n", i)]) for i in range(4)]  # the fifth run was not recorded
    notes: list[str] = []
    kept, wall = measured_runs(Trace(runs, [10, 11, 12, 13], 1, MAX_EVENTS), settings, notes)
    assert kept == runs[2:] and wall == [12, 13]
    assert "2 of 3 measured runs were recorded" in notes[0] and "1 kernel events" in notes[1]
    with pytest.raises(GraphtagError, match="recorded 2 of 5 inferences"):
        measured_runs(Trace(runs[:2], [10, 11], 0, MAX_EVENTS), settings, [])


def test_long_runs_report_progress(mlp, monkeypatch):
    import graphtag.tools.profile.session as session

    monkeypatch.setattr(session, "_PROGRESS_EVERY_S", 0.0)
    lines: list[str] = []
    collect_ort(mlp, RunSettings(warmup=2, runs=3, threads=1), progress=lines.append)
    assert [line.split(" (")[0] for line in lines if "/" in line.split(" ")[1]] == [
        "warm-up 1/2",
        "run 1/3",
        "run 2/3",
    ]


def test_kernels_of_nodes_onnx_runtime_named_are_placed_by_op_type_when_unambiguous():
    """ONNX Runtime names a node it created without a name ``<op>_<index>`` at run time;
    the saved graph has it unnamed."""
    from graphtag.tools.profile.collect import _tags_by_name

    x = ir.Value(name="x", shape=ir.Shape([2]), type=ir.TensorType(ir.DataType.FLOAT))
    nodes = []
    for op, tag in (("Cast", "/M/A"), ("Cast", "/M/A"), ("Relu", "/M/A"), ("Relu", "/M/B")):
        node = ir.Node("", op, [x], attributes=[ir.AttrInt64("to", 1)] if op == "Cast" else [])
        node.metadata_props[metadata.MODULE] = tag
        nodes.append(node)
    named = ir.Node("", "Cast", [x], attributes=[ir.AttrInt64("to", 1)], name="Cast_7")
    named.metadata_props[metadata.MODULE] = "/M/C"
    graph = ir.Graph([x], [n.outputs[0] for n in [*nodes, named]], nodes=[*nodes, named])
    model = ir.Model(graph, ir_version=10)
    for node in nodes:
        node.name = ""  # onnx_ir named them on insertion: unnamed, as ONNX Runtime saves them
    tags, _ = _tags_by_name(model)
    assert tags.get("Cast_15")[0] == "/M/A"  # both unnamed Casts are in /M/A
    assert tags.get("Cast_7")[0] == "/M/C"  # a real name wins
    assert tags.get("Relu_3") is None  # unnamed Relus in two modules: unknown
    assert tags.get("MatMul_1") is None and tags.get("Cast") is None
