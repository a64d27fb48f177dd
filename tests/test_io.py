"""load/save: atomic writes, external data, lazy weights."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx_builders import feeds, run_ort, tagged_mlp

import graphtag
from graphtag.core import io as gio
from graphtag.core import metadata, proto_file


def test_round_trip_keeps_metadata(tmp_path):
    model = tagged_mlp()
    model.metadata_props["pkg.graphtag.version"] = "test"
    path = graphtag.save(model, tmp_path / "m.onnx")
    # graphtag.core.proto_file writes protobuf's own encoding, field by field.
    assert path.read_bytes() == ir.serde.serialize_model(model).SerializeToString()
    loaded = graphtag.load(path)
    assert [metadata.node_tag(n) for n in loaded.graph] == [
        metadata.node_tag(n) for n in model.graph
    ]
    assert loaded.metadata_props["pkg.graphtag.version"] == "test"
    onnx.checker.check_model(str(path), full_check=True)
    np.testing.assert_array_equal(run_ort(path, feeds(model))[0], run_ort(model, feeds(model))[0])


def test_failed_save_leaves_existing_output_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    graphtag.save(tagged_mlp(seed=1), path)
    before = path.read_bytes()

    def failing_write(proto, target):
        with open(target, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(proto_file, "write_proto", failing_write)
    with pytest.raises(graphtag.GraphtagError, match="could not write .*disk full"):
        graphtag.save(tagged_mlp(seed=2), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_external_data_switches_on_above_threshold(tmp_path, monkeypatch):
    model = tagged_mlp(hidden=64)
    expected = run_ort(model, feeds(model))[0]
    # Pretend the protobuf limit is tiny so the automatic switch triggers on a small model.
    monkeypatch.setattr(gio, "EXTERNAL_DATA_THRESHOLD_BYTES", 64)
    path = graphtag.save(model, tmp_path / "big.onnx")
    data = tmp_path / "big.onnx.data"
    # onnx_ir keeps tensors under 256 bytes inline; the two large ones go to the data file.
    assert data.stat().st_size >= 2 * 64 * 4 * 3
    proto = onnx.load(str(path), load_external_data=False)
    locations = {t.name: t.data_location for t in proto.graph.initializer}
    assert locations["fc1.weight"] == locations["fc2.weight"] == onnx.TensorProto.EXTERNAL
    onnx.checker.check_model(str(path), full_check=True)
    np.testing.assert_allclose(run_ort(path, feeds(model))[0], expected, rtol=0, atol=0)
    # Loading keeps the weights on disk until read.
    loaded = graphtag.load(path)
    weight = loaded.graph.initializers["fc1.weight"].const_value
    assert isinstance(weight, ir.ExternalTensor)
    # Saving elsewhere (below threshold) keeps the weights in a data file of its own...
    monkeypatch.setattr(gio, "EXTERNAL_DATA_THRESHOLD_BYTES", 10**12)
    (tmp_path / "elsewhere").mkdir()
    copy = graphtag.save(loaded, tmp_path / "elsewhere" / "copy.onnx")
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == [
        "copy.onnx",
        "copy.onnx.data",
    ]
    np.testing.assert_allclose(run_ort(copy, feeds(model))[0], expected, rtol=0, atol=0)
    # ... and external_data=False embeds them.
    embedded = graphtag.save(loaded, tmp_path / "elsewhere" / "embedded.onnx", external_data=False)
    assert not (tmp_path / "elsewhere" / "embedded.onnx.data").exists()
    np.testing.assert_allclose(run_ort(embedded, feeds(model))[0], expected, rtol=0, atol=0)


def test_load_errors(tmp_path):
    with pytest.raises(graphtag.GraphtagError, match="no such file"):
        graphtag.load(tmp_path / "nope.onnx")
    with pytest.raises(graphtag.GraphtagError, match="is a directory"):
        graphtag.load(tmp_path)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\x00garbage")
    with pytest.raises(graphtag.GraphtagError, match="not a readable ONNX model"):
        graphtag.load(bad)
