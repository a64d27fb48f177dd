"""Golden regression checks for users' zoos: snapshot, zoo check, pytest integration."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_clean_failure, run_cli
from zoo_exports import zoo_export

from graphtag.core.errors import GraphtagError
from graphtag.exporter.zoo import _compare, export_snapshot, load_zoo, parse_shard, select_shard
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


def test_project_zoo_matches_golden(monkeypatch):
    """``graphtag zoo check tests/ZOO.toml --golden golden/zoo`` passes: each model through
    the check's own worker function (export_snapshot), here in this process, which has
    imported torch already (the command, worker processes and all, runs in the tests
    below), compared with its golden file as the check compares."""
    monkeypatch.chdir(TESTS)  # as the worker: sources relative to the zoo file
    entries = load_zoo(TESTS / "ZOO.toml")
    assert [e.name for e in entries] == ["bert", "gpt2-lmhead", "resnet", "siblings"]
    for entry in entries:
        data = export_snapshot(entry, TESTS)
        result = _compare(entry, data["snapshot"], ROOT / "golden" / "zoo", False, 0.0, "")
        assert (result.status, result.diff) == ("OK", []), entry.name


def _zoo(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "ZOO.toml"
    path.write_text(body.replace("ZOO_PY", str(TESTS / "zoo.py")))
    return path


CRASH = """
import ctypes

import torch


def segfault():
    ctypes.string_at(0)  # reads address 0: the worker process dies of SIGSEGV


def marks_torch():
    torch.graphtag_zoo_mark = True  # state a model's code leaves in a preloaded module
    raise ValueError("marked torch")


def sees_torch():
    # Runs after marks_torch (-j 1): a worker that reused its process, or a fork server
    # that ran a model, would show the mark.
    raise ValueError("torch marked" if hasattr(torch, "graphtag_zoo_mark") else "torch clean")
"""


def test_changed_model_fails_with_a_diff_then_update_passes(tmp_path):
    golden = tmp_path / "golden"
    golden.mkdir()
    shutil.copy(ROOT / "golden" / "zoo" / "siblings.json", golden / "siblings.json")
    (tmp_path / "crash.py").write_text(CRASH)
    zoo = _zoo(
        tmp_path,
        '[[model]]\nname = "siblings"\nsource = "ZOO_PY:deeper_siblings"\n'
        'exporter = "torchscript"\n\n'
        '[[model]]\nname = "broken"\nsource = "ZOO_PY:no_such_factory"\n\n'
        '[[model]]\nname = "crash"\nsource = "crash.py:segfault"\n',
    )
    proc = run_cli("zoo", "check", zoo, "--golden", golden, "-j", "2", timeout=600, columns=250)
    assert proc.returncode == 1
    # The extra block is named; the model that cannot load and the one whose worker
    # process dies are reported; none of them stops the others.
    assert "+ module /SiblingsNet/Block.layers.1 (" in proc.stdout, proc.stdout
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert rows["siblings"].split()[1:2] == ["CHANGED"]
    assert rows["broken"].split()[1:2] == ["FAILED"] and "no_such_factory" in rows["broken"]
    assert rows["crash"].split()[1:2] == ["FAILED"]
    assert "worker process died (killed by SIGSEGV)" in rows["crash"], proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    proc = run_cli("zoo", "check", zoo, "--golden", golden, "--update", timeout=600)
    assert "UPDATED" in proc.stdout
    zoo.write_text(zoo.read_text().split('[[model]]\nname = "broken"')[0])
    proc = run_cli("zoo", "check", zoo, "--golden", golden, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "siblings: OK" in proc.stderr
    assert rows["siblings"].split()[3] == "torchscript"  # the route column


def test_each_model_starts_from_a_clean_worker(tmp_path):
    """What one model's code does to a module every worker imports (torch, loaded once
    by the fork server) is not seen by the next model."""
    (tmp_path / "crash.py").write_text(CRASH)
    zoo = _zoo(
        tmp_path,
        '[[model]]\nname = "marks"\nsource = "crash.py:marks_torch"\n\n'
        '[[model]]\nname = "sees"\nsource = "crash.py:sees_torch"\n',
    )
    proc = run_cli("zoo", "check", zoo, "--golden", tmp_path, "-j", "1", columns=250)
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    assert "marked torch" in rows["marks"], proc.stdout + proc.stderr
    assert "torch clean" in rows["sees"], proc.stdout


def test_a_temp_folder_too_deep_for_the_fork_server_spawns_the_workers(tmp_path):
    """The fork server's socket lives in TMPDIR; a Unix socket path has about 107 bytes."""
    (tmp_path / "crash.py").write_text(CRASH)
    zoo = _zoo(tmp_path, '[[model]]\nname = "marks"\nsource = "crash.py:marks_torch"\n')
    deep = tmp_path / ("t" * 100)
    deep.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "graphtag", "zoo", "check", str(zoo), "--golden", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TMPDIR": str(deep), "COLUMNS": "250"},
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the model fails, as it should
    assert "marked torch" in proc.stdout, proc.stdout + proc.stderr
    assert "AF_UNIX" not in proc.stdout + proc.stderr
    assert not list(deep.iterdir())  # nothing left in TMPDIR


def _entries(tmp_path: Path, count: int) -> Path:
    body = "".join(
        f'[[model]]\nname = "m{i}"\nsource = "missing_{i}.py:factory"\n\n' for i in range(count)
    )
    return _zoo(tmp_path, body)


def test_shards_partition_the_zoo(tmp_path):
    entries = load_zoo(_entries(tmp_path, 7))
    for count in range(1, 9):
        shards = [select_shard(entries, index, count) for index in range(1, count + 1)]
        names = [e.name for shard in shards for e in shard]
        assert sorted(names) == sorted(e.name for e in entries)  # union: every model
        assert len(names) == len(set(names))  # disjoint
        sizes = [len(shard) for shard in shards]
        assert max(sizes) - min(sizes) <= 1
        # The same on every call: it depends on the file alone.
        assert shards == [
            select_shard(load_zoo(tmp_path / "ZOO.toml"), i, count) for i in range(1, count + 1)
        ]
    assert [e.name for e in select_shard(entries, 2, 3)] == ["m1", "m4"]
    assert parse_shard(" 2/3 ") == (2, 3)
    for bad in ("0/2", "3/2", "1/0", "a/b", "1-2", ""):
        with pytest.raises(GraphtagError, match="shard"):
            parse_shard(bad)


def test_cli_shard(tmp_path):
    zoo = _entries(tmp_path, 3)
    first = run_cli("zoo", "check", zoo, "--golden", tmp_path, "--shard", "1/2", "-j", "2")
    second = run_cli("zoo", "check", zoo, "--golden", tmp_path, "--shard", "2/2")
    checked = [
        {line.split()[0] for line in proc.stdout.splitlines()[2:] if line.strip()}
        for proc in (first, second)
    ]
    assert checked == [{"m0", "m2"}, {"m1"}], first.stdout + second.stdout
    assert "no such model directory or file: missing_1.py" in second.stdout
    assert first.returncode == second.returncode == 1  # the models fail to load
    assert_clean_failure(
        run_cli("zoo", "check", zoo, "--golden", tmp_path, "--shard", "3/2"), "K must be"
    )


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
