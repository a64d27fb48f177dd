from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from onnx_builders import tagged_mlp

import graphtag
from graphtag.testing import graphtag_golden  # noqa: F401  (the golden-snapshot fixture)


@pytest.fixture
def mlp_path(tmp_path: Path) -> Path:
    path = tmp_path / "mlp.onnx"
    graphtag.save(tagged_mlp(), path)
    return path


# Files whose tests share a module-scoped fixture that takes long to build: each runs on
# one xdist worker, or every worker that gets one of its tests builds the fixture again
# (the sweep subset: 90 s per worker). xdist's own ``--dist loadgroup`` cannot do this
# here: it regroups by rewriting ``item._nodeid``, which pytest 9.2 no longer reads.
ONE_WORKER_FILES = {"test_sweep.py", "test_core_install.py", "test_external_data.py"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getvalue("dist") != "load":  # an explicit --dist mode is kept
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FilesOnOneWorker(LoadScopeScheduling):
        """``load`` scheduling (each test its own unit), but the tests of
        :data:`ONE_WORKER_FILES` form one unit per file."""

        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if Path(path).name in ONE_WORKER_FILES else nodeid

    return FilesOnOneWorker(config, log)
