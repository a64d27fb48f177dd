"""Run the installed ``graphtag`` command the way a user does."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 600, columns: int | None = None
) -> subprocess.CompletedProcess:
    """``columns`` sets the width tables fit (COLUMNS); 80 otherwise (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "graphtag", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=_env(columns),
    )


def run_main(monkeypatch, capsys, *args: str, columns: int | None = None):
    """``graphtag ARGS`` through ``graphtag.cli.main`` in this process, output and exit
    status as :func:`run_cli` returns them: for a torch command whose subprocess would
    mostly repeat the torch import this process has done (each command also runs as a
    real process elsewhere)."""
    from graphtag.cli import main

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", str(columns))
    capsys.readouterr()  # only this command's output
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["graphtag", *map(str, args)], code, out, err)


def _env(columns: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return env


class CliPool:
    """``graphtag`` commands, ``workers`` at a time, mostly without paying for imports.

    :meth:`fork` runs ``python -m graphtag ARGS`` as a child forked from a worker process
    that has imported torch, transformers and graphtag's exporter but run nothing: a
    fresh process per command, with its own stdout and stderr (files, read back) and
    exit status, only the seconds-long import already done. :meth:`run` runs the
    real command (:func:`run_cli`) in the same pool, for the runs that must start from
    nothing (what the import itself prints is only seen there).
    """

    def __init__(self, workers: int):
        self._pool = ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_preload
        )

    def fork(
        self, *args: str, cwd: Path | None = None, timeout: float = 600, columns: int | None = None
    ) -> Future:
        return self._pool.submit(_forked_cli, [str(a) for a in args], cwd, timeout, columns)

    def run(self, *args: str, **kwargs) -> Future:
        return self._pool.submit(run_cli, *map(str, args), **kwargs)

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


def _preload() -> None:
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import graphtag.cli
    import graphtag.exporter.sources
    import graphtag.exporter.tagged_export  # noqa: F401
    from graphtag.exporter import torch_registry

    # torch's ONNX function table, as a process has it after its first export (the
    # same table: graphtag.exporter.torch_registry).
    if torch_registry.install():
        from torch.onnx._internal.exporter._registration import ONNXRegistry

        ONNXRegistry.from_torchlib()


def _forked_cli(args: list[str], cwd: Path | None, timeout: float, columns: int | None):
    with tempfile.TemporaryDirectory(prefix="graphtag-cli-") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: the command, then exit with its status, nothing else
            code = 1
            try:
                os.environ.clear()
                os.environ.update(_env(columns))
                if cwd is not None:
                    os.chdir(cwd)
                for fd, path in ((1, out), (2, err)):
                    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
                sys.argv = [sys.argv[0], *args]
                from graphtag.cli import main

                code = main(args)
            except SystemExit as exc:  # as the interpreter treats it
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
            except BaseException:
                traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        deadline = time.monotonic() + timeout
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise subprocess.TimeoutExpired(["graphtag", *args], timeout)
            time.sleep(0.02)
        status = done[1]
        return subprocess.CompletedProcess(
            ["graphtag", *args],
            os.waitstatus_to_exitcode(status),
            out.read_text(),
            err.read_text(),
        )


def assert_clean_failure(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Non-zero exit, one line on stderr naming the problem, no traceback."""
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("graphtag: error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
