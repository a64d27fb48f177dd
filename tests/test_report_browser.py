"""graphtag report in a real browser: headless Chromium opens the file:// report.

Every page is watched: no console error or warning, no page error and no request other
than the report file itself. Screenshots are kept under pytest's temporary folder (their
paths are printed and recorded as the ``screenshot`` property).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import onnx_ir as ir
import pytest
from browser import browser_or_skip, launch, open_report
from cli_helpers import run_cli
from onnx_builders import tagged_mlp
from zoo_exports import zoo_export

import graphtag
from graphtag.core import metadata
from graphtag.core.hierarchy import Hierarchy, tag_parent

BENCH = Path(__file__).parent.parent / "bench"


@pytest.fixture(scope="module")
def browser():
    sync_playwright, executable = browser_or_skip()
    with sync_playwright() as playwright:
        browser = launch(playwright, executable)
        yield browser
        browser.close()


def _profile_for(model: ir.Model) -> dict:
    """A graphtag.profile/1 document: 0.01 ms per own node, totals summed up the tree."""
    own: dict[str, int] = {}
    for node in model.graph:
        tag = metadata.node_tag(node)
        own[tag] = own.get(tag, 0) + 1
    hierarchy = Hierarchy.from_model(model)
    total = {tag: own.get(tag, 0) * 0.01 for tag in hierarchy.modules}
    modules = {tag: {"self_ms": total[tag], "calls": 1} for tag in hierarchy.modules}
    for tag in reversed(list(hierarchy.modules)):
        if tag_parent(tag) is not None:
            total[tag_parent(tag)] += total[tag]
    for tag, entry in modules.items():
        entry["total_ms"] = total[tag]
    return {"schema": "graphtag.profile/1", "total_ms": total[hierarchy.root], "modules": modules}


@pytest.fixture(scope="module")
def bert_report(tmp_path_factory) -> tuple[Path, ir.Model]:
    case = zoo_export("bert", "dynamo")
    model = graphtag.load(case.path)
    folder = tmp_path_factory.mktemp("report")
    profile = folder / "profile.json"
    profile.write_text(json.dumps(_profile_for(model)))
    out = folder / "bert.html"
    proc = run_cli("report", case.path, "-o", out, "--profile", profile)
    assert proc.returncode == 0, proc.stderr
    return out, model


def _rows(page) -> list[str]:
    return page.eval_on_selector_all("#tree tbody tr", "rows => rows.map(r => r.dataset.tag)")


def _hits(page) -> set[str]:
    return set(
        page.eval_on_selector_all("#tree tbody tr.hit", "rows => rows.map(r => r.dataset.tag)")
    )


def _screenshot(page, folder: Path, name: str, record_property) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    record_property("screenshot", str(path))
    print(f"screenshot: {path}", file=sys.stderr)
    assert path.stat().st_size > 10_000
    return path


def test_tree_lists_every_module(browser, bert_report, tmp_path, record_property):
    path, model = bert_report
    watched = open_report(browser, path)
    page = watched.page
    hierarchy = Hierarchy.from_model(model)
    assert _rows(page)[0] == hierarchy.root
    page.click("#expand-all")
    rows = _rows(page)
    assert sorted(rows) == sorted(hierarchy.modules)  # each module once, nothing else
    # The time columns come from the profile: BertModel's total is the sum of all nodes.
    header = page.inner_text("#tree thead")
    assert "self ms" in header and "total ms" in header
    root_cells = page.eval_on_selector(
        "#tree tbody tr", "row => [...row.cells].map(c => c.textContent)"
    )
    assert root_cells[-2] == f"{len(model.graph) * 0.01:.2f}"
    _screenshot(page, tmp_path, "bert-expanded", record_property)
    watched.assert_quiet()


def test_expanding_a_node_shows_its_children(browser, bert_report):
    path, model = bert_report
    watched = open_report(browser, path)
    page = watched.page
    hierarchy = Hierarchy.from_model(model)
    encoder = next(t for t, info in hierarchy.modules.items() if info.name == "encoder")
    children = [t for t, info in hierarchy.modules.items() if info.parent == encoder]
    assert children and not set(children) & set(_rows(page))
    page.click(f'#tree tr[data-tag="{encoder}"] .twisty')
    rows = _rows(page)
    assert set(children) <= set(rows)
    assert rows.index(encoder) < min(rows.index(c) for c in children)
    page.click(f'#tree tr[data-tag="{encoder}"] .twisty')  # and collapsing hides them
    assert not set(children) & set(_rows(page))
    watched.assert_quiet()


def test_search_filters_by_op_class_and_tag(browser, bert_report):
    path, model = bert_report
    watched = open_report(browser, path)
    page = watched.page
    hierarchy = Hierarchy.from_model(model)
    softmax = {metadata.node_tag(n) for n in model.graph if n.op_type == "Softmax"}
    assert len(softmax) == 2  # one attention per layer

    def search(text: str) -> set[str]:
        page.fill("#search", text)
        page.wait_for_function("q => document.body.dataset.query === q", arg=text, timeout=5000)
        return _hits(page)

    # class: matches the class name (BertLayer, not BertSelfAttention's tag segment).
    layers = {t for t, i in hierarchy.modules.items() if "bertlayer" in i.class_name.lower()}
    by_tag = {t for t in hierarchy.modules if "layer.1" in t.lower()}
    assert search("op:Softmax") == softmax
    # Only the matches and their ancestors are listed.
    shown = set(_rows(page))
    ancestors = {a for t in softmax for a in _ancestors(t)}
    assert shown == softmax | ancestors
    assert "2 modules match" in page.inner_text("#search-info")
    assert search("class:bertlayer") == layers
    assert search("layer.1") == by_tag
    assert search("no-such-thing") == set()
    assert _rows(page) == [] and "no module matches" in page.inner_text("#search-info")
    assert search("") == set()
    assert len(_rows(page)) > 1
    watched.assert_quiet()


def _ancestors(tag: str) -> list[str]:
    found = []
    while (tag := tag_parent(tag)) is not None:
        found.append(tag)
    return found


def test_chart_renders_and_switches(browser, bert_report, tmp_path, record_property):
    path, _model = bert_report
    watched = open_report(browser, path)
    page = watched.page
    slices = "#chart g.slice"
    assert page.eval_on_selector_all(slices, "s => s.length") > 5
    assert page.input_value("#chart-metric") == "time"  # a profile is given
    labels = page.eval_on_selector_all(slices, "s => s.map(x => x.textContent)")
    assert any("BertEncoder" in label for label in labels)
    page.select_option("#chart-kind", "sunburst")
    page.wait_for_selector("#chart .sunburstlayer path", timeout=5000)
    page.select_option("#chart-metric", "nodes")
    assert "sized by nodes" in page.inner_text("#chart-note")
    _screenshot(page, tmp_path, "bert-sunburst", record_property)
    watched.assert_quiet()


def test_module_graph_shows_children_and_flows(browser, bert_report, tmp_path, record_property):
    path, model = bert_report
    watched = open_report(browser, path)
    page = watched.page
    hierarchy = Hierarchy.from_model(model)
    layer = next(t for t, i in hierarchy.modules.items() if i.class_name.endswith(".BertLayer"))
    children = [t for t, i in hierarchy.modules.items() if i.parent == layer]
    page.click(f'#tree tr[data-tag="{tag_parent(layer)}"] .twisty')
    page.click(f'#tree tr[data-tag="{layer}"] td.name')
    assert page.inner_text("#graph-title") == layer
    boxes = page.eval_on_selector_all("#graph g.box", "gs => gs.map(g => g.dataset.id)")
    assert set(children) <= set(boxes) and {"in", "out"} <= set(boxes)
    assert page.eval_on_selector_all("#graph path.edge", "p => p.length") >= len(children)
    page.locator("#graph g.box.child").first.scroll_into_view_if_needed()
    _screenshot(page, tmp_path, "bert-layer-graph", record_property)
    # Clicking a child opens it: details and graph follow.
    page.click(f'#graph g.box[data-id="{children[0]}"]')
    assert page.inner_text("#details h2") == children[0]
    assert page.inner_text("#graph-title") == children[0]
    watched.assert_quiet()


def test_model_without_tags_renders_one_root_with_a_note(browser, tmp_path, record_property):
    model = tagged_mlp()
    for node in model.graph:
        del node.metadata_props[metadata.MODULE]
    source = tmp_path / "plain.onnx"
    graphtag.save(model, source)
    out = tmp_path / "plain.html"
    proc = run_cli("report", source, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "graphtag: note: No node carries a module tag" in proc.stderr
    watched = open_report(browser, out)
    page = watched.page
    assert _rows(page) == [""]
    assert page.inner_text("#tree tbody tr td.name").strip() == "(model)"
    assert "No node carries a module tag" in page.inner_text("#notes")
    assert "4 own" in page.inner_text("#details")
    _screenshot(page, tmp_path, "untagged", record_property)
    watched.assert_quiet()


def test_large_model_opens_and_responds_within_seconds(browser, tmp_path, record_property):
    """~1,000 modules and ~30k nodes: first render, search, expand-all and selecting the
    root (a 200-box module graph) each within a few seconds."""
    sys.path.insert(0, str(BENCH))
    from report_model import report_model, report_profile

    model = report_model()
    assert len(model.graph) > 29_000 and len(Hierarchy.from_model(model)) > 1_000
    source, profile = tmp_path / "big.onnx", tmp_path / "big.json"
    graphtag.save(model, source)
    profile.write_text(json.dumps(report_profile(model)))
    out = tmp_path / "big.html"
    proc = run_cli("report", source, "-o", out, "--profile", profile)
    assert proc.returncode == 0, proc.stderr

    started = time.perf_counter()
    watched = open_report(browser, out)
    opened = time.perf_counter() - started
    page = watched.page
    timings = {"open": opened}
    for name, action, ready in [
        ("search", lambda: page.fill("#search", "op:Softmax"), "tr.hit"),
        ("clear", lambda: page.fill("#search", ""), None),
        ("expand_all", lambda: page.click("#expand-all"), None),
        ("sunburst", lambda: page.select_option("#chart-kind", "sunburst"), None),
    ]:
        started = time.perf_counter()
        action()
        if ready:
            page.wait_for_selector(f"#tree {ready}", timeout=10_000)
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => r()))")
        timings[name] = time.perf_counter() - started
    assert len(_rows(page)) == len(Hierarchy.from_model(model))
    record_property("timings", json.dumps(timings))
    print(f"large report timings (s): {timings}", file=sys.stderr)
    assert timings["open"] < 20, timings  # generous: the machine is shared
    assert max(v for k, v in timings.items() if k != "open") < 5, timings
    _screenshot(page, tmp_path, "large", record_property)
    watched.assert_quiet()


def test_missing_chromium_skips_here_and_fails_under_ci(monkeypatch):
    import browser as helper

    monkeypatch.setattr(helper, "chromium_path", lambda: None)
    monkeypatch.delenv(helper.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install chromium"):
        helper.browser_or_skip()
    monkeypatch.setenv(helper.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="GRAPHTAG_REQUIRE_BROWSER"):
        helper.browser_or_skip()
