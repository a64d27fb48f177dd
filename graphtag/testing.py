"""pytest integration: golden snapshots of tagged exports with syrupy.

In a test::

    from graphtag.testing import graphtag_snapshot

    def test_my_model_export(graphtag_golden):
        assert graphtag_snapshot("my_model.onnx") == graphtag_golden

``graphtag_golden`` is a fixture (add ``pytest_plugins = ["graphtag.testing"]`` to your
conftest.py) that stores one JSON file per test in ``golden/`` beside your tests folder;
``GoldenJSONExtension.at(folder)`` gives an extension for any other folder. Refresh with
``pytest --snapshot-update``. Snapshots are graphtag.tools.snapshot's canonical JSON, which is
deterministic, so the files are stable across runs and pytest-xdist workers.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx_ir as ir
import pytest
from syrupy.data import SnapshotCollections
from syrupy.extensions.json import JSONSnapshotExtension

from graphtag.core.io import load
from graphtag.tools.snapshot import snapshot


class GoldenJSONExtension(JSONSnapshotExtension):
    """One JSON file per snapshot under ``<tests folder>/../golden`` (or :meth:`at`)."""

    golden_dir: str | None = None

    @classmethod
    def dirname(cls, *, test_location) -> str:
        if cls.golden_dir is not None:
            return cls.golden_dir
        return str(Path(test_location.filepath).parent.parent / "golden")

    def discover_snapshots(self, *, test_location, ignore_extensions=None):
        # syrupy scans the folder recursively; files in sub-folders (e.g. the golden files
        # of `graphtag zoo check`) belong to other tools, not to this extension.
        folder = Path(self.dirname(test_location=test_location)).resolve()
        found = super().discover_snapshots(
            test_location=test_location, ignore_extensions=ignore_extensions
        )
        kept = SnapshotCollections()
        for collection in found:
            if Path(collection.location).resolve().parent == folder:
                kept.add(collection)
        return kept

    @classmethod
    def at(cls, folder: str | os.PathLike) -> type[GoldenJSONExtension]:
        """An extension class storing its files in ``folder``."""
        return type("GoldenJSONExtensionAt", (cls,), {"golden_dir": str(Path(folder).resolve())})


def graphtag_snapshot(model_or_path: ir.Model | str | os.PathLike) -> dict:
    """The canonical snapshot (graphtag.tools.snapshot) of a model or an ONNX file."""
    model = model_or_path if isinstance(model_or_path, ir.Model) else load(model_or_path)
    return snapshot(model)


@pytest.fixture
def graphtag_golden(snapshot):
    """syrupy's ``snapshot`` fixture storing golden JSON files (see module docstring)."""
    return snapshot.use_extension(GoldenJSONExtension)
