"""Bad inputs are the user's problem, said in one line with exit 2; plugins that misbehave
at import are disabled by name; options given twice are errors; start-up stays light.

Real subprocesses (``python -m graphtag``) where the process boundary matters (exit
status, stderr, what got imported), in-process ``main`` elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import onnx
import pytest
from cli_helpers import digest, run_cli
from onnx_builders import tagged_mlp

import graphtag
from graphtag.cli import COMMANDS, main
from graphtag.core.errors import PipelineError
from graphtag.pipeline import parse_pipeline
from graphtag.pipeline.parse import load_pipeline_toml


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("graphtag: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def mlp(tmp_path):
    return graphtag.save(tagged_mlp(), tmp_path / "mlp.onnx")


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "M"],
        ["analyze", "M"],
        ["snapshot", "M", "-o", "OUT"],
        ["run", "M", "-p", "toposort", "-o", "OUT"],
    ],
    ids=lambda a: a[0],
)
@pytest.mark.parametrize("kind", ["empty", "graphless"])
def test_empty_or_graphless_file_is_not_a_model(tmp_path, capsys, argv, kind):
    path = tmp_path / "m.onnx"
    if kind == "empty":
        path.write_bytes(b"")
    else:  # a valid ModelProto with no graph
        path.write_bytes(onnx.ModelProto(ir_version=10, producer_name="x").SerializeToString())
    out = tmp_path / "out"
    args = [{"M": str(path), "OUT": str(out)}.get(a, a) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("graphtag: error:")]
    assert len(line) == 1 and str(path) in line[0], err
    assert ("empty file" if kind == "empty" else "no graph") in line[0]
    assert not out.exists()


def test_invalid_utf8_is_found_by_validate_and_refused_by_run(tmp_path, mlp):
    data = mlp.read_bytes()
    model = onnx.load_from_string(data)
    model.metadata_props.add(key="note", value="PLACEHOLDER")
    # Same length: the protobuf framing stays valid, only the text is not UTF-8.
    text = model.SerializeToString().replace(b"PLACEHOLDER", b"bad\xff\xfe__utf8")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(text)
    proc = run_cli("validate", corrupt, "--format", "json")
    assert proc.returncode == 1, proc.stderr
    rules = {r["rule"]: r for r in json.loads(proc.stdout)["rules"]}
    assert rules["strings"]["status"] == "FAIL"
    assert "note" in rules["strings"]["detail"] and "\\xff" in rules["strings"]["detail"]
    out = tmp_path / "out.onnx"
    proc = run_cli("run", corrupt, "-p", "toposort", "-o", out)
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert str(corrupt) in line and "UTF-8" in line and "out.onnx" not in line
    assert not out.exists()


def test_verify_each_blames_the_input_not_the_first_pass(tmp_path, mlp):
    model = graphtag.load(mlp)
    model.graph.node(0).metadata_props["pkg.graphtag.module"] = "not a tag"
    bad = graphtag.save(model, tmp_path / "bad.onnx")
    proc = run_cli("run", bad, "-p", "toposort", "-o", tmp_path / "o.onnx", "--verify-each")
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "the input model is invalid before any pass ran" in line, line
    assert "toposort" not in line, line
    # Without --verify-each the same input runs (the check is verify-each's).
    assert run_cli("run", bad, "-p", "toposort", "-o", tmp_path / "o.onnx").returncode == 0


# -- options given twice ------------------------------------------------------------------


def test_one_option_twice_in_any_spelling_is_an_error(tmp_path):
    with pytest.raises(PipelineError, match="given twice .*group_by_tag.*group-by-tag"):
        parse_pipeline("toposort{group_by_tag=maybe,group-by-tag=true}")
    toml = tmp_path / "p.toml"
    toml.write_text('[[pass]]\nname = "toposort"\ngroup_by_tag = false\ngroup-by-tag = true\n')
    with pytest.raises(PipelineError, match="twice"):
        load_pipeline_toml(toml)
    from graphtag.pipeline import registry

    with pytest.raises(PipelineError, match="given twice"):
        registry().get("toposort").create({"group_by_tag": True, "group-by-tag": False})
    # The pass keeps its own name (the option's name used to replace it).
    assert parse_pipeline("toposort{group-by-tag=true}")[0].name == "toposort"


# -- plugins ------------------------------------------------------------------------------


@pytest.fixture
def exiting_plugin(tmp_path):
    """An installed distribution (dist-info on PYTHONPATH) whose pass calls sys.exit()."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "exitplug.py").write_text("import sys\nsys.exit(3)\n")
    info = site / "exitplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: exitplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[graphtag.passes]\nexit-pass = exitplug:Pass\n")
    return site


def _with_path(site, *args):
    import os

    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run(
        [sys.executable, "-m", "graphtag", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_plugin_calling_sys_exit_is_disabled_by_name(exiting_plugin, mlp, tmp_path):
    proc = _with_path(exiting_plugin, "passes", "list")
    assert proc.returncode == 0, proc.stderr
    assert "toposort" in proc.stdout
    assert "pass 'exit-pass' (plugin exitplug) not loaded: called sys.exit(3)" in proc.stderr
    out = tmp_path / "o.onnx"
    proc = _with_path(exiting_plugin, "run", mlp, "-p", "toposort", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert out.exists()
    proc = _with_path(exiting_plugin, "run", mlp, "-p", "exit-pass", "-o", out)
    assert proc.returncode == 2 and "exit-pass" in _one_error_line(proc)


# -- start-up -----------------------------------------------------------------------------

_IMPORTS = textwrap.dedent(
    """
    import sys
    from graphtag.cli import main
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
    heavy = sorted(m for m in ("onnx", "onnx_ir", "torch", "numpy", "rich") if m in sys.modules)
    print("HEAVY=" + ",".join(heavy), file=sys.stderr)
    """
)


@pytest.mark.parametrize(
    "argv", [["--version"], ["--help"], *([c.removesuffix("_cmd"), "--help"] for c in COMMANDS)]
)
def test_parsing_and_help_import_nothing_heavy(argv):
    if argv[0] == "zoo":  # the module zoo_cmd holds snapshot and zoo
        argv = ["snapshot", "--help"]
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORTS, *argv], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY=\n" in proc.stderr + "\n", proc.stderr


def test_input_unchanged_by_a_failed_run(tmp_path, mlp):
    before = digest(mlp)
    assert run_cli("run", mlp, "-p", "no-such-pass", "-o", tmp_path / "o.onnx").returncode == 2
    assert digest(mlp) == before
