"""External data at small scale: what bench/bench_large.py measures on multi-GB models.

* commands that need no weight value never read the data file (every read of an
  ``ExternalTensor`` is recorded);
* extracting one layer reads that layer's tensors only, and its data file holds them only;
* saving keeps weights external, refers to a data file beside the destination instead of
  rewriting it, and replaces model + data atomically (a failed or killed save leaves the
  old pair byte for byte; a full disk is a clear error);
* bad external data (locations leaving the folder, missing or truncated files) is one
  clear error naming the tensor and the file, exit 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
import transformers
from cli_helpers import assert_clean_failure, digest, run_cli
from onnx_builders import feeds, run_ort, tagged_mlp

import graphtag
from graphtag.cli import main
from graphtag.core import external_data as ext
from graphtag.core import io as gio
from graphtag.exporter.example_inputs import make_example_inputs
from graphtag.exporter.examples import perturb_parameters

LAYER = "/LlamaForCausalLM/LlamaModel/LlamaDecoderLayer.1"


# -- a small Llama with its weights in a data file -------------------------------------


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    """A 4-layer Llama (hidden 128, about 4.7 MB of float32 weights) exported by graphtag
    to ``llama.onnx`` + ``llama.onnx.data`` (torch's default external_data=True)."""
    config = transformers.LlamaConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=2000,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    perturb_parameters(model)
    inputs = make_example_inputs(model, config)
    folder = tmp_path_factory.mktemp("llama")
    graphtag.export(model, inputs.args, inputs.kwargs, folder / "llama.onnx", verbose=False)
    with torch.no_grad():
        logits = model(**inputs.kwargs).logits.numpy()
    np.save(folder / "logits.npy", logits)
    np.save(folder / "input_ids.npy", inputs.kwargs["input_ids"].numpy())
    return folder


@pytest.fixture
def llama(llama_dir, tmp_path) -> Path:
    """A private copy of the exported Llama (tests may write beside it)."""
    for name in ("llama.onnx", "llama.onnx.data"):
        (tmp_path / name).write_bytes((llama_dir / name).read_bytes())
    return tmp_path / "llama.onnx"


def _ort_logits(path: Path, llama_dir: Path) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = np.load(llama_dir / "input_ids.npy")
    feed = {i.name: ids if "ids" in i.name else np.ones_like(ids) for i in session.get_inputs()}
    return session.run(None, feed)[0]


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """Names of the external tensors whose bytes are read (mapped or copied)."""
    seen: list[str] = []
    load, tofile = ir.ExternalTensor._load, ir.ExternalTensor.tofile

    def recording_load(self):
        seen.append(self.name)
        return load(self)

    def recording_tofile(self, file):
        seen.append(self.name)
        return tofile(self, file)

    monkeypatch.setattr(ir.ExternalTensor, "_load", recording_load)
    monkeypatch.setattr(ir.ExternalTensor, "tofile", recording_tofile)
    return seen


def _locations(path: Path) -> dict[str, str | None]:
    """Initializer name -> its external data file (None when stored in the model)."""
    proto = onnx.load(str(path), load_external_data=False)
    found = {}
    for tensor in proto.graph.initializer:
        entries = {e.key: e.value for e in tensor.external_data}
        found[tensor.name] = entries.get("location")
    return found


def test_export_writes_the_weights_to_a_data_file(llama, llama_dir):
    locations = _locations(llama)
    weights = [n for n, loc in locations.items() if loc is not None]
    assert weights and set(filter(None, locations.values())) == {"llama.onnx.data"}
    onnx.checker.check_model(str(llama), full_check=True)
    np.testing.assert_allclose(
        _ort_logits(llama, llama_dir), np.load(llama_dir / "logits.npy"), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize(
    "command",
    [
        ["analyze", "{m}"],
        ["analyze", "{m}", "--format", "json"],
        ["validate", "{m}"],
        ["snapshot", "{m}"],
        ["dag", "{m}", "-o", "{d}/dag.json", "--ops", "{d}/ops.json"],
        ["run", "{m}", "-p", "tag-propagation,multi-consumer,residual-resolution", "-o", "{o}"],
        ["run", "{m}", "-p", "function-outlining{pattern=*/LlamaDecoderLayer.*}", "-o", "{o}"],
    ],
    ids=lambda c: " ".join(a for a in c[:4] if "{" not in a[:1]),
)
def test_commands_that_need_no_weight_never_read_the_data_file(llama, reads, command, capsys):
    folder = llama.parent
    data_before = digest(folder / "llama.onnx.data")
    names = {"{m}": str(llama), "{d}": str(folder), "{o}": str(folder / "out.onnx")}
    argv = [names.get(a[:3], "") + a[3:] if a[:3] in names else a for a in command]
    assert main(argv) in (0, 1), capsys.readouterr().err  # validate may find a rule failing
    assert reads == [], f"{command[0]} read external tensors {reads[:5]}"
    assert digest(folder / "llama.onnx.data") == data_before


def test_run_beside_the_source_refers_to_its_data_instead_of_rewriting(llama, llama_dir, reads):
    out = llama.parent / "tagged.onnx"
    data = llama.parent / "llama.onnx.data"
    before = (os.stat(data).st_ino, os.stat(data).st_mtime_ns, digest(data))
    assert main(["run", str(llama), "-p", "tag-propagation", "-o", str(out)]) == 0
    # No weight byte read or written: the output's tensors point into the source's file.
    assert reads == []
    assert sorted(p.name for p in llama.parent.iterdir()) == [
        "llama.onnx",
        "llama.onnx.data",
        "tagged.onnx",
    ]
    assert set(filter(None, _locations(out).values())) == {"llama.onnx.data"}
    assert (os.stat(data).st_ino, os.stat(data).st_mtime_ns, digest(data)) == before
    onnx.checker.check_model(str(out), full_check=True)
    np.testing.assert_allclose(
        _ort_logits(out, llama_dir), np.load(llama_dir / "logits.npy"), rtol=1e-4, atol=1e-4
    )


def test_save_in_another_folder_copies_the_weights_and_stands_alone(llama, llama_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = elsewhere / "copy.onnx"
    graphtag.save(graphtag.load(llama), out)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["copy.onnx", "copy.onnx.data"]
    assert set(filter(None, _locations(out).values())) == {"copy.onnx.data"}
    assert (elsewhere / "copy.onnx.data").stat().st_size == (
        llama.parent / "llama.onnx.data"
    ).stat().st_size
    np.testing.assert_allclose(
        _ort_logits(out, llama_dir), np.load(llama_dir / "logits.npy"), rtol=1e-4, atol=1e-4
    )


def _layer_tensors(path: Path, tag: str) -> dict[str, int]:
    """The external initializers nodes of module ``tag`` (or below) read -> their bytes."""
    from graphtag.analysis.boundaries import compute_boundaries

    model = graphtag.load(path)
    boundary = compute_boundaries(model, [tag])[tag]
    return {
        v.name: v.const_value.nbytes
        for v in boundary.constants
        if v.is_initializer() and isinstance(v.const_value, ir.ExternalTensor)
    }


def test_extracting_a_layer_reads_and_writes_only_its_tensors(llama, llama_dir, reads, capsys):
    layer = _layer_tensors(llama, LAYER)
    assert len(layer) >= 7  # q, k, v, o, gate, up, down projections (norm weights are tiny)
    out = llama.parent / "layer.onnx"
    assert main(["extract", str(llama), "--module", LAYER, "-o", str(out)]) == 0
    inline_max = ext.INLINE_MAX_BYTES
    assert set(reads) == set(layer), "extraction read other layers' weights"
    locations = _locations(out)
    big = {n for n, size in layer.items() if size > inline_max}
    assert {n for n, loc in locations.items() if loc == "layer.onnx.data"} == big
    assert set(filter(None, locations.values())) == {"layer.onnx.data"}
    assert (llama.parent / "layer.onnx.data").stat().st_size == sum(layer[n] for n in big)
    onnx.checker.check_model(str(out), full_check=True)
    # The layer computes what it computes inside the full model (values from ORT).
    _check_layer_against_full_model(llama, out)


def _check_layer_against_full_model(full: Path, layer: Path) -> None:
    import onnxruntime as ort

    extracted = onnx.load(str(layer), load_external_data=False)
    wanted = [o.name for o in extracted.graph.output]
    model = onnx.load(str(full), load_external_data=False)
    known = {o.name for o in model.graph.output} | {i.name for i in model.graph.input}
    for name in [*wanted, *(i.name for i in extracted.graph.input)]:
        if name not in known:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    exposed = full.parent / "exposed.onnx"
    onnx.save(model, str(exposed))  # same folder: the locations still resolve
    session = ort.InferenceSession(str(exposed), providers=["CPUExecutionProvider"])
    feed = _feed(session)
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    part = ort.InferenceSession(str(layer), providers=["CPUExecutionProvider"])
    got = part.run(None, {i.name: values.get(i.name, feed.get(i.name)) for i in part.get_inputs()})
    for name, value in zip(wanted, got, strict=True):
        np.testing.assert_allclose(value, values[name], rtol=1e-5, atol=1e-5)


def _feed(session) -> dict[str, np.ndarray]:
    ids = np.arange(8, dtype=np.int64).reshape(1, 8) + 5
    return {i.name: ids if "ids" in i.name else np.ones_like(ids) for i in session.get_inputs()}


# -- saving: threshold, atomicity, disk space ------------------------------------------


def _mlp_with_data(tmp_path: Path, seed: int = 0) -> Path:
    path = tmp_path / "m.onnx"
    graphtag.save(tagged_mlp(seed=seed, hidden=256), path, external_data=True)
    return path


def test_weights_over_the_protobuf_limit_always_go_to_a_data_file(tmp_path, monkeypatch):
    model = tagged_mlp(hidden=64)
    expected = run_ort(model, feeds(model))[0]
    monkeypatch.setattr(gio, "EXTERNAL_DATA_THRESHOLD_BYTES", 1000)
    path = graphtag.save(model, tmp_path / "big.onnx", external_data=False)  # overridden
    assert _locations(path)["fc1.weight"] == "big.onnx.data"
    np.testing.assert_array_equal(run_ort(path, feeds(model))[0], expected)


def test_saving_over_an_existing_model_replaces_model_and_data_together(tmp_path):
    path = _mlp_with_data(tmp_path, seed=1)
    new = tagged_mlp(seed=2, hidden=256)
    graphtag.save(new, path, external_data=True)
    # The old data file stays until the new model is in place, so the new data gets the
    # next free name; the old one is removed after the commit.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.1.data"]
    np.testing.assert_array_equal(run_ort(path, feeds(new))[0], run_ort(new, feeds(new))[0])
    graphtag.save(tagged_mlp(seed=3, hidden=256), path, external_data=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]


def test_saving_a_loaded_model_in_place_writes_no_weight(tmp_path, reads):
    path = _mlp_with_data(tmp_path)
    data = tmp_path / "m.onnx.data"
    before = (os.stat(data).st_ino, digest(data))
    model = graphtag.load(path)
    model.graph.node(0).metadata_props["note"] = "changed"
    graphtag.save(model, path)
    assert reads == []
    assert (os.stat(data).st_ino, digest(data)) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    assert graphtag.load(path).graph.node(0).metadata_props["note"] == "changed"


def test_a_failed_data_write_leaves_the_old_pair_and_no_temporary_file(tmp_path, monkeypatch):
    path = _mlp_with_data(tmp_path, seed=1)
    before = {p.name: digest(p) for p in tmp_path.iterdir()}
    real_tofile = ir.Tensor.tofile
    calls = []

    def full_disk(self, file):
        calls.append(self.name)
        if len(calls) == 2:  # the first tensor is written, the second finds the disk full
            raise OSError(28, "No space left on device")
        return real_tofile(self, file)

    monkeypatch.setattr(ir.Tensor, "tofile", full_disk)
    with pytest.raises(graphtag.GraphtagError, match=r"disk full .*m\.onnx and its data"):
        graphtag.save(tagged_mlp(seed=2, hidden=256), path, external_data=True)
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == before
    loaded = graphtag.load(path)
    expected = run_ort(tagged_mlp(seed=1, hidden=256), feeds(loaded))[0]
    np.testing.assert_array_equal(run_ort(path, feeds(loaded))[0], expected)


def test_a_short_write_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    # On a full tmpfs numpy's tofile raises OSError("N requested and M written"), no errno.
    path = _mlp_with_data(tmp_path, seed=1)
    before = {p.name: digest(p) for p in tmp_path.iterdir()}

    def short_write(self, file):
        file.write(b"\0" * 100)
        raise OSError(f"{self.nbytes} requested and 100 written")

    monkeypatch.setattr(ir.Tensor, "tofile", short_write)
    with pytest.raises(graphtag.GraphtagError, match=r"disk full .*short write.*unchanged"):
        graphtag.save(tagged_mlp(seed=2, hidden=256), path, external_data=True)
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == before


def test_a_failed_model_write_removes_the_new_data_file(tmp_path, monkeypatch):
    path = _mlp_with_data(tmp_path, seed=1)
    before = {p.name: digest(p) for p in tmp_path.iterdir()}

    def failing(model, tmp_name):
        Path(tmp_name).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ext, "_write_proto", failing)
    with pytest.raises(graphtag.GraphtagError, match="could not write"):
        graphtag.save(tagged_mlp(seed=2, hidden=256), path, external_data=True)
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == before


def test_not_enough_space_is_refused_before_writing(tmp_path, monkeypatch):
    path = _mlp_with_data(tmp_path, seed=1)
    before = {p.name: digest(p) for p in tmp_path.iterdir()}
    usage = ext.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(ext.shutil, "disk_usage", lambda _: usage._replace(free=1000))
    with pytest.raises(
        graphtag.GraphtagError, match="not enough disk space .* nothing was written"
    ):
        graphtag.save(tagged_mlp(seed=2, hidden=256), path, external_data=True)
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == before


_KILLED_SAVE = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    import onnx_ir as ir
    import graphtag
    from graphtag.core import external_data as ext
    from onnx_builders import tagged_mlp

    stage = {stage!r}
    real_tofile = ir.Tensor.tofile

    def slow_tofile(self, file):
        real_tofile(self, file)
        file.flush()
        if stage == "data":
            open({marker!r}, "w").close()
            time.sleep(60)

    def slow_proto(model, tmp_name):
        with open(tmp_name, "wb") as f:
            f.write(b"partial model")
        open({marker!r}, "w").close()
        time.sleep(60)

    ir.Tensor.tofile = slow_tofile
    ext._write_proto = slow_proto
    graphtag.save(tagged_mlp(seed=2, hidden=256), {path!r}, external_data=True)
    """
)


@pytest.mark.parametrize("stage", ["data", "model"])
def test_a_save_killed_midway_leaves_the_old_model_and_data_intact(tmp_path, stage):
    path = _mlp_with_data(tmp_path, seed=1)
    before = {p.name: digest(p) for p in tmp_path.iterdir()}
    marker = tmp_path.parent / f"{tmp_path.name}.marker"
    script = _KILLED_SAVE.format(
        tests=str(Path(__file__).parent), stage=stage, marker=str(marker), path=str(path)
    )
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the save finished or failed before the kill"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    after = {p.name: digest(p) for p in tmp_path.iterdir() if p.name in before}
    assert after == before
    loaded = graphtag.load(path)
    expected = run_ort(tagged_mlp(seed=1, hidden=256), feeds(loaded))[0]
    np.testing.assert_array_equal(run_ort(path, feeds(loaded))[0], expected)
    # The next save completes and clears what the killed one left under the model's name.
    graphtag.save(tagged_mlp(seed=3, hidden=256), path, external_data=True)
    # Killed while writing data: the new data never got its name. Killed while writing the
    # model: the new data file m.onnx.1.data was complete but never used, and is stale now.
    names = {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")}
    assert names == {"m.onnx", "m.onnx.1.data" if stage == "data" else "m.onnx.2.data"}


# -- bad external data -----------------------------------------------------------------


def _with_location(tmp_path: Path, location: str) -> Path:
    """m.onnx whose fc1.weight points at ``location``."""
    path = _mlp_with_data(tmp_path)
    proto = onnx.load(str(path), load_external_data=False)
    for tensor in proto.graph.initializer:
        if tensor.name == "fc1.weight":
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize(
    "location",
    ["/etc/passwd", "../outside.data", "sub/../../outside.data", "link.data"],
    ids=["absolute", "dotdot", "nested-dotdot", "symlink-out"],
)
def test_locations_outside_the_model_folder_are_refused(tmp_path, location, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    outside = tmp_path / "outside.data"
    outside.write_bytes(b"\0" * 4096)
    (folder / "link.data").symlink_to(outside)
    path = _with_location(folder, location)
    with pytest.raises(
        graphtag.GraphtagError, match="fc1.weight: external data location .* outside"
    ):
        graphtag.load(path)
    assert main(["analyze", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("graphtag: error: ") and "\n" not in err
    assert "tensor fc1.weight" in err and repr(location) in err
    assert "outside the model's folder" in err


def test_a_missing_data_file_names_the_tensor_and_the_file(tmp_path):
    path = _mlp_with_data(tmp_path)
    (tmp_path / "m.onnx.data").unlink()
    proc = run_cli("extract", path, "--module", "/MLP/Layer.fc1", "-o", tmp_path / "x.onnx")
    assert proc.returncode == 2
    assert_clean_failure(proc, "tensor fc1.weight", "m.onnx.data is missing")
    assert not (tmp_path / "x.onnx").exists()


def test_a_truncated_data_file_names_the_tensor_and_the_file(tmp_path, capsys):
    path = _mlp_with_data(tmp_path)
    data = tmp_path / "m.onnx.data"
    data.write_bytes(data.read_bytes()[:-100])
    assert main(["run", str(path), "-p", "toposort", "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("graphtag: error: ")
    assert "tensor fc2.weight" in err[0] and "m.onnx.data is truncated" in err[0]
    assert not (tmp_path / "x.onnx").exists()


def test_load_checks_every_data_file_once(tmp_path, monkeypatch):
    path = _mlp_with_data(tmp_path)
    stats = []
    real_stat = os.stat
    monkeypatch.setattr(ext.os, "stat", lambda p, *a, **k: stats.append(p) or real_stat(p, *a, **k))
    graphtag.load(path)
    assert len([p for p in stats if str(p).endswith("m.onnx.data")]) == 1


def test_saved_data_report_and_log(tmp_path, caplog):
    path = _mlp_with_data(tmp_path)
    caplog.set_level("INFO", logger="graphtag.core.external_data")
    model = graphtag.load(path)
    graphtag.save(model, tmp_path / "beside.onnx")
    assert "0 weight bytes written" in caplog.text and "referred to in m.onnx.data" in caplog.text
    saved = ext.save_external(
        model, tmp_path / "third.onnx", commit=lambda write: write(str(tmp_path / "third.onnx"))
    )
    assert saved.written_file is None and saved.reused_files == ["m.onnx.data"]
    assert saved.reused_bytes == (tmp_path / "m.onnx.data").stat().st_size
    assert json.loads(json.dumps(saved.__dict__))  # plain data
