"""``graphtag passes`` / ``graphtag run``: output, bad input, layering."""

from __future__ import annotations

import argparse
import contextlib
import csv
import getpass
import io
import json
import os
import shutil
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


# Every command that reads a file: its arguments (IN/ and OUT/ are folders filled in by
# the test), the entries it writes into OUT/, and whether it works on ONNX files only
# (then it must never import torch). IN/ holds m.onnx (tagged), r.onnx (the same model
# with every node's metadata dropped, as ONNX Runtime writes it), p.json (a profile),
# factories.py, specs.json, ZOO.toml and golden/.
FILE_COMMANDS: dict[str, tuple[list[str], set[str], bool]] = {
    "run": (
        [
            "run",
            "IN/m.onnx",
            "-p",
            "toposort,tag-propagation,multi-consumer,residual-resolution,boundary-detection,"
            "function-outlining{all=true},function-inlining",
            "-o",
            "OUT/o.onnx",
        ],
        {"o.onnx"},
        True,
    ),
    "passes-list": (["passes", "list"], set(), True),
    "analyze": (["analyze", "IN/m.onnx", "--format", "detailed"], set(), True),
    "validate": (["validate", "IN/m.onnx"], set(), True),
    "extract-all": (["extract", "IN/m.onnx", "--all", "-o", "OUT/modules"], {"modules"}, True),
    "extract-one": (
        ["extract", "IN/m.onnx", "--module", "/MLP/Layer.fc1", "-o", "OUT/one.onnx"],
        {"one.onnx"},
        True,
    ),
    "dag": (
        ["dag", "IN/m.onnx", "-o", "OUT/dag.json", "--ops", "OUT/ops.json"],
        {"dag.json", "ops.json"},
        True,
    ),
    "report": (
        ["report", "IN/m.onnx", "--profile", "IN/p.json", "-o", "OUT/report.html"],
        {"report.html"},
        True,
    ),
    "compare": (["compare", "--topology", "IN/m.onnx", "IN/r.onnx"], set(), True),
    "nodes": (["nodes", "IN/m.onnx", "--module", "*/Layer.fc1", "--initializers"], set(), True),
    "profile": (
        [
            "profile",
            "IN/m.onnx",
            "--warmup",
            "1",
            "--runs",
            "2",
            "-o",
            "OUT/profile.json",
            "--save-trace",
            "OUT/trace.json",
        ],
        {"profile.json", "trace.json"},
        True,
    ),
    "profile-compare": (["profile", "--compare", "IN/p.json", "IN/p.json"], set(), True),
    "snapshot": (["snapshot", "IN/m.onnx", "-o", "OUT/snap.json"], {"snap.json"}, True),
    "retag": (
        ["retag", "IN/m.onnx", "IN/r.onnx", "-o", "OUT/retagged.onnx"],
        {"retagged.onnx"},
        True,
    ),
    "export": (
        [
            "export",
            "IN/factories.py:net",
            "OUT/e.onnx",
            "--input-specs",
            "IN/specs.json",
            "--sidecar",
        ],
        {"e.onnx", "e.onnx.graphtag.json"},
        False,
    ),
    "verify": (["verify", "IN/factories.py:net"], set(), False),
    "zoo-check": (["zoo", "check", "IN/ZOO.toml", "--golden", "IN/golden"], set(), False),
}

# What torch and onnxruntime themselves leave in TMPDIR (import onnxruntime writes .ses,
# torch's dynamo exporter creates its inductor cache folder): not graphtag's files.
THIRD_PARTY_TMP = {".ses", f"torchinductor_{getpass.getuser()}"}

FACTORY = """
import torch


def net():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3)).eval()
    return model, (torch.randn(2, 4),)
"""


