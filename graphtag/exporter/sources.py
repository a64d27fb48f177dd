"""Resolve the MODEL argument of ``graphtag export`` into an nn.Module.

Accepted forms, tried in this order:

* ``package.module:factory`` or ``path/to/file.py:factory``: call ``factory()``, which
  returns a module or ``(module, example_inputs)``;
* an existing directory with ``config.json``: a transformers checkpoint;
* a Hugging Face hub id (``org/name`` or ``name``): only from the local cache, because the
  hub may be unreachable and a network timeout must not hang the command.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graphtag.core.errors import GraphtagError, first_line
from graphtag.exporter.example_inputs import ExampleInputs

# What the hub accepts as a repo id: one optional namespace, no path tricks.
_HUB_ID = re.compile(r"^(?!\.)[\w.-]+(/(?!\.)[\w.-]+)?$")
# Names with these endings are meant as local files, never as hub repos.
_FILE_SUFFIXES = {".py", ".pt", ".pth", ".pt2", ".bin", ".safetensors", ".onnx", ".json"}
_FACTORY = re.compile(r"^(?P<target>.+):(?P<attr>[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)$")


@dataclass
class LoadedModel:
    """A model ready for export (eval mode) and what is known about it."""

    module: nn.Module
    config: Any = None
    example_inputs: ExampleInputs | None = None
    description: str = ""


def load_model(
    spec: str, *, random_init: bool = False, trust_remote_code: bool = False
) -> LoadedModel:
    """Load the model named by ``spec``; every failure is a one-line GraphtagError."""
    spec = spec.strip()
    if not spec:
        raise GraphtagError("empty MODEL argument")
    path = Path(spec).expanduser()
    match = _FACTORY.match(spec)
    # "C:\\x" style paths and existing files with a colon are paths, not factories.
    if match and not path.exists():
        return _from_factory(match["target"], match["attr"], spec)
    if path.is_dir():
        return _from_directory(path, random_init=random_init, trust_remote_code=trust_remote_code)
    if path.exists():
        hint = " (add ':factory' to name the function to call)" if path.suffix == ".py" else ""
        raise GraphtagError(
            f"unsupported model file {spec}: expected a directory with config.json, "
            f"a hub id or module:factory{hint}"
        )
    if _HUB_ID.match(spec) and path.suffix not in _FILE_SUFFIXES:
        return _from_hub(spec, random_init=random_init, trust_remote_code=trust_remote_code)
    raise GraphtagError(f"no such model directory or file: {spec}")


# ---------------------------------------------------------------------------- transformers


def _from_directory(path: Path, *, random_init: bool, trust_remote_code: bool) -> LoadedModel:
    if not (path / "config.json").is_file():
        raise GraphtagError(
            f"{path} has no config.json: pass a directory written by save_pretrained() "
            "or a module:factory"
        )
    if not random_init and not _has_weights(path):
        raise GraphtagError(
            f"{path} has no weights (*.safetensors or pytorch_model.bin); "
            "use --random-init to build the architecture from config.json alone"
        )
    return _load_transformers(
        str(path), f"directory {path}", random_init=random_init, trust_remote_code=trust_remote_code
    )


def _has_weights(path: Path) -> bool:
    patterns = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")
    return any(any(path.glob(p)) for p in patterns)


def _from_hub(repo_id: str, *, random_init: bool, trust_remote_code: bool) -> LoadedModel:
    try:
        return _load_transformers(
            repo_id,
            f"hub id {repo_id} (local cache)",
            random_init=random_init,
            trust_remote_code=trust_remote_code,
            offline_hint=True,
        )
    except _NotCached:
        raise GraphtagError(
            f"'{repo_id}' is not a local path and is not in the Hugging Face cache; the hub is "
            "not reachable from here (offline mode): save the model with save_pretrained() "
            "to a directory and pass that directory"
        ) from None


class _NotCached(Exception):
    """The files of a hub id are not in the local cache."""


def _load_transformers(
    source: str,
    where: str,
    *,
    random_init: bool,
    trust_remote_code: bool,
    offline_hint: bool = False,
) -> LoadedModel:
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise GraphtagError(f"loading {where} needs transformers: {exc}") from exc

    # local_files_only everywhere: never wait on the network, not even for a local dir's
    # remote code or tokenizer side files.
    common = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    try:
        config = transformers.AutoConfig.from_pretrained(source, **common)
    except OSError as exc:
        if offline_hint:
            raise _NotCached from exc
        raise GraphtagError(f"cannot read the config of {where}: {first_line(exc)}") from exc
    except Exception as exc:
        hint = _remote_code_hint(source) if not trust_remote_code else ""
        raise GraphtagError(f"cannot read the config of {where}: {first_line(exc)}{hint}") from exc

    cls = _architecture_class(transformers, config)
    name = getattr(cls, "__name__", "AutoModel") if cls is not None else "AutoModel"
    try:
        with _no_background_conversion():
            if random_init:
                module = _build_from_config(transformers, cls, config, trust_remote_code)
            elif cls is not None:
                module = cls.from_pretrained(source, config=config, **common)
            else:
                module = transformers.AutoModel.from_pretrained(source, config=config, **common)
    except OSError as exc:
        if offline_hint:
            raise _NotCached from exc
        raise GraphtagError(f"cannot load {name} from {where}: {first_line(exc)}") from exc
    except Exception as exc:
        raise GraphtagError(f"cannot load {name} from {where}: {first_line(exc)}") from exc

    module.eval()
    how = "random init" if random_init else "pretrained weights"
    return LoadedModel(module, config, None, f"{type(module).__name__} from {where}, {how}")


@contextlib.contextmanager
def _no_background_conversion() -> Iterator[None]:
    # For a cached hub checkpoint with only .bin weights transformers starts a thread that asks
    # the hub for a safetensors conversion, even with local_files_only; it would wait on the
    # network at exit. This switch (read at call time) turns it off.
    key = "DISABLE_SAFETENSORS_CONVERSION"
    old = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _remote_code_hint(source: str) -> str:
    # Checkpoints that ship their own modeling code say so with "auto_map" in config.json.
    try:
        with open(Path(source) / "config.json", encoding="utf-8") as f:
            has_code = "auto_map" in json.load(f)
    except (OSError, ValueError):
        return ""
    return " (it ships its own code: pass --trust-remote-code to run it)" if has_code else ""


def _architecture_class(transformers: Any, config: Any) -> type | None:
    """The class named first in ``config.architectures`` if transformers ships it.

    Heads (ForCausalLM, ForSequenceClassification, ...) are only reachable this way; custom
    code classes are not attributes of transformers and go through AutoModel + auto_map.
    """
    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None)
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            return cls
    return None


def _build_from_config(transformers: Any, cls: type | None, config: Any, trust: bool) -> nn.Module:
    if cls is None:
        return transformers.AutoModel.from_config(config, trust_remote_code=trust)
    from_config = getattr(cls, "_from_config", None)
    return from_config(config) if callable(from_config) else cls(config)


# ---------------------------------------------------------------------------- factories


def _from_factory(target: str, attr: str, spec: str) -> LoadedModel:
    module = _import_target(target)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise GraphtagError(f"{target} has no attribute '{attr}' (from {spec})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise GraphtagError(f"factory {spec} is a {type(obj).__name__}, not a callable")
    try:
        result = obj()
    except Exception as exc:
        raise GraphtagError(f"factory {spec} raised {first_line(exc, typed=True)}") from exc

    example = None
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], nn.Module):
        result, example = result[0], result[1]
        example = None if example is None else _coerce_example_inputs(example, spec)
    if not isinstance(result, nn.Module):
        raise GraphtagError(
            f"factory {spec} returned {type(result).__name__}; expected a torch.nn.Module "
            "or a tuple (module, example_inputs)"
        )
    result.eval()
    config = getattr(result, "config", None)
    config = config if hasattr(config, "to_dict") else None
    return LoadedModel(result, config, example, f"{type(result).__name__} from factory {spec}")


def _import_target(target: str) -> Any:
    """Import ``package.module`` or execute ``path/to/file.py`` as a module."""
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser()
        if not path.is_file():
            raise GraphtagError(f"no such model directory or file: {target}")
        return _import_file(path)
    # The current directory is where users keep their factories; console scripts do not
    # put it on sys.path, so add it for the duration of the import.
    cwd = str(Path.cwd())
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        return importlib.import_module(target)
    except Exception as exc:
        raise GraphtagError(f"cannot import {target}: {first_line(exc, typed=True)}") from exc
    finally:
        if added:
            sys.path.remove(cwd)


def _import_file(path: Path) -> Any:
    path = path.resolve()
    # A private module name per file: never shadows a real package, re-executed on each load.
    stem = re.sub(r"\W", "_", path.stem)
    name = f"_graphtag_factory_{stem}_{abs(hash(str(path))):x}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise GraphtagError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    # Registered before exec so dataclasses/pickling inside the file can find it; the
    # file's own directory is importable so it can import its neighbours.
    sys.modules[name] = module
    folder = str(path.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise GraphtagError(f"cannot import {path}: {first_line(exc, typed=True)}") from exc
    finally:
        if added:
            sys.path.remove(folder)
    return module


def _coerce_example_inputs(value: Any, spec: str) -> ExampleInputs:
    """Accept a kwargs dict, an args tuple, ``(args, kwargs)``, one tensor or ExampleInputs."""
    if isinstance(value, ExampleInputs):
        return value
    if isinstance(value, dict):
        return ExampleInputs((), dict(value))
    if isinstance(value, torch.Tensor):
        return ExampleInputs((value,), {})
    if isinstance(value, (tuple, list)):
        if len(value) == 2 and isinstance(value[0], (tuple, list)) and isinstance(value[1], dict):
            return ExampleInputs(tuple(value[0]), dict(value[1]))
        return ExampleInputs(tuple(value), {})
    raise GraphtagError(
        f"factory {spec} returned example inputs of type {type(value).__name__}; expected a "
        "dict of kwargs, a tuple of args or (args, kwargs)"
    )


def prepare_inputs(loaded: LoadedModel, input_specs: str | os.PathLike | None = None):
    """Example inputs: from ``input_specs`` (JSON file), else the factory's own, else
    generated from the forward signature and config; checked against the model."""
    from graphtag.exporter.example_inputs import (
        SPECS_HINT,
        check_inputs_fit,
        describe_call,
        inputs_from_specs,
        load_input_specs,
        make_example_inputs,
        stateless_options,
    )

    hint = SPECS_HINT
    if input_specs:
        inputs = inputs_from_specs(load_input_specs(input_specs))
        # The tensors come from the file; the options generated inputs carry still apply.
        for key, value in stateless_options(loaded.module, loaded.config).items():
            inputs.kwargs.setdefault(key, value)
    elif loaded.example_inputs is not None:
        inputs = loaded.example_inputs
        # A factory's (list, dict) reads as (args, kwargs): say how it was read.
        hint = (
            f"the factory's example inputs were passed as {describe_call(inputs)}; "
            "return ExampleInputs(args, kwargs) (graphtag.exporter.example_inputs) to "
            "say exactly, or give --input-specs FILE.json"
        )
    else:
        inputs = make_example_inputs(loaded.module, loaded.config)
    check_inputs_fit(loaded.module, inputs, hint)
    return inputs
