"""Resolving the MODEL argument: checkpoint directories, hub ids, factories, bad paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from graphtag.core.errors import GraphtagError  # noqa: E402
from graphtag.exporter.example_inputs import check_inputs_fit, make_example_inputs  # noqa: E402
from graphtag.exporter.sources import LoadedModel, load_model  # noqa: E402


def bert_config() -> transformers.BertConfig:
    return transformers.BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
    )


def gpt2_config() -> transformers.GPT2Config:
    return transformers.GPT2Config(
        vocab_size=99, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0
    )


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- checkpoint directories


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    torch.manual_seed(1)
    model = transformers.BertModel(bert_config()).eval()
    path = tmp_path_factory.mktemp("bert")
    model.save_pretrained(path)
    return path, model


def test_directory_loads_saved_weights(bert_dir):
    path, saved = bert_dir
    loaded = load_model(str(path))
    assert isinstance(loaded, LoadedModel)
    assert type(loaded.module) is transformers.BertModel
    assert not loaded.module.training
    assert loaded.config.vocab_size == 99
    assert loaded.example_inputs is None
    assert "BertModel" in loaded.description and str(path) in loaded.description
    assert same_weights(loaded.module, saved)
    check_inputs_fit(loaded.module, make_example_inputs(loaded.module, loaded.config))


def test_head_class_from_architectures(tmp_path):
    torch.manual_seed(2)
    saved = transformers.GPT2LMHeadModel(gpt2_config()).eval()
    saved.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert type(loaded.module) is transformers.GPT2LMHeadModel
    assert same_weights(loaded.module, saved)


def test_random_init_reads_no_weights(bert_dir, tmp_path):
    path, saved = bert_dir
    loaded = load_model(str(path), random_init=True)
    assert type(loaded.module) is transformers.BertModel and not loaded.module.training
    assert "random init" in loaded.description
    assert not same_weights(loaded.module, saved)
    # A directory with only config.json is enough for --random-init ...
    bert_config().save_pretrained(tmp_path)
    assert type(load_model(str(tmp_path), random_init=True).module) is transformers.BertModel
    # ... and is reported clearly without it.
    with pytest.raises(GraphtagError, match=r"no weights.*--random-init") as err:
        load_model(str(tmp_path))
    one_line(err)


def test_config_without_architectures_uses_automodel(tmp_path):
    bert_config().save_pretrained(tmp_path)  # a bare config has no "architectures"
    loaded = load_model(str(tmp_path), random_init=True)
    assert type(loaded.module) is transformers.BertModel


def test_directory_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(GraphtagError, match=r"has no config\.json") as err:
        load_model(str(tmp_path))
    one_line(err)


def test_broken_config(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "no-such-model-type"}')
    with pytest.raises(GraphtagError, match="cannot read the config") as err:
        load_model(str(tmp_path), random_init=True)
    one_line(err)


# ---------------------------------------------------------------- hub ids


@pytest.mark.parametrize("repo_id", ["graphtag-test-org/no-such-model", "no-such-model-xyz"])
def test_hub_id_fails_fast_offline(repo_id):
    start = time.monotonic()
    with pytest.raises(GraphtagError, match="offline") as err:
        load_model(repo_id)
    assert time.monotonic() - start < 10  # generous: must not wait on network timeouts
    message = one_line(err)
    assert repo_id in message and "save_pretrained" in message


def test_hub_id_from_local_cache(tmp_path, bert_dir):
    # A hand-made cache entry; in a subprocess because the cache location is read at import.
    path, saved = bert_dir
    repo = tmp_path / "hub" / "models--gt-org--tiny-bert"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    for f in path.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    script = (
        "import torch\n"
        "from graphtag.exporter.sources import load_model\n"
        "m = load_model('gt-org/tiny-bert')\n"
        "print(m.description)\n"
        "print(float(m.module.embeddings.word_embeddings.weight.detach().sum()))\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "0"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    description, total = done.stdout.strip().splitlines()[-2:]
    assert "BertModel from hub id gt-org/tiny-bert (local cache)" in description
    expected = float(saved.embeddings.word_embeddings.weight.detach().sum())
    assert abs(float(total) - expected) < 1e-4


# ---------------------------------------------------------------- factories


FACTORY_SOURCE = """
import torch
from torch import nn


def make():
    return nn.Linear(4, 2)


def with_kwargs():
    return nn.Linear(4, 2), {"input": torch.ones(1, 4)}


def with_args():
    return nn.Linear(4, 2), (torch.ones(3, 4),)


def with_both():
    return nn.Linear(4, 2), ((torch.ones(2, 4),), {})


def boom():
    raise ValueError("bad size\\nsecond line")


def not_a_module():
    return 42


class Holder:
    @staticmethod
    def build():
        return nn.ReLU()


