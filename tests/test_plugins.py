"""Third-party passes through the real ``graphtag.passes`` entry-point group.

The demo plugin under tests/plugins/ is pip-installed into the test environment
(README set-up command), so these tests exercise importlib.metadata for real.
"""

from __future__ import annotations

import importlib.metadata

import pytest
from cli_helpers import run_cli

import graphtag
from graphtag.core.errors import PipelineError
from graphtag.pipeline import ENTRY_POINT_GROUP, PassRegistry, Pipeline


@pytest.fixture(scope="module")
def reg() -> PassRegistry:
    names = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert "demo-stamp" in names, (
        "tests/plugins/graphtag-demo-plugin is not installed: run the README's set-up command"
    )
    return PassRegistry()


def test_plugin_pass_is_registered_with_declared_options(reg):
    spec = reg.get("demo-stamp")
    assert spec.origin == "plugin graphtag-demo-plugin"
    assert spec.doc == "Write a key/value pair into every node's metadata_props."
    assert [(o.name, o.type_name) for o in spec.options] == [
        ("key", "str"),
        ("value", "str"),
        ("mode", "all|untagged"),
    ]


def test_plugin_pass_runs_in_a_pipeline(reg, mlp_path):
    model = graphtag.load(mlp_path)
    pipeline = Pipeline.from_text("toposort,demo-stamp{value=42}", reg)
    assert pipeline(model).modified
    assert {n.metadata_props["demo.stamp"] for n in model.graph} == {"42"}
    assert [(r.name, r.modified) for r in pipeline.report.records] == [
        ("toposort", False),
        ("demo-stamp", True),
    ]
    # Running it again changes nothing.
    assert not Pipeline.from_text("demo-stamp{value=42}", reg)(model).modified


def test_broken_plugin_is_reported_not_fatal(reg):
    broken = {b.name: b for b in reg.broken}
    assert "demo-broken" in broken
    assert "DoesNotExist" in broken["demo-broken"].error
    with pytest.raises(PipelineError, match="pass 'demo-broken' .* failed to load"):
        Pipeline.from_text("demo-broken", reg)


def test_cli_lists_plugin_passes_and_warns_about_broken_ones():
    proc = run_cli("passes", "list")
    assert proc.returncode == 0, proc.stderr
    assert "demo-stamp" in proc.stdout and "plugin graphtag-demo-plugin" in proc.stdout
    assert "toposort" in proc.stdout and "ir.topological-sort" in proc.stdout
    assert "pass 'demo-broken' (plugin graphtag-demo-plugin) not loaded" in proc.stderr


def test_cli_runs_plugin_pass(mlp_path, tmp_path):
    out = tmp_path / "stamped.onnx"
    proc = run_cli("run", mlp_path, "-p", "demo-stamp{key=who,value=me}", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert {n.metadata_props["who"] for n in graphtag.load(out).graph} == {"me"}
