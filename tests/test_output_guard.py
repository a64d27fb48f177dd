"""No command writes over what it reads: every writing command x every way of naming an
input as its output is refused (exit 2, one line), the input is unchanged, nothing is
left behind. The commands run in-process (``graphtag.cli.main``), as the user's would."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from cli_helpers import digest
from reliability_models import control_flow_model

import graphtag
from graphtag.cli import main

FACTORY = """\
import torch


def factory():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 2), (torch.randn(1, 4),)
"""


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """A folder holding every kind of input the writing commands read (cwd)."""
    graphtag.save(control_flow_model(), tmp_path / "m.onnx")
    graphtag.save(control_flow_model(seed=1), tmp_path / "ref.onnx")
    (tmp_path / "pipe.toml").write_text('[[pass]]\nname = "toposort"\n')
    (tmp_path / "prof.json").write_text('{"schema": "graphtag.profile/1", "modules": {}}')
    (tmp_path / "f.py").write_text(FACTORY)
    (tmp_path / "specs.json").write_text(json.dumps({"input": {"shape": [1, 4]}}))
    model_dir = tmp_path / "hf"
    model_dir.mkdir()
    (model_dir / "config.json").write_text('{"model_type": "bert"}')
    package = tmp_path / "pkgx"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text(FACTORY)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("pkgx", "pkgx.mod"):  # each test imports its own copy
        monkeypatch.delitem(sys.modules, name, raising=False)
    return tmp_path


# How an input file X (in the working folder) can be named as an output.
def _same(work: Path, name: str) -> str:
    return name


def _absolute(work: Path, name: str) -> str:
    return str(work / name)


def _dotted(work: Path, name: str) -> str:
    return f"./sub/../{name}"


def _symlink(work: Path, name: str) -> str:
    link = work / f"link-{name.replace('/', '_')}"
    link.symlink_to(work / name)
    return link.name


def _folder_symlink(work: Path, name: str) -> str:
    folder = work / "alias"
    if not folder.exists():
        folder.symlink_to(work)
    return f"alias/{name}"


def _hard_link(work: Path, name: str) -> str:
    link = work / f"hard-{name.replace('/', '_')}"
    os.link(work / name, link)
    return link.name


NAMINGS = [_same, _absolute, _dotted, _symlink, _folder_symlink, _hard_link]

# (command id, the input it reads, argv with OUT where the output goes)
CASES = [
    ("run", "m.onnx", ["run", "m.onnx", "-p", "toposort", "-o", "OUT"]),
    ("run-pipeline-file", "pipe.toml", ["run", "m.onnx", "--pipeline-file", "pipe.toml", "-o", "OUT"]),
    ("run-dump", "after-00-toposort.onnx", ["run", "after-00-toposort.onnx", "-p", "toposort", "-o", "x.onnx", "--dump-after", "toposort", "--dump-dir", "DUMPDIR"]),
    ("extract", "m.onnx", ["extract", "m.onnx", "--module", "/Net/Gate", "-o", "OUT"]),
    ("extract-all", "m.onnx", ["extract", "m.onnx", "--all", "-o", "OUT"]),
    ("dag", "m.onnx", ["dag", "m.onnx", "-o", "OUT"]),
    ("dag-ops", "m.onnx", ["dag", "m.onnx", "-o", "d.json", "--ops", "OUT"]),
    ("snapshot", "m.onnx", ["snapshot", "m.onnx", "-o", "OUT"]),
    ("report", "m.onnx", ["report", "m.onnx", "-o", "OUT"]),
    ("report-profile", "prof.json", ["report", "m.onnx", "--profile", "prof.json", "-o", "OUT"]),
    ("retag-reference", "ref.onnx", ["retag", "ref.onnx", "m.onnx", "-o", "OUT"]),
    ("retag-rewritten", "m.onnx", ["retag", "ref.onnx", "m.onnx", "-o", "OUT"]),
    ("export-factory-file", "f.py", ["export", "f.py:factory", "OUT"]),
    ("export-input-specs", "specs.json", ["export", "f.py:factory", "OUT", "--input-specs", "specs.json"]),
    ("export-model-dir", "hf/config.json", ["export", "hf", "OUT", "--random-init"]),
    ("export-module", "pkgx/mod.py", ["export", "pkgx.mod:factory", "OUT"]),
    ("profile", "m.onnx", ["profile", "m.onnx", "--runs", "1", "--warmup", "0", "-o", "OUT"]),
    ("profile-optimized", "m.onnx", ["profile", "m.onnx", "--runs", "1", "--save-optimized", "OUT"]),
    ("profile-trace", "m.onnx", ["profile", "m.onnx", "--runs", "1", "--save-trace", "OUT"]),
    ("profile-factory-file", "f.py", ["profile", "f.py:factory", "--runs", "1", "-o", "OUT"]),
]  # fmt: skip


def _files(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): digest(p)
        for p in folder.rglob("*")
        if p.is_file() and not p.is_symlink() and "alias" not in p.parts
    }


@pytest.mark.parametrize("naming", NAMINGS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize(("command", "source", "argv"), CASES, ids=[c[0] for c in CASES])
def test_output_naming_an_input_is_refused(work, capsys, command, source, argv, naming):
    if command == "run-dump":
        if naming in (_symlink, _hard_link):
            pytest.skip("the dump file's name is fixed: only its folder can alias the input")
        # --dump-after writes DUMPDIR/after-00-toposort.onnx: make that the input.
        (work / "after-00-toposort.onnx").write_bytes((work / "ref.onnx").read_bytes())
        folder = {"_same": ".", "_absolute": str(work), "_dotted": "./sub/.."}.get(
            naming.__name__, "alias"
        )
        if naming is _folder_symlink:
            _folder_symlink(work, "x")
        args = [a.replace("DUMPDIR", folder) for a in argv]
    else:
        out = naming(work, source)
        args = [out if a == "OUT" else a for a in argv]
    before = _files(work)
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("graphtag: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "overwrite" in lines[0] or "exists and is not a directory" in lines[0], lines[0]
    after = _files(work)
    assert after == before  # the input unchanged, nothing written, no temporary file left


def test_two_outputs_naming_one_file_are_refused(work, capsys):
    assert main(["dag", "m.onnx", "-o", "d.json", "--ops", "./sub/../d.json"]) == 2
    assert "name the same file" in capsys.readouterr().err
    assert not (work / "d.json").exists()


def test_external_data_file_of_the_input_is_protected(work, capsys, monkeypatch):
    from onnx_builders import tagged_mlp

    from graphtag.core import io as gio

    monkeypatch.setattr(gio, "EXTERNAL_DATA_THRESHOLD_BYTES", 64)
    graphtag.save(tagged_mlp(hidden=64), work / "big.onnx")  # weights in big.onnx.data
    data = work / "big.onnx.data"
    assert data.exists()
    before = digest(data)
    assert main(["snapshot", "big.onnx", "-o", "big.onnx.data"]) == 2
    assert "overwrite an input (big.onnx.data)" in capsys.readouterr().err
    assert digest(data) == before


def test_writing_next_to_inputs_still_works(work, capsys):
    """The guard refuses only what it must: new files beside the inputs are written."""
    assert main(["run", "m.onnx", "-p", "toposort", "-o", "sub/out.onnx"]) == 0
    assert main(["dag", "m.onnx", "-o", "d.json", "--ops", "ops.json"]) == 0
    assert main(["extract", "m.onnx", "--all", "-o", "modules"]) == 0
    assert (work / "sub" / "out.onnx").exists() and (work / "modules" / "index.json").exists()
    # A previous export inside a model folder may be replaced (not a file it reads).
    (work / "hf" / "old.onnx").write_bytes(b"previous export")
    from graphtag.core.outputs import files_read_in

    assert work / "hf" / "old.onnx" not in files_read_in(work / "hf")
    assert work / "hf" / "config.json" in files_read_in(work / "hf")