NOT_CALLABLE = 3
"""


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    """A fresh importable module on sys.path; returns its (unique) name."""
    name = f"gt_factories_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(FACTORY_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_factory_returning_module(factory_module):
    loaded = load_model(f"{factory_module}:make")
    assert isinstance(loaded.module, nn.Linear) and not loaded.module.training
    assert loaded.config is None and loaded.example_inputs is None
    assert f"factory {factory_module}:make" in loaded.description


@pytest.mark.parametrize(
    ("factory", "n_args", "kwarg_names", "batch"),
    [("with_kwargs", 0, ["input"], 1), ("with_args", 1, [], 3), ("with_both", 1, [], 2)],
)
def test_factory_with_example_inputs(factory_module, factory, n_args, kwarg_names, batch):
    loaded = load_model(f"{factory_module}:{factory}")
    ex = loaded.example_inputs
    assert len(ex.args) == n_args and list(ex.kwargs) == kwarg_names
    assert check_inputs_fit(loaded.module, ex).shape == (batch, 2)


def test_factory_dotted_attribute(factory_module):
    assert isinstance(load_model(f"{factory_module}:Holder.build").module, nn.ReLU)


def test_factory_from_file_path(tmp_path):
    path = tmp_path / "sub" / "my_factories.py"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(FACTORY_SOURCE))
    loaded = load_model(f"{path}:with_kwargs")
    assert isinstance(loaded.module, nn.Linear) and "input" in loaded.example_inputs.kwargs


def test_factory_raising(factory_module):
    with pytest.raises(GraphtagError, match=r"factory .*:boom raised ValueError: bad size$") as err:
        load_model(f"{factory_module}:boom")
    one_line(err)


def test_factory_returning_non_module(factory_module):
    with pytest.raises(GraphtagError, match=r"returned int; expected a torch\.nn\.Module") as err:
        load_model(f"{factory_module}:not_a_module")
    one_line(err)


def test_factory_attribute_problems(factory_module):
    with pytest.raises(GraphtagError, match="has no attribute 'missing'"):
        load_model(f"{factory_module}:missing")
    with pytest.raises(GraphtagError, match="is a int, not a callable"):
        load_model(f"{factory_module}:NOT_CALLABLE")


def test_factory_module_not_importable():
    with pytest.raises(
        GraphtagError, match="cannot import gt_no_such_module_42: ModuleNotFound"
    ) as err:
        load_model("gt_no_such_module_42:make")
    one_line(err)


def test_factory_file_missing(tmp_path):
    with pytest.raises(GraphtagError, match="no such model directory or file"):
        load_model(f"{tmp_path / 'absent.py'}:make")


# ---------------------------------------------------------------- bad paths


@pytest.mark.parametrize(
    "spec", ["/definitely/not/here", "./not-here", "a/b/c", "../up/model", "missing.py", "w.pt"]
)
def test_unknown_local_path(spec):
    with pytest.raises(GraphtagError, match="no such model directory or file") as err:
        load_model(spec)
    one_line(err)


def test_python_file_without_factory(tmp_path):
    path = tmp_path / "model.py"
    path.write_text("x = 1\n")
    with pytest.raises(GraphtagError, match="add ':factory'"):
        load_model(str(path))


def test_empty_spec():
    with pytest.raises(GraphtagError, match="empty MODEL"):
        load_model("  ")


# ---------------------------------------------------------------- remote code

REMOTE_CONFIG = """
from transformers import PretrainedConfig


class TinyConfig(PretrainedConfig):
    model_type = "gt-tiny"

    def __init__(self, width=4, **kwargs):
        self.width = width
        super().__init__(**kwargs)
"""

REMOTE_MODEL = """
import torch
from transformers import PreTrainedModel

from .configuration_tiny import TinyConfig


class TinyModel(PreTrainedModel):
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Linear(config.width, 2)
        self.post_init()

    def forward(self, pixel_values=None):
        return self.proj(pixel_values)
"""


@pytest.fixture
def remote_code_dir(tmp_path):
    path = tmp_path / "custom"
    path.mkdir()
    (path / "configuration_tiny.py").write_text(REMOTE_CONFIG)
    (path / "modeling_tiny.py").write_text(REMOTE_MODEL)
    auto_map = {
        "AutoConfig": "configuration_tiny.TinyConfig",
        "AutoModel": "modeling_tiny.TinyModel",
    }
    config = {
        "model_type": "gt-tiny",
        "width": 4,
        "architectures": ["TinyModel"],
        "auto_map": auto_map,
    }
    (path / "config.json").write_text(json.dumps(config))
    return path


def test_remote_code_refused_by_default(remote_code_dir):
    with pytest.raises(GraphtagError, match=r"custom code.*--trust-remote-code") as err:
        load_model(str(remote_code_dir), random_init=True)
    one_line(err)


def test_remote_code_runs_when_trusted(remote_code_dir, tmp_path):
    # In a subprocess: transformers copies the code into HF_MODULES_CACHE, fixed at import.
    script = (
        "from graphtag.exporter.sources import load_model\n"
        f"m = load_model({str(remote_code_dir)!r}, random_init=True, trust_remote_code=True)\n"
        "print(type(m.module).__name__, m.module.training)\n"
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["TinyModel", "False"]
