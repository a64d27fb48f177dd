"""The torch-free core: ``pip install graphtag`` alone, in a fresh virtual environment.

The package is installed from a copy of this checkout (non-editable, without the
``export`` extra), then every command that works on an ONNX file runs on a real tagged
export made by this test session's own (full) environment. torch and transformers must
not be importable there, and ``graphtag export`` must say which extra to install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest
from zoo_exports import zoo_export

ROOT = Path(__file__).resolve().parent.parent


def _tracked_files() -> list[str]:
    proc = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.skip(f"not a git checkout ({proc.stderr.strip()}): cannot copy the sources")
    return [name for name in proc.stdout.split("\0") if name]


@pytest.fixture(scope="module")
def core_env(tmp_path_factory) -> Path:
    """A fresh venv with graphtag installed from a copy of the checkout, core only."""
    base = tmp_path_factory.mktemp("core-install")
    source = base / "src"
    for name in _tracked_files():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        path = ROOT / name
        if path.is_symlink():
            os.symlink(os.readlink(path), target)
        elif path.is_file():
            shutil.copy2(path, target)
    env_dir = base / "venv"
    venv.create(env_dir, with_pip=True)
    # --no-compile: no bytecode for every file of every dependency (most of the install's
    # time); the commands below compile what they import, as Python always does.
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile"]
    proc = subprocess.run([*pip, str(source)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return env_dir / "bin"


def _env() -> dict[str, str]:
    """This environment without what would point the fresh venv's Python elsewhere."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _run(bin_dir: Path, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(bin_dir / "graphtag"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(),
        check=False,
        timeout=300,
    )


def test_torch_is_not_installed(core_env):
    proc = subprocess.run(
        [
            str(core_env / "python"),
            "-c",
            "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('transformers'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=_env(),
    )
    assert proc.stdout.split() == ["None", "None"]
    # The installed package is the copy, not this checkout.
    where = subprocess.run(
        [str(core_env / "python"), "-c", "import graphtag; print(graphtag.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=core_env,
        env=_env(),
    )
    assert str(ROOT) not in where.stdout


def test_onnx_commands_work_without_torch(core_env, tmp_path):
    model = zoo_export("siblings", "dynamo").path
    work = tmp_path
    ok = [
        ("--version",),
        ("passes", "list"),
        ("validate", model),
        ("analyze", model, "--format", "json"),
        ("run", model, "-p", "toposort,tag-propagation,multi-consumer", "-o", work / "run.onnx"),
        ("extract", model, "--all", "-o", work / "modules"),
        ("nodes", model, "--module", "*/Block.shared"),
        ("run", model, "-p", "function-outlining{all=true}@*/Block.shared", "-o", work / "s.onnx"),
        ("dag", model, "-o", work / "dag.json"),
        ("snapshot", model, "-o", work / "snap.json"),
        ("compare", "--topology", model, work / "run.onnx"),
        ("retag", model, work / "run.onnx", "-o", work / "retagged.onnx"),
        ("report", model, "-o", work / "report.html"),
        ("profile", model, "--runs", "1", "--warmup", "0", "-o", work / "profile.json"),
    ]
    for args in ok:
        proc = _run(core_env, *args, cwd=work)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
    assert json.loads((work / "snap.json").read_text())["modules"]
    assert (work / "modules" / "index.json").is_file()


@pytest.mark.parametrize("command", ["export", "verify", "profile"])
def test_export_edge_says_what_to_install(core_env, tmp_path, command):
    args = [command, "graphtag.exporter.examples:tiny_bert"]
    if command == "profile":
        args.append("--torch")
    if command == "export":
        args.append(tmp_path / "out.onnx")
    proc = _run(core_env, *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("graphtag: error:") and "graphtag[export]" in lines[-1]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.onnx").exists()
