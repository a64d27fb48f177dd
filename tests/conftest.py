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
