"""Import torchvision and timm for the sweep, from a folder of their own.

torchvision must be the release paired with the installed torch (0.28 for torch 2.13).
PyPI's torchvision 0.28.0 for Linux is a CUDA 13 build: its C++ operators (``_C.so``)
link against ``libtorch_cuda.so``, which the CPU torch wheel does not have, so they fail
to load, and ``import torchvision`` then stops with "RuntimeError: operator
torchvision::nms does not exist" (pytorch/vision#9085: ``_meta_registrations`` registers
a fake kernel for ``nms``/``qnms`` without checking that the operators loaded). Since
transformers imports torchvision whenever it is installed, installing it next to the
project would break every transformers model; it lives in a folder the sweep adds to
``sys.path`` in the processes that build torchvision/timm models only::

    pip install --no-deps --target .cache/thirdparty 'torchvision==0.28.*' timm pillow

(``--no-deps``: torch, numpy, pyyaml, safetensors and huggingface_hub are the project's.)
The classification models are pure Python; only detection ops (nms, roi_align, ...) are
C++. When the operators cannot load, the two operator schemas the import needs are
declared first, so the import completes; ``torchvision.ops.nms`` still raises (no kernel).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

FOLDER = Path(
    os.environ.get("GRAPHTAG_SWEEP_THIRDPARTY", Path(__file__).parents[2] / ".cache" / "thirdparty")
)
_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"


def available() -> bool:
    """torchvision and timm can be imported (from FOLDER or the environment)."""
    _add_folder()
    return all(importlib.util.find_spec(name) is not None for name in ("torchvision", "timm"))


def import_torchvision() -> ModuleType:
    _add_folder()
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None:
        raise ImportError(f"torchvision is not installed (nor in {FOLDER})")
    if "torchvision" not in sys.modules and not _operators_load(spec):
        for name in ("nms", "qnms"):
            torch.library.define(f"torchvision::{name}", _SCHEMA)
    import torchvision

    return torchvision


def import_timm() -> ModuleType:
    import_torchvision()  # timm imports torchvision
    import timm

    return timm


def _add_folder() -> None:
    if FOLDER.is_dir() and str(FOLDER) not in sys.path:
        sys.path.insert(0, str(FOLDER))


def _operators_load(spec) -> bool:
    import torch

    folder = Path(next(iter(spec.submodule_search_locations)))
    library = next(iter(folder.glob("_C*.so")), None)
    if library is None:
        return False
    try:
        torch.ops.load_library(str(library))
    except (OSError, RuntimeError):
        return False
    return True
