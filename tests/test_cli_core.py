"""``graphtag passes`` / ``graphtag run``: output, bad input, layering."""

from __future__ import annotations

import csv
import io
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
    # Descriptions come from Annotated[T, "..."] in the pass's __init__.
    strategy = next(o for o in entries["tag-propagation"]["options"] if o["name"] == "strategy")
    assert strategy == {
        "name": "strategy",
        "type": "lca|producers|consumers",
        "default": "lca",
        "description": "which neighbours decide: both sides, or one first",
    }
    assert all(o["description"] == "" for o in entries["ir.checker"]["options"])
    wide = run_cli("passes", "list", columns=200).stdout
    assert "strategy: lca|producers|consumers = 'lca'  which neighbours decide" in wide
    # At the default 80 columns (output not a terminal) every line fits: text wraps.
    narrow = run_cli("passes", "list").stdout
    assert max(len(line) for line in narrow.splitlines()) <= 80
    assert "which neighbours decide" in " ".join(narrow.split())
    rows = list(csv.DictReader(io.StringIO(run_cli("passes", "list", "--format", "csv").stdout)))
    by_option = {(r["pass"], r["option"]): r for r in rows}
    assert by_option["tag-propagation", "strategy"]["default"] == "lca"
    assert by_option["strip-torch-metadata", ""]["doc"]  # a pass without options: one row


# Every command that works on an ONNX file, with arguments (MODEL and OUT are filled in).
ONNX_ONLY_COMMANDS = {
    "run": [
        "run",
        "MODEL",
        "-p",
        "toposort,tag-propagation,multi-consumer,residual-resolution,boundary-detection,"
        "function-outlining{all=true},function-inlining",
        "-o",
        "OUT/o.onnx",
    ],
    "passes-list": ["passes", "list"],
    "analyze": ["analyze", "MODEL", "--format", "detailed"],
    "validate": ["validate", "MODEL"],
    "extract": ["extract", "MODEL", "--all", "-o", "OUT/modules"],
    "dag": ["dag", "MODEL", "-o", "OUT/dag.json", "--ops", "OUT/ops.json"],
    "compare": ["compare", "--topology", "MODEL", "MODEL"],
    "snapshot": ["snapshot", "MODEL"],
}


@pytest.mark.parametrize("command", list(ONNX_ONLY_COMMANDS))
def test_onnx_only_commands_do_not_import_torch(command, tmp_path):
    from test_analysis import mlp_with_hierarchy

    model = tmp_path / "m.onnx"
    graphtag.save(mlp_with_hierarchy(), model)
    args = [
        a.replace("MODEL", str(model)).replace("OUT", str(tmp_path))
        for a in ONNX_ONLY_COMMANDS[command]
    ]
    code = (
        "import sys\n"
        "from graphtag.cli import main\n"
        f"assert main({args!r}) == 0\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


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
    assert lines[0].split() == ["pass", "ms", "modified", "stats"]
    assert lines[2].split()[0] == "toposort" and lines[2].split()[-1] == "no"
    assert lines[-1].startswith("total")
    assert digest(mlp_path) == before
    model = graphtag.load(out)
    assert metadata.node_tag(next(iter(model.graph))) == "/MLP/Layer.fc1"


def test_time_passes_shows_statistics_and_diagnostics_and_verbose_logs(mlp_path, tmp_path):
    out = tmp_path / "out.onnx"
    proc = run_cli(
        "run", mlp_path, "-p", "multi-consumer,function-outlining{all=true}", "-o", out,
        "--time-passes",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[2:]}
    assert "values=8 shared_parameters=0" in rows["multi-consumer"]  # wraps at 80 columns
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80
    assert "INFO" not in proc.stderr  # quiet without -v
    proc = run_cli(
        "run", mlp_path, "-p", "multi-consumer,function-outlining{all=true}", "-o", out,
        "--format", "json",
    )  # fmt: skip
    data = json.loads(proc.stdout)
    stats = {p["name"]: p["stats"] for p in data["passes"]}
    assert stats["multi-consumer"] == {"values": 8, "shared_parameters": 0, "reused_parameters": 0}
    assert stats["function-outlining"] == {"outlined": 2, "functions": 2, "skipped": 0}
    # Without tags there is nothing to record: the pass says so, in the table and with -v.
    model = graphtag.load(mlp_path)
    for node in model.graph:
        node.metadata_props.clear()
    graphtag.save(model, tmp_path / "untagged.onnx")
    proc = run_cli(
        "-v", "run", tmp_path / "untagged.onnx", "-p", "multi-consumer", "-o", out, "--time-passes"
    )
    assert proc.returncode == 0, proc.stderr
    assert "multi-consumer: no node carries a tag: no consumers recorded" in proc.stdout
    assert "graphtag: INFO: graphtag.passes.multi_consumer: no node carries a tag" in proc.stderr
    assert "graphtag: INFO: graphtag.pipeline.manager: pass multi-consumer" in proc.stderr
    debug = run_cli("-vv", "run", mlp_path, "-p", "tag-propagation,residual-resolution", "-o", out)
    assert "DEBUG" in debug.stderr and "analysis hierarchy: reused" in debug.stderr


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
        run_cli("run", mlp_path, "-p", "toposort", "-o", mlp_path), "overwrite an input"
    )
    assert digest(mlp_path) == before
