"""Checks run after passes in verify-each mode and by ``graphtag validate``."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
import onnx_ir as ir

from graphtag.core import metadata
from graphtag.core.hierarchy import Hierarchy, is_valid_tag
from graphtag.core.io import (
    EXTERNAL_DATA_THRESHOLD_BYTES,
    has_external_tensors,
    initializer_bytes,
    save,
)

_MAX_LISTED = 5


def run_onnx_checker(model: ir.Model) -> str | None:
    """``onnx.checker.check_model(full_check=True)``; returns the problem or None."""
    try:
        if has_external_tensors(model) or initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD_BYTES:
            # Too large for one protobuf message, or weights still in another file whose
            # relative path only resolves beside it: check a fresh copy through a file.
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.onnx"
                save(model, path, external_data=True)
                onnx.checker.check_model(str(path), full_check=True)
        else:
            onnx.checker.check_model(ir.serde.serialize_model(model), full_check=True)
    except Exception as exc:
        return f"onnx.checker: {str(exc).strip().splitlines()[0] if str(exc) else exc!r}"
    return None


def tag_problems(model: ir.Model) -> list[str]:
    """Malformed tags, and tags that name no module of the stored hierarchy."""
    hierarchy = Hierarchy.from_model(model)
    malformed: list[str] = []
    unknown: list[str] = []
    for node in metadata.iter_all_nodes(model):
        tag = metadata.node_tag(node)
        if tag is None:
            continue
        if not is_valid_tag(tag):
            malformed.append(f"{node.name}={tag!r}")
        elif hierarchy is not None and tag not in hierarchy:
            unknown.append(f"{node.name}={tag!r}")
    problems = []
    if malformed:
        problems.append(f"{len(malformed)} malformed tags: {', '.join(malformed[:_MAX_LISTED])}")
    if unknown:
        problems.append(
            f"{len(unknown)} tags not in the hierarchy: {', '.join(unknown[:_MAX_LISTED])}"
        )
    return problems


def model_problems(model: ir.Model) -> list[str]:
    """Everything verify-each checks: the ONNX checker, then graphtag's own invariants."""
    problems = []
    checker = run_onnx_checker(model)
    if checker:
        problems.append(checker)
    problems.extend(tag_problems(model))
    return problems
