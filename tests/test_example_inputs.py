"""Example-input generation from forward signatures and configs, and --input-specs files."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from graphtag.core.errors import GraphtagError  # noqa: E402
from graphtag.exporter.example_inputs import (  # noqa: E402
    ExampleInputs,
    check_inputs_fit,
    inputs_from_specs,
    load_input_specs,
    make_example_inputs,
)

VOCAB = 99
# The sizes of every tiny transformer here: encoder-only ones, and encoder-decoders.
TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 37,
}
TINY_SEQ2SEQ = {
    "vocab_size": VOCAB,
    "d_model": 32,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "encoder_attention_heads": 2,
    "decoder_attention_heads": 2,
    "encoder_ffn_dim": 37,
    "decoder_ffn_dim": 37,
}


def tiny_configs() -> dict[str, object]:
    t = transformers
    return {
        "bert": t.BertConfig(vocab_size=VOCAB, **TINY),
        "gpt2": t.GPT2Config(
            vocab_size=VOCAB, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0
        ),
        "t5": t.T5Config(vocab_size=VOCAB, d_model=32, d_ff=37, d_kv=16, num_layers=1, num_heads=2),
        "vit": t.ViTConfig(**TINY, image_size=30, patch_size=10),
        "resnet": t.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]),
    }


# use_cache=False wherever forward takes it: the export is of the stateless forward.
EXPECTED_KEYS = {
    "bert": {"input_ids", "attention_mask", "token_type_ids", "use_cache"},
    "gpt2": {"input_ids", "attention_mask", "use_cache"},  # GPT-2 has no segment embedding
    "t5": {"input_ids", "attention_mask", "decoder_input_ids", "use_cache"},
    "vit": {"pixel_values"},  # no attention_mask without token ids
    "resnet": {"pixel_values"},
}


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {k: transformers.AutoModel.from_config(c).eval() for k, c in tiny_configs().items()}


@pytest.mark.parametrize("name", list(EXPECTED_KEYS))
def test_generated_inputs_run_the_model(models, name):
    model = models[name]
    inputs = make_example_inputs(model)
    assert inputs.args == ()
    assert set(inputs.kwargs) == EXPECTED_KEYS[name]
    if "use_cache" in inputs.kwargs:
        assert inputs.kwargs["use_cache"] is False
    assert check_inputs_fit(model, inputs) is not None
    for key in ("input_ids", "decoder_input_ids"):
        if key in inputs.kwargs:
            ids = inputs.kwargs[key]
            assert ids.dtype == torch.int64 and ids.shape == (1, 8)
            assert int(ids.min()) >= 0 and int(ids.max()) < VOCAB
    if "attention_mask" in inputs.kwargs:
        assert bool((inputs.kwargs["attention_mask"] == 1).all())
    if "token_type_ids" in inputs.kwargs:
        assert bool((inputs.kwargs["token_type_ids"] == 0).all())


def test_pixel_sizes_come_from_config(models):
    vit = make_example_inputs(models["vit"]).kwargs["pixel_values"]
    assert vit.shape == (1, 3, 30, 30) and vit.dtype == torch.float32
    # ResNet configs carry no image_size: the usual 224 is used.
    assert make_example_inputs(models["resnet"]).kwargs["pixel_values"].shape == (1, 3, 224, 224)


def test_float_inputs_follow_weight_dtype(models):
    model = transformers.ViTModel(tiny_configs()["vit"]).to(torch.bfloat16).eval()
    inputs = make_example_inputs(model)
    assert inputs.kwargs["pixel_values"].dtype == torch.bfloat16
    check_inputs_fit(model, inputs)


def test_batch_and_seq_len_and_determinism(models):
    a = make_example_inputs(models["bert"], batch_size=2, seq_len=5)
    b = make_example_inputs(models["bert"], batch_size=2, seq_len=5)
    assert a.kwargs["input_ids"].shape == (2, 5)
    assert a.kwargs.keys() == b.kwargs.keys()
    assert all(torch.equal(a.kwargs[k], b.kwargs[k]) for k in a.kwargs if k != "use_cache")


def test_seq_len_capped_by_position_embeddings():
    cfg = transformers.BertConfig(vocab_size=VOCAB, **TINY, max_position_embeddings=4)
    model = transformers.BertModel(cfg).eval()
    inputs = make_example_inputs(model, seq_len=16)
    assert inputs.kwargs["input_ids"].shape == (1, 4)
    check_inputs_fit(model, inputs)


def test_head_model_and_explicit_config(models):
    cfg = tiny_configs()["gpt2"]
    model = transformers.GPT2LMHeadModel(cfg).eval()
    inputs = make_example_inputs(model, cfg)
    assert set(inputs.kwargs) == {"input_ids", "attention_mask", "use_cache"}
    check_inputs_fit(model, inputs)


def test_special_token_ids_are_avoided():
    cfg = transformers.GPT2Config(
        vocab_size=4, n_embd=16, n_layer=1, n_head=2, bos_token_id=1, eos_token_id=2
    )
    model = transformers.GPT2Model(cfg).eval()
    ids = make_example_inputs(model, seq_len=64).kwargs["input_ids"]
    assert set(ids.unique().tolist()) <= {0, 3}


# ---------------------------------------------------------------- plain modules


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, query, key, scale: float = 1.0):
        return self.proj(query) + key * scale


class PositionalOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x, /):
        return self.conv(x)


def test_plain_module_sized_by_first_layer():
    model = nn.Sequential(nn.Linear(6, 3), nn.ReLU()).eval()
    inputs = make_example_inputs(model)
    assert inputs.args == () and inputs.kwargs["input"].shape == (1, 6)
    check_inputs_fit(model, inputs)


class IdentityFirst(nn.Module):
    """timm's MobileOne-style blocks register an ``nn.Identity`` (and activations) before
    their first conv."""

    def __init__(self):
        super().__init__()
        self.se = nn.Identity()
        self.act = nn.GELU()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.act(self.se(self.conv(x)))


def test_parameter_free_leaves_before_the_first_layer_are_skipped():
    model = IdentityFirst().eval()
    inputs = make_example_inputs(model)
    assert inputs.kwargs["x"].shape == (1, 3, 224, 224)
    check_inputs_fit(model, inputs)


def test_embedding_first_layer_gives_ids():
    model = nn.Sequential(nn.Embedding(7, 4), nn.Flatten())
    ids = make_example_inputs(model, seq_len=3).kwargs["input"]
    assert ids.dtype == torch.int64 and ids.shape == (1, 3) and int(ids.max()) < 7


def test_positional_only_parameter_goes_to_args():
    inputs = make_example_inputs(PositionalOnly())
    # A plain 2-D conv model that declares no size gets the usual 224x224 image.
    assert inputs.kwargs == {} and inputs.args[0].shape == (1, 3, 224, 224)
    check_inputs_fit(PositionalOnly(), inputs)


class DeclaresSize(nn.Module):
    def __init__(self, **attributes):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        for key, value in attributes.items():
            setattr(self, key, value)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize(
    ("attributes", "size"),
    [
        ({"image_size": 40}, (40, 40)),  # torchvision's convention
        ({"img_size": (48, 40)}, (48, 40)),
        ({"pretrained_cfg": {"input_size": (2, 64, 56)}}, (64, 56)),  # timm's
        ({"default_cfg": {"input_size": (2, 36, 36)}}, (36, 36)),
        ({"image_size": "big"}, (224, 224)),  # not a size: ignored
    ],
)
def test_plain_conv_model_declared_image_size(attributes, size):
    model = DeclaresSize(**attributes)
    x = make_example_inputs(model).kwargs["x"]
    assert x.shape == (1, 2, *size)
    check_inputs_fit(model, ExampleInputs((), {"x": x}))


def test_unsizable_parameters_are_named():
    with pytest.raises(GraphtagError, match=r"query, key.*--input-specs") as err:
        make_example_inputs(TwoInputs())
    assert "\n" not in str(err.value)


def test_module_without_known_first_layer():
    with pytest.raises(GraphtagError, match=r"parameter.*input.*--input-specs"):
        make_example_inputs(nn.Sequential(nn.ReLU()))


def test_check_inputs_fit_reports_one_line():
    model = nn.Linear(4, 3)
    bad = ExampleInputs((torch.zeros(2, 5),), {})
    with pytest.raises(GraphtagError, match=r"^inputs do not fit the model: RuntimeError") as err:
        check_inputs_fit(model, bad)
    assert "\n" not in str(err.value)


def test_check_inputs_fit_keeps_grad_off():
    model = nn.Linear(4, 3)
    out = check_inputs_fit(model, ExampleInputs((torch.zeros(1, 4),), {}))
    assert out.shape == (1, 3) and not out.requires_grad


# ---------------------------------------------------------------- spec files


def write(tmp_path, data, name="specs.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_specs_file_drives_a_model(tmp_path, models):
    path = write(
        tmp_path,
        {
            "input_ids": {"shape": [2, 5], "dtype": "int64", "high": VOCAB},
            "attention_mask": {"shape": [2, 5], "dtype": "int64", "value": 1},
        },
    )
    specs = load_input_specs(path)
    inputs = inputs_from_specs(specs)
    assert list(inputs.kwargs) == ["input_ids", "attention_mask"]
    ids = inputs.kwargs["input_ids"]
    assert ids.shape == (2, 5) and ids.dtype == torch.int64 and int(ids.max()) < VOCAB
    assert bool((inputs.kwargs["attention_mask"] == 1).all())
    check_inputs_fit(models["bert"], inputs)


def test_specs_dtypes_and_ranges(tmp_path):
    specs = load_input_specs(
        write(
            tmp_path,
            {
                "a": {"shape": [3, 4], "dtype": "float32", "low": 2.0, "high": 3.0},
                "b": {"shape": [5], "dtype": "float16"},
                "c": {"shape": [10], "dtype": "int32", "low": 5, "high": 7},
                "d": {"shape": [2, 2], "dtype": "bool"},
                "e": {"shape": [], "dtype": "float64", "value": 0.5},
            },
        )
    )
    kw = inputs_from_specs(specs).kwargs
    assert kw["a"].dtype == torch.float32 and bool(((kw["a"] >= 2) & (kw["a"] < 3)).all())
    assert kw["b"].dtype == torch.float16 and kw["b"].shape == (5,)
    assert kw["c"].dtype == torch.int32 and set(kw["c"].tolist()) <= {5, 6}
    assert kw["d"].dtype == torch.bool
    assert kw["e"].shape == () and float(kw["e"]) == 0.5
    again = inputs_from_specs(specs).kwargs
    assert all(torch.equal(kw[k], again[k]) for k in kw)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "non-empty JSON object"),
        ({"x": [1, 2]}, "must be an object"),
        ({"x": {"shape": [1, -2], "dtype": "float32"}}, "non-negative integers"),
        ({"x": {"shape": "1x2", "dtype": "float32"}}, "non-negative integers"),
        ({"x": {"shape": [1], "dtype": "complex7"}}, "unknown dtype 'complex7'"),
        ({"x": {"shape": [1], "dtype": "int64", "low": 3, "high": 3}}, "'low' must be less"),
        ({"x": {"shape": [1], "dtype": "int64", "hgih": 3}}, "unknown key.*hgih"),
        ({"x": {"shape": [1], "dtype": "int64", "value": "one"}}, "'value' must be a number"),
    ],
)
def test_bad_specs_files(tmp_path, content, message):
    with pytest.raises(GraphtagError, match=message) as err:
        load_input_specs(write(tmp_path, content))
    assert "\n" not in str(err.value)


def test_missing_specs_file(tmp_path):
    with pytest.raises(GraphtagError, match="input specs file not found"):
        load_input_specs(tmp_path / "nope.json")


def test_nested_text_and_vision_configs():
    t = transformers
    cfg = t.CLIPConfig(
        text_config={**TINY, "vocab_size": 50},
        vision_config={**TINY, "image_size": 30, "patch_size": 10},
    )
    model = t.CLIPModel(cfg).eval()
    inputs = make_example_inputs(model)
    assert set(inputs.kwargs) == {"input_ids", "attention_mask", "pixel_values"}
    assert int(inputs.kwargs["input_ids"].max()) < 50  # vocab of text_config, not top level
    assert inputs.kwargs["pixel_values"].shape == (1, 3, 30, 30)
    check_inputs_fit(model, inputs)


class NoInputs(nn.Module):
    def forward(self):
        return torch.ones(2)


class OnlyOptional(nn.Module):
    def forward(self, x=None, y=None):
        return x


def test_forward_without_parameters():
    assert make_example_inputs(NoInputs()) == ExampleInputs((), {})


def test_only_optional_parameters_are_named():
    with pytest.raises(GraphtagError, match=r"optional parameters x, y .*--input-specs"):
        make_example_inputs(OnlyOptional())


# ---------------------------------------------------------------- modalities


def _generated(model_class, config) -> dict:
    """The inputs generated for a tiny ``model_class(config)``, checked to run it."""
    model = model_class(config).eval()
    inputs = make_example_inputs(model)
    assert check_inputs_fit(model, inputs) is not None
    return inputs.kwargs


def test_raw_audio_input_values_cover_the_conv_stack():
    cfg = transformers.Wav2Vec2Config(
        **TINY,
        conv_dim=[8, 8],
        conv_stride=[5, 4],
        conv_kernel=[10, 8],
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=2,
    )
    kwargs = _generated(transformers.Wav2Vec2Model, cfg)
    # 20 samples per frame, 8 frames, plus the receptive field of the two kernels.
    assert kwargs["input_values"].shape == (1, 5 * 4 * 8 + 10 + 8)


def test_log_mel_input_features_sized_for_the_encoder_positions():
    cfg = transformers.WhisperConfig(
        **TINY_SEQ2SEQ,
        num_mel_bins=16,
        max_source_positions=12,
        max_target_positions=32,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    kwargs = _generated(transformers.WhisperModel, cfg)
    # Two frames per encoder position (the conv stack halves the length).
    assert kwargs["input_features"].shape == (1, 16, 24)
    assert kwargs["decoder_input_ids"].shape == (1, 8)
    assert int(kwargs["decoder_input_ids"].max()) < VOCAB


def test_flat_input_features_are_channel_last():
    cfg = transformers.Speech2TextConfig(**TINY_SEQ2SEQ, input_feat_per_channel=12, conv_channels=8)
    kwargs = _generated(transformers.Speech2TextModel, cfg)
    assert kwargs["input_features"].shape == (1, 64, 12)
    assert "decoder_input_ids" in kwargs


def test_text_plus_image_with_placeholder_tokens():
    cfg = transformers.LlavaConfig(
        text_config={
            "model_type": "llama",
            **TINY,
            "vocab_size": 50,
            "num_key_value_heads": 2,
            "max_position_embeddings": 64,
        },
        vision_config={
            "model_type": "clip_vision_model",
            **TINY,
            "image_size": 30,
            "patch_size": 10,
        },
        image_token_index=49,
        vision_feature_layer=-1,
    )
    kwargs = _generated(transformers.LlavaForConditionalGeneration, cfg)
    assert kwargs["pixel_values"].shape == (1, 3, 30, 30)
    ids = kwargs["input_ids"]
    # 3x3 patches (the CLS feature is dropped by the default strategy): 9 placeholders,
    # then 8 text tokens that never hit the placeholder id.
    assert ids.shape == (1, 9 + 8)
    assert bool((ids[0, :9] == 49).all()) and not bool((ids[0, 9:] == 49).any())
    assert kwargs["attention_mask"].shape == ids.shape
    # use_cache is not in the signature (it travels in **kwargs) but the text config
    # turns the cache on: the export must be of the stateless forward.
    assert kwargs["use_cache"] is False


def test_placeholder_model_without_image_features_stays_text_only():
    class TextOnly(nn.Module):
        config = transformers.PretrainedConfig(image_token_id=3, vocab_size=10)

        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.main_input_name = "input_ids"

        def forward(self, input_ids=None, pixel_values=None):
            return self.emb(input_ids)

    model = TextOnly()
    kwargs = make_example_inputs(model, model.config).kwargs
    assert set(kwargs) == {"input_ids"}


def test_spectrogram_input_values():
    cfg = transformers.ASTConfig(**TINY, num_mel_bins=16, max_length=32, patch_size=8)
    # No conv feature extractor: frames x mel bins, not a waveform.
    assert _generated(transformers.ASTModel, cfg)["input_values"].shape == (1, 32, 16)


def test_single_config_vision_language_model_gets_an_image():
    cfg = transformers.ViltConfig(
        vocab_size=VOCAB, **TINY, image_size=32, patch_size=8, max_position_embeddings=16
    )
    kwargs = _generated(transformers.ViltModel, cfg)
    assert kwargs["pixel_values"].shape == (1, 3, 32, 32)
    assert kwargs["input_ids"].shape == (1, 8)


def test_specs_file_inputs_export_the_stateless_forward(tmp_path):
    """A spec file gives tensors only; the option generated inputs carry for a model with
    a cache (use_cache=False) applies as well, so a decoder exports from a spec file
    (before, every route failed on the DynamicCache in the outputs)."""
    from graphtag.exporter.sources import LoadedModel, prepare_inputs
    from graphtag.exporter.tagged_export import export

    torch.manual_seed(0)
    config = tiny_configs()["gpt2"]
    model = transformers.GPT2LMHeadModel(config).eval()
    path = write(tmp_path, {"input_ids": {"shape": [1, 6], "dtype": "int64", "high": VOCAB}})
    inputs = prepare_inputs(LoadedModel(model, config), path)
    assert inputs.kwargs["use_cache"] is False and inputs.kwargs["input_ids"].shape == (1, 6)
    result = export(model, inputs.args, inputs.kwargs, exporter="dynamo", optimize=False)
    assert len(result.model.graph.outputs) == 1  # the logits: no cache tensors
    # A model without a cache gets no such option.
    plain = prepare_inputs(
        LoadedModel(nn.Linear(4, 2)),
        write(tmp_path, {"input": {"shape": [1, 4], "dtype": "float32"}}, "linear.json"),
    )
    assert list(plain.kwargs) == ["input"]


def test_token_ids_without_a_vocabulary_index_every_embedding_table():
    """Ids hashed into buckets (no vocab_size, no input embedding to read): ids below the
    smallest embedding table index whichever table they reach."""
    cfg = transformers.CanineConfig(
        **TINY, num_hash_buckets=64, downsampling_rate=4, max_position_embeddings=64
    )
    assert getattr(cfg, "vocab_size", None) is None
    model = transformers.CanineModel(cfg).eval()
    tables = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    inputs = make_example_inputs(model)
    ids = inputs.kwargs["input_ids"]
    assert ids.shape == (1, 8) and int(ids.min()) >= 0 and int(ids.max()) < min(tables)
    assert len(set(ids.flatten().tolist())) > 1  # random ids, not one repeated value
    assert check_inputs_fit(model, inputs) is not None


def test_a_model_without_embeddings_or_vocabulary_is_named():
    class Ids(nn.Module):
        def forward(self, input_ids):
            return input_ids * 2

    model = Ids()
    model.config = transformers.PretrainedConfig()
    model.main_input_name = "input_ids"
    with pytest.raises(GraphtagError, match="no embedding table"):
        make_example_inputs(model)


@pytest.mark.parametrize(
    ("model_cls", "cfg", "shapes"),
    [
        # context_length steps of num_input_channels channels
        (
            "PatchTSTModel",
            dict(num_input_channels=3, context_length=32, patch_length=8, patch_stride=8,
                 d_model=16, num_attention_heads=2, num_hidden_layers=1, ffn_dim=32),
            {"past_values": (1, 32, 3)},
        ),
        # lagged models look back context_length + max(lags_sequence) steps; their
        # required time features and observed mask follow the series
        (
            "TimeSeriesTransformerModel",
            dict(prediction_length=4, context_length=8, lags_sequence=[1, 2, 5], input_size=2,
                 num_time_features=3, d_model=16, encoder_layers=1, decoder_layers=1),
            {"past_values": (1, 13, 2), "past_time_features": (1, 13, 3),
             "past_observed_mask": (1, 13, 2)},
        ),
        # a univariate series (input_size 1) is batch x steps; the default lags reach 7
        # back; no time features is a required but empty tensor
        (
            "AutoformerModel",
            dict(prediction_length=4, context_length=8, d_model=16, encoder_layers=1,
                 decoder_layers=1),
            {"past_values": (1, 15), "past_time_features": (1, 15, 0),
             "past_observed_mask": (1, 15)},
        ),
    ],
)  # fmt: skip
def test_time_series_inputs_are_sized_from_the_config(model_cls, cfg, shapes):
    model_type = getattr(transformers, model_cls)
    config = model_type.config_class(**cfg)
    model = model_type(config).eval()
    inputs = make_example_inputs(model)
    tensors = {k: tuple(v.shape) for k, v in inputs.kwargs.items() if torch.is_tensor(v)}
    assert tensors == shapes
    if "past_observed_mask" in shapes:
        assert bool((inputs.kwargs["past_observed_mask"] == 1).all())
    assert check_inputs_fit(model, inputs) is not None


def test_video_pixels_have_a_frames_axis():
    """A config with num_frames describes a video: batch x frames x channels x H x W."""
    cfg = transformers.VideoMAEConfig(**TINY, image_size=32, patch_size=16, num_frames=4)
    assert _generated(transformers.VideoMAEModel, cfg)["pixel_values"].shape == (1, 4, 3, 32, 32)


def test_codec_waveforms_have_a_channel_axis():
    """A config with audio_channels (a codec) takes batch x channels x samples."""
    cfg = transformers.EncodecConfig(
        hidden_size=32,
        num_filters=8,
        num_residual_layers=1,
        upsampling_ratios=[4, 2],
        codebook_size=64,
        codebook_dim=32,
        audio_channels=2,
    )
    assert _generated(transformers.EncodecModel, cfg)["input_values"].shape == (1, 2, 16000)
