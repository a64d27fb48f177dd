"""Golden regression checks for users' zoos: snapshot, zoo check, pytest integration."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_clean_failure, run_cli
from zoo_exports import zoo_export

from graphtag.testing import graphtag_snapshot
from graphtag.tools.snapshot import diff_snapshots, dumps, snapshot

TESTS = Path(__file__).parent
ROOT = TESTS.parent


def test_snapshot_is_canonical_and_volatile_free(tmp_path):
    case = zoo_export("bert", "dynamo")
    first = graphtag_snapshot(case.path)
    assert first == snapshot(case.result.model)  # file and in-memory model agree
    assert first["schema"] == 1
    text = dumps(first)
    for volatile in (str(case.path), "pkg.graphtag.version", str(tmp_path)):
        assert volatile not in text
    modules = first["modules"]
    assert "/BertModel/BertEncoder/BertLayer.1" in modules
    layer = modules["/BertModel/BertEncoder/BertLayer.1/BertAttention/BertSelfAttention"]
    assert layer["nodes"] == sum(layer["ops"].values()) > 0
    assert layer["inputs"] >= 1 and layer["outputs"] >= 1
    out = tmp_path / "snap.json"
    proc = run_cli("snapshot", case.path, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text()) == json.loads(text)
    assert out.read_text() == text


def test_project_zoo_matches_golden():
    proc = run_cli(
        "zoo",
        "check",
        TESTS / "ZOO.toml",
        "--golden",
        ROOT / "golden" / "zoo",
        "-j",
        "2",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ("bert", "gpt2-lmhead", "resnet", "siblings"):
        assert f"{name}: OK" in proc.stderr


def _zoo(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "ZOO.toml"
    path.write_text(body.replace("ZOO_PY", str(TESTS / "zoo.py")))
    return path


def test_changed_model_fails_with_a_diff_then_update_passes(tmp_path):
    golden = tmp_path / "golden"
    golden.mkdir()
    shutil.copy(ROOT / "golden" / "zoo" / "siblings.json", golden / "siblings.json")
    zoo = _zoo(
        tmp_path,
        '[[model]]\nname = "siblings"\nsource = "ZOO_PY:deeper_siblings"\n'
        'exporter = "torchscript"\n\n'
        '[[model]]\nname = "broken"\nsource = "ZOO_PY:no_such_factory"\n',
    )
    proc = run_cli("zoo", "check", zoo, "--golden", golden, "-j", "2", timeout=600)
    assert proc.returncode == 1
    # The extra block is named, the model that cannot load is reported, neither stops the other.
    assert "+ module /SiblingsNet/Block.layers.1 (" in proc.stdout, proc.stdout
    assert "CHANGED" in proc.stdout and "FAILED" in proc.stdout
    assert "no_such_factory" in proc.stdout
    proc = run_cli("zoo", "check", zoo, "--golden", golden, "--update", timeout=600)
    assert "UPDATED" in proc.stdout
    zoo.write_text(zoo.read_text().split('[[model]]\nname = "broken"')[0])
    proc = run_cli("zoo", "check", zoo, "--golden", golden, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "siblings: OK" in proc.stderr


def test_diff_is_readable():
    old = graphtag_snapshot(zoo_export("siblings", "dynamo").path)
    new = json.loads(json.dumps(old))
    tag = next(iter(new["modules"]))
    new["modules"][tag]["ops"]["Relu"] = new["modules"][tag]["ops"].get("Relu", 0) + 1
    del new["modules"][sorted(new["modules"])[-1]]
    lines = diff_snapshots(old, new)
    assert any(line.startswith(f"~ module {tag}: ") and "Relu" in line for line in lines)
    assert any(line.startswith("- module ") for line in lines)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("", "no [[model]] tables"),
        ('[[model]]\nname = "x"\n', "needs 'name' and 'source'"),
        ('[[model]]\nname = "x"\nsource = "a:b"\ncolour = 1\n', "unknown keys ['colour']"),
        (
            '[[model]]\nname = "x"\nsource = "a:b"\n[[model]]\nname = "x"\nsource = "a:b"\n',
            "used twice",
        ),
    ],
)
def test_bad_zoo_files(tmp_path, body, fragment):
    zoo = _zoo(tmp_path, body)
    assert_clean_failure(run_cli("zoo", "check", zoo, "--golden", tmp_path), fragment)


def test_users_pytest_project_with_xdist(tmp_path):
    """A user's own test using graphtag.testing, run twice under pytest-xdist."""
    model = zoo_export("resnet", "dynamo").path
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "conftest.py").write_text('pytest_plugins = ["graphtag.testing"]\n')
    (tmp_path / "tests" / "test_user.py").write_text(
        "import pytest\nfrom graphtag.testing import graphtag_snapshot\n\n"
        "@pytest.mark.parametrize('copy', [1, 2, 3])\n"
        "def test_export(copy, graphtag_golden):\n"
        f"    assert graphtag_snapshot({str(model)!r}) == graphtag_golden\n"
    )
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "tests"]
    first = subprocess.run(
        [*base, "--snapshot-update"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert first.returncode == 0, first.stdout + first.stderr
    files = sorted(p.name for p in (tmp_path / "golden").iterdir())
    assert len(files) == 3 and all(f.endswith(".json") for f in files)
    second = subprocess.run(base, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "3 passed" in second.stdout, second.stdout
