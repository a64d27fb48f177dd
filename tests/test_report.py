"""graphtag report without a browser: the data it embeds, the profile schema, bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import onnx_ir as ir
import pytest
from cli_helpers import assert_clean_failure, digest, run_cli
from onnx_builders import tagged_mlp
from zoo_exports import zoo_export

import graphtag
from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.core.hierarchy import Hierarchy
from graphtag.tools.report import build_report, report_data
from graphtag.tools.report.layout import Box, layout
from graphtag.tools.report.profile import SCHEMA, load_profile, parse_profile


def _embedded(html: str) -> dict:
    found = re.search(
        r'<script id="report-data" type="application/json">(.*?)</script>', html, re.S
    )
    assert found
    return json.loads(found.group(1))


@pytest.fixture(scope="module")
def bert():
    case = zoo_export("bert", "dynamo")
    return case.path, graphtag.load(case.path)


def test_modules_follow_the_hierarchy_and_add_up(bert):
    _, model = bert
    data = report_data(model, title="bert")
    hierarchy = Hierarchy.from_model(model)
    modules = data["modules"]
    assert [m["tag"] for m in modules] == list(hierarchy.modules)  # pre-order, one root
    by_tag = {m["tag"]: m for m in modules}
    for tag, info in hierarchy.modules.items():
        entry = by_tag[tag]
        assert entry["class"] == info.class_name
        parent = modules[entry["parent"]]["tag"] if entry["parent"] >= 0 else None
        assert parent == info.parent
    # Own nodes and ops, counted here from the graph itself.
    own: dict[str, int] = {}
    for node in model.graph:
        own[metadata.node_tag(node)] = own.get(metadata.node_tag(node), 0) + 1
    assert {t: m["nodes"] for t, m in by_tag.items() if m["nodes"]} == own
    root = modules[0]
    assert root["nodes_incl"] == len(model.graph) == data["model"]["nodes"]
    # Every initializer is counted exactly once: the root's inclusive size is the total.
    tensors = [v.const_value for v in model.graph.initializers.values()]
    assert root["params_incl"] == sum(t.size for t in tensors) == data["model"]["params"]
    assert root["bytes_incl"] == sum(t.nbytes for t in tensors)
    # The word embedding is only read by its own module: its weight is counted there.
    word = next(t for t, i in hierarchy.modules.items() if i.name.endswith("word_embeddings"))
    weight = model.graph.initializers["embeddings.word_embeddings.weight"].const_value
    assert by_tag[word]["params"] == weight.size


def test_module_graph_edges_are_real_flows(bert):
    _, model = bert
    data = report_data(model, title="bert")
    hierarchy = Hierarchy.from_model(model)
    layer = next(t for t, i in hierarchy.modules.items() if i.class_name.endswith(".BertLayer"))
    graph = next(m for m in data["modules"] if m["tag"] == layer)["graph"]
    children = [t for t, i in hierarchy.modules.items() if i.parent == layer]
    ids = [b["id"] for b in graph["boxes"]]
    assert set(children) <= set(ids) and "in" in ids and "out" in ids

    # Check each child-to-child edge against the graph: some value produced by a node of
    # the source child is consumed by a node of the target child.
    def inside(tag, node):
        t = metadata.node_tag(node)
        return t is not None and (t == tag or t.startswith(tag + "/"))

    flows = 0
    for edge in graph["edges"]:
        if edge["s"] in children and edge["t"] in children:
            flows += 1
            assert any(
                inside(edge["s"], node)
                and any(inside(edge["t"], use.node) for o in node.outputs for use in o.uses())
                for node in model.graph
            ), edge
    assert flows >= 2
    for box in graph["boxes"]:  # inside the drawing
        assert box["x"] >= 0 and box["x"] + box["w"] <= graph["width"]
        assert box["y"] >= 0 and box["y"] + box["h"] <= graph["height"]


def test_layout_layers_follow_forward_edges():
    boxes = [Box(key=k, label=f"b{k}") for k in (0, 1, 2, 3)]
    forward, via, width, height = layout(boxes, [(0, 1), (1, 2), (0, 2), (2, 1), (2, 3)])
    assert [b.layer for b in boxes] == [0, 1, 2, 3]
    assert forward == [True, True, True, False, True]
    assert via[0] is None and via[1] is None and via[4] is None
    assert via[2] is not None and via[3] is not None and via[2] != via[3]  # own detours
    assert all(x < width for x in via if x is not None) and height > 3 * 40


def test_untagged_model_has_one_root_and_a_note():
    model = tagged_mlp()
    for node in model.graph:
        del node.metadata_props[metadata.MODULE]
    data = report_data(model, title="plain")
    assert [m["tag"] for m in data["modules"]] == [""]
    root = data["modules"][0]
    assert root["name"] == "(model)" and root["nodes"] == 4
    assert root["ops"] == {"MatMul": 2, "Add": 1, "Relu": 1}
    assert any("No node carries a module tag" in n for n in data["notes"])


def test_several_top_level_tags_get_a_synthetic_root():
    model = tagged_mlp()
    last = list(model.graph)[-1]
    metadata.set_tag(last, "/Head")
    data = report_data(model, title="two roots")
    tags = [m["tag"] for m in data["modules"]]
    assert tags[0] == "" and {"/MLP", "/Head", "/MLP/Layer.fc1"} <= set(tags)
    graph = data["modules"][0]["graph"]
    assert {"/MLP", "/Head"} <= {b["id"] for b in graph["boxes"]}
    assert any(e["s"] == "/MLP" and e["t"] == "/Head" for e in graph["edges"])


def test_html_is_self_contained_and_escapes_the_data():
    model = tagged_mlp()
    node = next(iter(model.graph))
    metadata.set_tag(node, "/MLP/</script><script>alert(1)</script>")
    html = build_report(model, title="<b>x</b>")
    assert _embedded(html)["title"] == "<b>x</b>"
    assert "<title>&lt;b&gt;x&lt;/b&gt; · graphtag report</title>" in html
    assert html.count("</script>") == 3  # data, plotly.js, the app: nothing else closes one
    # Nothing to fetch: no external script, stylesheet or image.
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)
    assert "Plotly" in html and "plotly.js" in html


def test_profile_times_reach_the_modules(tmp_path):
    model = tagged_mlp()
    profile = {
        "schema": SCHEMA,
        "total_ms": 2.0,
        "modules": {
            "/MLP": {"self_ms": 0.5, "total_ms": 2.0},
            "/MLP/Layer.fc1": {"self_ms": 1.0, "total_ms": 1.0, "calls": 2, "nodes": 2},
            "/Gone": {"self_ms": 0.1, "total_ms": 0.1},
        },
    }
    data = report_data(model, title="mlp", profile=parse_profile(profile))
    by_tag = {m["tag"]: m for m in data["modules"]}
    assert by_tag["/MLP/Layer.fc1"]["calls"] == 2 and by_tag["/MLP"]["total_ms"] == 2.0
    assert by_tag["/MLP/Layer.fc2"]["self_ms"] is None  # not profiled
    assert any("/Gone" in note for note in data["notes"])
    assert data["profile"] == {"total_ms": 2.0, "runs": None}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a graphtag profile"),
        ('{"schema": "other/2", "total_ms": 1, "modules": {}}', "schema is 'other/2'"),
        ('{"schema": "graphtag.profile/1", "modules": {}}', "total_ms must be a number"),
        ('{"schema": "graphtag.profile/1", "total_ms": 1, "modules": []}', "'modules' must be"),
        (
            '{"schema": "graphtag.profile/1", "total_ms": 1, "modules": {"/M": {"self_ms": -1, "total_ms": 1}}}',
            "self_ms must be finite and >= 0",
        ),
        (
            '{"schema": "graphtag.profile/1", "total_ms": 1, "modules": {"/M": {"self_ms": 1, "total_ms": 1, "calls": 1.5}}}',
            "calls must be a non-negative integer",
        ),
    ],
)
def test_bad_profiles_are_one_line_errors(tmp_path, mlp_path, text, fragment):
    profile = tmp_path / "p.json"
    profile.write_text(text)
    with pytest.raises(GraphtagError, match=re.escape(fragment)):
        load_profile(profile)
    out = tmp_path / "r.html"
    proc = run_cli("report", mlp_path, "-o", out, "--profile", profile)
    assert_clean_failure(proc, fragment)
    assert not out.exists()


def test_cli_bad_inputs_fail_cleanly_and_leave_nothing(tmp_path, mlp_path):
    before = digest(mlp_path)
    missing = run_cli("report", tmp_path / "nope.onnx", "-o", tmp_path / "r.html")
    assert_clean_failure(missing, "no such file")
    no_profile = run_cli("report", mlp_path, "-o", tmp_path / "r.html", "--profile", "nope.json")
    assert_clean_failure(no_profile, "no such profile file")
    no_folder = run_cli("report", mlp_path, "-o", tmp_path / "missing" / "r.html")
    assert_clean_failure(no_folder, "does not exist")
    a_folder = run_cli("report", mlp_path, "-o", tmp_path)
    assert_clean_failure(a_folder, "is a directory")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root writes anywhere: nothing to check then
            proc = run_cli("report", mlp_path, "-o", locked / "r.html")
            assert_clean_failure(proc, "not writable")
    finally:
        locked.chmod(0o700)
    assert digest(mlp_path) == before
    assert not (tmp_path / "r.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked", "mlp.onnx"]


def test_failed_write_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, mlp_path, monkeypatch):
    from graphtag.tools import report as report_mod

    out = tmp_path / "r.html"
    out.write_text("old report")

    def boom(data):
        raise OSError("disk full")

    monkeypatch.setattr(report_mod, "render_html", boom)
    with pytest.raises(OSError):
        report_mod.write_report(mlp_path, out)
    assert out.read_text() == "old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.onnx", "r.html"]


def test_report_command_does_not_import_torch(tmp_path, mlp_path):
    out = tmp_path / "r.html"
    code = (
        "import sys; from graphtag.cli import main; "
        f"rc = main(['report', {str(mlp_path)!r}, '-o', {str(out)!r}]); "
        "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = _embedded(out.read_text())
    assert data["schema"] == "graphtag.report/1"
    assert [m["tag"] for m in data["modules"]] == ["/MLP", "/MLP/Layer.fc1", "/MLP/Layer.fc2"]


def test_report_does_not_modify_the_model(bert):
    path, _ = bert
    model = graphtag.load(path)
    before = ir.serde.serialize_model(model).SerializeToString()
    build_report(model, title="bert")
    assert ir.serde.serialize_model(model).SerializeToString() == before