@pytest.fixture(scope="module")
def file_command_inputs(tmp_path_factory):
    """IN/ built once (exporting the golden costs a torch export); each test copies it."""
    from test_analysis import mlp_with_hierarchy

    from graphtag.exporter.zoo import export_snapshot, load_zoo
    from graphtag.tools.snapshot import dumps

    folder = tmp_path_factory.mktemp("file-commands") / "IN"
    folder.mkdir()
    model = mlp_with_hierarchy()
    graphtag.save(model, folder / "m.onnx")
    for node in model.graph:
        node.metadata_props.clear()
    graphtag.save(model, folder / "r.onnx")
    timing = {"self_ms": 0.5, "total_ms": 1.0}
    profile = {"schema": "graphtag.profile/1", "total_ms": 1.0, "modules": {"/MLP": timing}}
    (folder / "p.json").write_text(json.dumps(profile))
    (folder / "factories.py").write_text(FACTORY)
    (folder / "specs.json").write_text(json.dumps({"input": {"shape": [2, 4], "dtype": "float32"}}))
    (folder / "ZOO.toml").write_text('[[model]]\nname = "net"\nsource = "factories.py:net"\n')
    (folder / "golden").mkdir()
    (entry,) = load_zoo(folder / "ZOO.toml")
    with contextlib.chdir(folder):  # as zoo check's worker: sources relative to the file
        snapshot = export_snapshot(entry, folder)["snapshot"]
    (folder / "golden" / "net.json").write_text(dumps(snapshot))
    return folder


def _tree(folder) -> dict[str, str]:
    """Relative path -> sha256 of every file below ``folder`` (folders end with '/')."""
    return {
        str(p.relative_to(folder)) + ("/" if p.is_dir() else ""): "" if p.is_dir() else digest(p)
        for p in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize("command", list(FILE_COMMANDS))
def test_commands_leave_inputs_alone_and_onnx_ones_never_import_torch(
    command, tmp_path, file_command_inputs
):
    """Inputs byte-identical and nothing added beside them, only the named outputs
    written, no temporary file left anywhere (the working folder and TMPDIR stay empty),
    and for the commands working on ONNX files, torch and transformers never imported."""
    args, outputs, onnx_only = FILE_COMMANDS[command]
    folders = {name: tmp_path / name for name in ("IN", "OUT", "cwd", "tmp")}
    shutil.copytree(file_command_inputs, folders["IN"])
    for name in ("OUT", "cwd", "tmp"):
        folders[name].mkdir()
    args = [
        a.replace("IN/", f"{folders['IN']}/").replace("OUT/", f"{folders['OUT']}/") for a in args
    ]
    before = _tree(folders["IN"])
    code = (
        "import sys\n"
        "from graphtag.cli import main\n"
        f"status = main({args!r})\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        f"assert status == 0, status\n"
        f"assert {not onnx_only} or not heavy, heavy\n"
    )
    env = {**os.environ, "TMPDIR": str(folders["tmp"])}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=folders["cwd"], env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _tree(folders["IN"]) == before
    assert {p.name for p in folders["OUT"].iterdir()} == outputs
    assert not list(folders["cwd"].iterdir())
    assert {p.name for p in folders["tmp"].iterdir()} <= THIRD_PARTY_TMP


def test_every_command_is_in_the_file_command_test():
    from graphtag.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    covered = {args[0] for args, _, _ in FILE_COMMANDS.values()}
    assert set(commands.choices) == covered


def test_a_command_s_own_parser_is_the_full_parser_s():
    """main() builds only the named command's parser: same options, help and defaults."""
    from graphtag.cli import _command_word, build_parser

    full = build_parser()
    commands = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction))
    lazy = 0
    for name, sub in commands.choices.items():
        word = _command_word(["-v", name, "x.onnx"])
        if word is None:  # held by a module of another name: the full parser is used
            continue
        own = build_parser(word)
        own_sub = next(
            a for a in own._actions if isinstance(a, argparse._SubParsersAction)
        ).choices[name]
        assert own_sub.format_help() == sub.format_help(), name
        assert _options(own_sub) == _options(sub), name
        lazy += 1
    assert lazy >= len(commands.choices) - 1
    assert _command_word(["--debug"]) is None and _command_word(["nosuch"]) is None


def _options(parser: argparse.ArgumentParser) -> list[tuple]:
    # a subcommand's choices are parsers (compared by name; their help is compared above)
    return [
        (a.option_strings, a.dest, a.default, None if a.choices is None else list(a.choices))
        for a in parser._actions
    ]


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
