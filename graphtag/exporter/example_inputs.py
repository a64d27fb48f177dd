"""Example inputs for tracing: generated from the forward signature and config, or read from a spec file.

The generator knows the input *names* that the transformers library uses across all models
(``input_ids``, ``pixel_values``, ``input_features``, ...) and sizes them from config fields,
so no model family needs special handling. Anything it cannot size is reported by name and
the user is pointed at ``--input-specs``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from graphtag.core.errors import GraphtagError, first_line
from graphtag.core.input_specs import DTYPES, load_input_specs  # noqa: F401 (re-exported)
from graphtag.exporter.eager import state_kept

_SEED = 0
_DEFAULT_IMAGE_SIZE = 224  # what vision configs without an image_size (convnets) are trained at
_DEFAULT_AUDIO_SAMPLES = 16000  # one second at the usual 16 kHz

_DTYPES = {n: getattr(torch, n) for n in DTYPES}


@dataclass
class ExampleInputs:
    """Positional and keyword arguments for one call of ``model.forward``."""

    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- generator


def make_example_inputs(
    model: nn.Module, config: Any = None, *, batch_size: int = 1, seq_len: int = 8
) -> ExampleInputs:
    """Build deterministic example inputs for ``model.forward``.

    Fills the required parameters plus the model's main input (transformers marks every
    input optional), the decoder inputs of encoder-decoders and the inputs of sub-model
    configs (``vision_config``/``audio_config``); ``attention_mask``/``token_type_ids`` go
    with generated token ids. Raises GraphtagError naming the parameters it cannot size.
    """
    if config is None:
        config = _model_config(model)
    gen = torch.Generator().manual_seed(_SEED)
    params = _forward_params(model)
    sizer = _Sizer(model, config, gen, batch_size, seq_len)

    wanted = [p.name for p in params.values() if p.default is inspect.Parameter.empty]
    if config is not None:
        wanted += _config_driven_inputs(model, config, params)
    wanted = list(dict.fromkeys(wanted))  # dedupe, keep order

    values: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for name in wanted:
        tensor = sizer.make(name, single=len(wanted) == 1)
        if tensor is None:
            unknown.append(name)
        else:
            values[name] = tensor
    if unknown:
        raise GraphtagError(
            f"cannot infer example inputs for parameter(s) {', '.join(unknown)} of "
            f"{type(model).__name__}.forward; describe them with --input-specs FILE.json"
        )
    if not values and params:  # only optional parameters, none of them known
        raise GraphtagError(
            f"cannot tell which of the optional parameters {', '.join(params)} of "
            f"{type(model).__name__}.forward to fill; describe them with --input-specs FILE.json"
        )

    if config is not None and "input_ids" in values and "pixel_values" in params:
        _add_placeholder_images(model, config, sizer, values)
    # Companions of generated token ids: the mask and segment ids that real callers pass.
    ids = values.get("input_ids")
    if ids is not None:
        if "attention_mask" in params:
            values.setdefault("attention_mask", torch.ones_like(ids))
        # Only models with a segment embedding (type_vocab_size) take real token types.
        if (
            "token_type_ids" in params
            and (getattr(_text_config(config), "type_vocab_size", 0) or 0) > 0
        ):
            values.setdefault("token_type_ids", torch.zeros_like(ids))
    # Float inputs follow the weights (a checkpoint may load in float16/bfloat16).
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if dtype is not None:
        values = {k: v.to(dtype) if v.is_floating_point() else v for k, v in values.items()}
    values.update(stateless_options(model, config))
    return _split_positional(params, values)


def stateless_options(model: nn.Module, config: Any) -> dict[str, Any]:
    """Keyword options every example input set gets (generated or from a spec file):
    ``use_cache=False`` for a model that takes it, so the stateless forward is exported:
    cache objects in the outputs are not tensors, and neither exporter can return them.
    Composite models take use_cache through **kwargs and hand it to their language
    model."""
    params = _forward_params(model)
    if "use_cache" in params or (_takes_any_keyword(model) and _uses_cache(config)):
        return {"use_cache": False}
    return {}


def _model_config(model: nn.Module) -> Any:
    config = getattr(model, "config", None)
    # Only a transformers-style config is useful; anything else is ignored.
    return config if hasattr(config, "to_dict") else None


def _takes_any_keyword(model: nn.Module) -> bool:
    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _uses_cache(config: Any) -> bool:
    """The config (or its text config) turns a key/value cache on."""
    if config is None:
        return False
    return bool(getattr(config, "use_cache", False)) or bool(
        getattr(_text_config(config), "use_cache", False)
    )


def _forward_params(model: nn.Module) -> dict[str, inspect.Parameter]:
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError) as exc:
        raise GraphtagError(
            f"cannot read the signature of {type(model).__name__}.forward: {exc}"
        ) from exc
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return {name: p for name, p in sig.parameters.items() if p.kind not in skip}


def _config_driven_inputs(
    model: nn.Module, config: Any, params: dict[str, inspect.Parameter]
) -> list[str]:
    """Optional parameters that a transformers model still needs to run meaningfully."""
    names: list[str] = []
    main = getattr(model, "main_input_name", None)
    if main in params:
        names.append(main)
    if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in params:
        names.append("decoder_input_ids")
    # Composite models (e.g. dual encoders) need every modality, unless the text stream
    # carries placeholder tokens for it: random ids cannot line up with such placeholders.
    splices_media = any(
        k.endswith(("_token_id", "_token_index")) and k.split("_")[0] in ("image", "video", "audio")
        for k in _config_keys(config)
    )
    if not splices_media:
        for sub, inp in (
            ("vision_config", "pixel_values"),
            ("audio_config", "input_features"),
            ("audio_config", "input_values"),
        ):
            if getattr(config, sub, None) is not None and inp in params:
                names.append(inp)
        # A single config that sizes images for a model whose main input is text (a
        # vision-language encoder with one config): the image goes in too.
        if "pixel_values" in params and getattr(config, "image_size", None) is not None:
            names.append("pixel_values")
    return names


def _image_token(config: Any) -> int | None:
    """The id of the placeholder token that stands for image features in the text."""
    for key in ("image_token_id", "image_token_index"):
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _add_placeholder_images(model: nn.Module, config: Any, sizer: _Sizer, values: dict) -> None:
    """Text plus image for models that splice image features into placeholder tokens.

    Such models (transformers' ``get_image_features`` and an ``image_token_id``) need as
    many placeholder tokens as the vision side yields feature vectors; the count comes
    from running ``get_image_features`` on the generated pixels, and that many
    placeholders go before the generated text. Models whose vision input is not a plain
    image tensor (or any failure here) keep the text-only inputs.
    """
    token = _image_token(config)
    features = getattr(model, "get_image_features", None)
    if token is None or not callable(features) or "pixel_values" in values:
        return
    try:
        pixels = sizer.make("pixel_values", single=False)
        with torch.no_grad():
            out = features(pixel_values=pixels)
        count = _feature_vectors(out)
    except Exception:  # an image input this generator cannot size: text only
        return
    if not count:
        return
    text = values["input_ids"]
    image = torch.full((text.shape[0], count // text.shape[0]), token, dtype=text.dtype)
    values["input_ids"] = torch.cat([image, text], dim=1)
    values["pixel_values"] = pixels


def _feature_vectors(out: Any) -> int:
    """How many feature vectors (rows of the last dimension) ``get_image_features`` gave."""
    pooled = getattr(out, "pooler_output", None)
    if pooled is not None:
        out = pooled
    elif hasattr(out, "to_tuple"):
        out = out.to_tuple()[0]
    tensors = [out] if isinstance(out, torch.Tensor) else list(out or [])
    if not tensors or not all(isinstance(t, torch.Tensor) and t.dim() >= 2 for t in tensors):
        return 0
    return sum(t.numel() // t.shape[-1] for t in tensors)


def _config_keys(config: Any) -> list[str]:
    try:
        return list(config.to_dict())
    except Exception:  # a config that cannot serialise itself just has no keys for us
        return []


def _text_config(config: Any, *, decoder: bool = False) -> Any:
    """The config that sizes the encoder-side (or decoder-side) token ids."""
    if config is None:
        return None
    if decoder:
        attempts: list[dict[str, bool]] = [{"decoder": True}]
    else:
        # A separate encoder sub-config (encoder-decoder wrappers) owns the input ids;
        # otherwise the unqualified lookup finds nested text configs.
        encoder = getattr(config, "encoder", None)
        if hasattr(encoder, "to_dict"):
            return encoder
        attempts = [{}, {"encoder": True}]
    get = getattr(config, "get_text_config", None)
    for kwargs in attempts if callable(get) else []:
        try:
            return get(**kwargs)
        except Exception:  # ambiguous or custom configs: try the next form
            continue
    return config


def _sub_config(config: Any, *names: str) -> Any:
    for name in names:
        sub = getattr(config, name, None)
        if sub is not None:
            return sub
    return config


def _split_positional(
    params: dict[str, inspect.Parameter], values: dict[str, Any]
) -> ExampleInputs:
    # Positional-only parameters cannot be passed by name; everything else goes as kwargs.
    args = []
    for name, p in params.items():
        if p.kind is inspect.Parameter.POSITIONAL_ONLY and name in values:
            args.append(values.pop(name))
    return ExampleInputs(tuple(args), values)


class _Sizer:
    """Makes one tensor for a parameter name, sized from config fields or the first layer."""

    def __init__(self, model: nn.Module, config: Any, gen: torch.Generator, batch: int, seq: int):
        self.model, self.config, self.gen, self.batch = model, config, gen, batch
        limit = getattr(_text_config(config), "max_position_embeddings", None)
        self.seq = min(seq, limit) if isinstance(limit, int) and limit > 0 else seq

    def make(self, name: str, *, single: bool) -> torch.Tensor | None:
        cfg = self.config
        if cfg is not None:
            if name == "input_ids":
                return self._ids(_text_config(cfg), self._embedding_rows())
            if name == "decoder_input_ids":
                return self._ids(_text_config(cfg, decoder=True), None)
            if name == "pixel_values":
                return self._pixels(_sub_config(cfg, "vision_config", "encoder"))
            if name == "input_features":
                return self._features(_sub_config(cfg, "audio_config", "encoder"))
            if name == "input_values":
                return self._waveform(_sub_config(cfg, "audio_config", "encoder"))
            if name == "past_values":
                return torch.randn(*self._series_shape(cfg), generator=self.gen)
            if name == "past_observed_mask":  # every step observed
                return torch.ones(self._series_shape(cfg))
            if name == "past_time_features":
                features = getattr(cfg, "num_time_features", None)
                if isinstance(features, int) and features >= 0:  # 0: required, but empty
                    steps = self._series_shape(cfg)[1]
                    return torch.randn(self.batch, steps, features, generator=self.gen)
            if name in ("attention_mask", "token_type_ids"):
                return None  # added next to generated ids; alone they mean nothing
        if single:
            return self._from_first_layer()
        return None

    def _embedding_rows(self) -> int | None:
        get = getattr(self.model, "get_input_embeddings", None)
        try:
            emb = get() if callable(get) else None
        except Exception:  # models without text embeddings raise NotImplementedError
            emb = None
        return getattr(emb, "num_embeddings", None)

    def _ids(self, cfg: Any, rows: int | None) -> torch.Tensor:
        vocab = getattr(cfg, "vocab_size", None)
        sizes = [v for v in (vocab, rows) if isinstance(v, int) and v > 0]
        if not sizes:
            # No vocabulary to read (ids hashed into buckets, say): ids below every
            # embedding table's size index whichever table they reach.
            tables = [m.num_embeddings for m in self.model.modules() if isinstance(m, nn.Embedding)]
            sizes = [min(tables)] if tables else []
        if not sizes:
            raise GraphtagError(
                "cannot infer the vocabulary size for token ids (the config has no "
                "vocab_size and the model no embedding table); "
                "describe the inputs with --input-specs FILE.json"
            )
        high = min(sizes)
        ids = torch.randint(0, high, (self.batch, self.seq), generator=self.gen)
        return _avoid_special_tokens(ids, _special_token_ids(self.config, cfg), high)

    def _pixels(self, cfg: Any) -> torch.Tensor:
        channels = getattr(cfg, "num_channels", None) or 3
        size = getattr(cfg, "image_size", None) or _DEFAULT_IMAGE_SIZE
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[-1]))
        frames = getattr(cfg, "num_frames", None)
        if isinstance(frames, int) and frames > 0:  # a video: frames of images
            return torch.randn(self.batch, frames, channels, h, w, generator=self.gen)
        return torch.randn(self.batch, channels, h, w, generator=self.gen)

    def _features(self, cfg: Any) -> torch.Tensor:
        # Channel-first log-mel features (num_mel_bins) feed a conv stack whose output must
        # cover max_source_positions; flat per-frame features (input_feat_per_channel) are
        # channel-last with a free length.
        mel = getattr(cfg, "num_mel_bins", None)
        if mel:
            positions = getattr(cfg, "max_source_positions", None)
            frames = 2 * positions if positions else 2 * self.seq * 8
            return torch.randn(self.batch, mel, frames, generator=self.gen)
        per_channel = getattr(cfg, "input_feat_per_channel", None) or getattr(
            cfg, "feature_size", None
        )
        if not per_channel:
            raise GraphtagError(
                "cannot infer the size of input_features from the config; "
                "describe the inputs with --input-specs FILE.json"
            )
        dim = per_channel * (getattr(cfg, "input_channels", None) or 1)
        return torch.randn(self.batch, self.seq * 8, dim, generator=self.gen)

    def _waveform(self, cfg: Any) -> torch.Tensor:
        # A codec's waveform has a channel axis (audio_channels): batch x channels x samples.
        channels = getattr(cfg, "audio_channels", None)
        if isinstance(channels, int) and channels > 0:
            return torch.randn(self.batch, channels, _DEFAULT_AUDIO_SAMPLES, generator=self.gen)
        # A conv feature extractor needs at least its receptive field; aim for seq frames.
        strides = getattr(cfg, "conv_stride", None)
        kernels = getattr(cfg, "conv_kernel", None)
        if strides and kernels:
            samples = math.prod(strides) * self.seq + sum(kernels)
            return torch.randn(self.batch, samples, generator=self.gen)
        # No conv feature extractor but mel bins and a fixed length: input_values are a
        # spectrogram (frames x mel bins), as in patch-based audio transformers.
        mel, frames = getattr(cfg, "num_mel_bins", None), getattr(cfg, "max_length", None)
        if isinstance(mel, int) and isinstance(frames, int) and mel > 0 and frames > 0:
            return torch.randn(self.batch, frames, mel, generator=self.gen)
        return torch.randn(self.batch, _DEFAULT_AUDIO_SAMPLES, generator=self.gen)

    def _series_shape(self, cfg: Any) -> tuple[int, ...]:
        # A time series (transformers' past_values): batch x steps x channels, as many
        # steps as the model's context plus the farthest lag it looks back. A univariate
        # series sized by input_size is batch x steps, the form every such model takes.
        context = getattr(cfg, "context_length", None)
        steps = context if isinstance(context, int) and context > 0 else self.seq
        lags = getattr(cfg, "lags_sequence", None)
        if lags:
            steps += max(int(lag) for lag in lags)
        channels = getattr(cfg, "num_input_channels", None)
        if not channels:
            channels = getattr(cfg, "input_size", None) or 1
            if channels == 1:
                return (self.batch, steps)
        return (self.batch, steps, int(channels))

    def _from_first_layer(self) -> torch.Tensor | None:
        """A lone tensor parameter of a plain module, sized by the first layer that reads it:
        the first leaf module with weights (parameter-free leaves registered before it, an
        ``nn.Identity`` placeholder or an activation, say nothing about the input)."""
        leaf = next(
            (
                m
                for m in self.model.modules()
                if not any(True for _ in m.children())
                and any(True for _ in m.parameters(recurse=False))
            ),
            None,
        )
        b, s, g = self.batch, self.seq, self.gen
        if isinstance(leaf, nn.Embedding):
            return torch.randint(0, leaf.num_embeddings, (b, s), generator=g)
        if isinstance(leaf, nn.Linear):
            return torch.randn(b, leaf.in_features, generator=g)
        if isinstance(leaf, nn.Conv2d):
            h, w = _declared_image_size(self.model)
            return torch.randn(b, leaf.in_channels, h, w, generator=g)
        if isinstance(leaf, (nn.Conv1d, nn.Conv3d)):
            spatial = (32, 32, 8)[: len(leaf.kernel_size)][::-1]  # 32 | 8x32x32
            return torch.randn(b, leaf.in_channels, *spatial, generator=g)
        if isinstance(leaf, nn.RNNBase):
            shape = (b, s, leaf.input_size) if leaf.batch_first else (s, b, leaf.input_size)
            return torch.randn(*shape, generator=g)
        return None


def _declared_image_size(model: nn.Module) -> tuple[int, int]:
    """The image size a plain vision module declares, else the usual 224x224.

    Read from an ``image_size``/``img_size`` attribute (int or pair) or the ``input_size``
    (channels, height, width) of a ``pretrained_cfg``/``default_cfg`` dict, the
    conventions of torchvision's and timm's models.
    """
    for name in ("image_size", "img_size"):
        size = _pair(getattr(model, name, None))
        if size:
            return size
    for name in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, name, None)
        size = cfg.get("input_size") if isinstance(cfg, dict) else None
        if isinstance(size, (tuple, list)) and len(size) == 3:
            pair = _pair(size[1:])
            if pair:
                return pair
    return _DEFAULT_IMAGE_SIZE, _DEFAULT_IMAGE_SIZE


def _pair(size: Any) -> tuple[int, int] | None:
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size, size
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) for v in size):
        return int(size[0]), int(size[1])
    return None


def _special_token_ids(*configs: Any) -> set[int]:
    ids: set[int] = set()
    for cfg in configs:
        if cfg is None:
            continue
        for key in _config_keys(cfg):
            if not key.endswith(("_token_id", "_token_index", "_token_ids")):
                continue
            value = getattr(cfg, key, None)
            values = value if isinstance(value, (list, tuple)) else [value]
            ids.update(v for v in values if isinstance(v, int) and not isinstance(v, bool))
    return ids


def _avoid_special_tokens(ids: torch.Tensor, special: set[int], high: int) -> torch.Tensor:
    # Random ids that hit e.g. an image placeholder or EOS can change control flow; swap
    # them for the lowest ordinary id.
    special = {s for s in special if 0 <= s < high}
    if not special:
        return ids
    plain = next((i for i in range(high) if i not in special), None)
    if plain is None:
        return ids
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for s in special:
        mask |= ids == s
    return ids.masked_fill(mask, plain)


# ---------------------------------------------------------------------------- check


SPECS_HINT = "describe the inputs with --input-specs FILE.json"


def check_inputs_fit(model: nn.Module, inputs: ExampleInputs, hint: str = SPECS_HINT) -> Any:
    """Run one forward pass, leaving the model's buffers as they were; turn any failure
    into a one-line GraphtagError ending with ``hint`` (what to do about it). Returns the
    output."""
    try:
        with torch.no_grad(), state_kept(model):
            return model(*inputs.args, **inputs.kwargs)
    except Exception as exc:
        raise GraphtagError(
            f"inputs do not fit the model: {first_line(exc, typed=True)} ({hint})"
        ) from exc


def describe_call(inputs: ExampleInputs) -> str:
    """How ``inputs`` will be passed: ``2 positional, keywords scale, mask``."""
    names = ", ".join(inputs.kwargs) or "none"
    return f"{len(inputs.args)} positional, keywords {names}"


# ---------------------------------------------------------------------------- spec files
# The file format is read by graphtag.core.input_specs (load_input_specs, re-exported here).


def inputs_from_specs(specs: dict[str, dict[str, Any]]) -> ExampleInputs:
    """Deterministic tensors for validated specs, passed as keyword arguments.

    Integers default to [0, 2) (use "high" for token ids, "value": 1 for masks); floats are
    standard normal, or uniform in [low, high) when either bound is given.
    """
    gen = torch.Generator().manual_seed(_SEED)
    kwargs: dict[str, torch.Tensor] = {}
    for name, spec in specs.items():
        shape, dtype = tuple(spec["shape"]), _DTYPES[spec["dtype"]]
        if "value" in spec:
            kwargs[name] = torch.full(shape, spec["value"], dtype=dtype)
        elif dtype is torch.bool:
            kwargs[name] = torch.randint(0, 2, shape, generator=gen).to(torch.bool)
        elif dtype.is_floating_point:
            if "low" in spec or "high" in spec:
                low = float(spec.get("low", 0.0))
                high = float(spec.get("high", low + 1.0))
                t = torch.rand(shape, generator=gen) * (high - low) + low
            else:
                t = torch.randn(shape, generator=gen)
            kwargs[name] = t.to(dtype)
        else:
            low = int(spec.get("low", 0))
            high = int(spec.get("high", low + 2))
            kwargs[name] = torch.randint(low, high, shape, generator=gen, dtype=dtype)
    return ExampleInputs((), kwargs)
