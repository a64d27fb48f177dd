"""``graphtag passes`` / ``graphtag run``: output, bad input, layering."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cli_helpers import assert_clean_failure, digest, run_cli

import graphtag
from graphtag.core import metadata


def test_help_explains_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for word in ("passes", "run", "pkg.graphtag.module"):
        assert word in proc.stdout
    run_help = run_cli("run", "--help").stdout
    assert (
        "--time-passes" in run_help
        and "--verify-each" in run_help
        and "pipeline syntax" in run_help
    )


def test_passes_list_json_has_docs_and_options():
    proc = run_cli("passes", "list", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    entries = {e["name"]: e for e in json.loads(proc.stdout)}
    assert entries["toposort"]["origin"] == "graphtag"
    assert entries["toposort"]["doc"]
    assert {o["name"] for o in entries["ir.checker"]["options"]} >= {"full_check"}


def test_core_commands_do_not_import_torch(mlp_path, tmp_path):
    code = (
        "import sys\n"
        "from graphtag.cli import main\n"
        f"assert main(['passes', 'list']) == 0\n"
        f"assert main(['run', {str(mlp_path)!r}, '-p', 'toposort', '-o', {str(tmp_path / 'o.onnx')!r}]) == 0\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_run_with_time_passes_and_verify_each(mlp_path, tmp_path):
    out = tmp_path / "out.onnx"
    before = digest(mlp_path)
    proc = run_cli(
        "run",
        mlp_path,
        "-p",
        "toposort,ir.remove-unused-nodes",
        "-o",
        out,
        "--time-passes",
        "--verify-each",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["pass", "ms", "modified"]
    assert lines[2].split()[0] == "toposort" and lines[2].split()[-1] == "no"
    assert lines[-1].startswith("total")
    assert digest(mlp_path) == before
    model = graphtag.load(out)
    assert metadata.node_tag(next(iter(model.graph))) == "/MLP/Layer.fc1"


def test_run_dump_after(mlp_path, tmp_path):
    proc = run_cli(
        "run",
        mlp_path,
        "-p",
        "toposort",
        "-o",
        tmp_path / "o.onnx",
        "--dump-after",
        "toposort",
        "--dump-dir",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "after-00-toposort.onnx").exists()


def _replace(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make_input", "pipeline", "fragments"),
    [
        (lambda p: p.parent / "missing.onnx", "toposort", ["missing.onnx", "no such file"]),
        (lambda p: _replace(p, b"hello, not onnx"), "toposort", ["not a readable ONNX model"]),
        (lambda p: _replace(p, p.read_bytes()[:57]), "toposort", ["not a readable ONNX model"]),
        (lambda p: p, "toposort,,x", ["bad pipeline at column 10"]),
        (lambda p: p, "toposrt", ["unknown pass 'toposrt'", "valid passes: toposort"]),
        (lambda p: p, "ir.checker{full_check=maybe}", ["expects bool"]),
    ],
    ids=["missing", "not-onnx", "truncated", "syntax", "unknown-pass", "bad-option"],
)
def test_bad_input_gets_one_line(mlp_path, tmp_path, make_input, pipeline, fragments):
    source = make_input(mlp_path)
    before = digest(source) if source.exists() else None
    out = tmp_path / "never.onnx"
    proc = run_cli("run", source, "-p", pipeline, "-o", out)
    assert_clean_failure(proc, *fragments)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".never")] == []
    if before is not None:
        assert digest(source) == before


def test_unwritable_output_paths(mlp_path, tmp_path):
    proc = run_cli("run", mlp_path, "-p", "toposort", "-o", tmp_path / "no" / "dir" / "o.onnx")
    assert_clean_failure(proc, "does not exist")
    proc = run_cli("run", mlp_path, "-p", "toposort", "-o", tmp_path)
    assert_clean_failure(proc, "is a directory")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    proc = run_cli("run", mlp_path, "-p", "toposort", "-o", blocker / "o.onnx")
    assert_clean_failure(proc, "does not exist")


def test_output_over_input_is_refused(mlp_path):
    before = digest(mlp_path)
    assert_clean_failure(
        run_cli("run", mlp_path, "-p", "toposort", "-o", mlp_path), "overwrite the input"
    )
    assert digest(mlp_path) == before
