"""The input-spec file format (``--input-specs FILE.json``), read without torch.

A spec file is a JSON object, one entry per model input::

    {"input_ids": {"shape": [1, 16], "dtype": "int64", "high": 30522},
     "attention_mask": {"shape": [1, 16], "dtype": "int64", "value": 1}}

``shape`` (required) lists non-negative integers; ``dtype`` (default ``float32``) is one
of :data:`DTYPES`; ``low``/``high`` bound random values, ``value`` fills the tensor.
The exporter makes torch tensors from it (graphtag.exporter.example_inputs), the
profiler numpy arrays (graphtag.tools.profile.inputs); both read it here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from graphtag.core.errors import GraphtagError

DTYPES = (
    "bool",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "bfloat16",
    "float32",
    "float64",
)
_KEYS = {"shape", "dtype", "low", "high", "value"}


def load_input_specs(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read and validate ``{name: {"shape": [...], "dtype": ..., "low"?, "high"?, "value"?}}``."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GraphtagError(f"input specs file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphtagError(f"cannot read input specs file {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise GraphtagError(f"input specs file {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or not raw:
        raise GraphtagError(
            f"input specs file {path} must be a non-empty JSON object: name -> spec"
        )
    return {name: _validate_spec(path, name, spec) for name, spec in raw.items()}


def _validate_spec(path: Path, name: str, spec: Any) -> dict[str, Any]:
    where = f"input specs {path}: input '{name}'"
    if not isinstance(spec, dict):
        raise GraphtagError(f"{where} must be an object with 'shape' and 'dtype'")
    extra = set(spec) - _KEYS
    if extra:
        raise GraphtagError(f"{where} has unknown key(s): {', '.join(sorted(extra))}")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise GraphtagError(f"{where}: 'shape' must be a list of non-negative integers")
    dtype = spec.get("dtype", "float32")
    if dtype not in DTYPES:
        raise GraphtagError(f"{where}: unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    for key in ("low", "high", "value"):
        v = spec.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise GraphtagError(f"{where}: '{key}' must be a number")
    low, high = spec.get("low"), spec.get("high")
    if low is not None and high is not None and not low < high:
        raise GraphtagError(f"{where}: 'low' must be less than 'high'")
    return {
        "shape": list(shape),
        "dtype": dtype,
        **{k: spec[k] for k in ("low", "high", "value") if k in spec},
    }
