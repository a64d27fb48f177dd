"""Checks run after passes in verify-each mode and by ``graphtag validate``."""

from __future__ import annotations

import dataclasses
import tempfile
from collections import Counter
from pathlib import Path

import onnx
import onnx_ir as ir

from graphtag.analysis import manager
from graphtag.analysis.summary import node_label
from graphtag.core import metadata
from graphtag.core.errors import first_line
from graphtag.core.graphs import iter_all_nodes
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
        return f"onnx.checker: {first_line(exc)}"
    return None


@dataclasses.dataclass
class TagCheck:
    """The tags of a model checked against the tag format and its hierarchy."""

    tagged: int  # nodes carrying a tag
    malformed: list[str]  # "node=tag" for tags that are not well-formed
    unknown: Counter[str]  # well-formed tags the hierarchy lacks -> their nodes

    def unknown_items(self) -> list[str]:
        return [f"{tag} ({n} nodes)" for tag, n in sorted(self.unknown.items())]


def check_tags(model: ir.Model, hierarchy: Hierarchy | None) -> TagCheck:
    """Every node tag checked once: well-formed, and (with a hierarchy) one of its modules."""
    check = TagCheck(0, [], Counter())
    for index, node in enumerate(iter_all_nodes(model)):
        tag = metadata.node_tag(node)
        if tag is None:
            continue
        check.tagged += 1
        if not is_valid_tag(tag):
            check.malformed.append(f"{node_label(node, index)}={tag!r}")
        elif hierarchy is not None and tag not in hierarchy:
            check.unknown[tag] += 1
    return check


def listing(count: int, what: str, items: list[str]) -> str:
    """``"<count> <what>: a, b, c, ... (n more)"``."""
    shown = ", ".join(items[:_MAX_LISTED])
    more = f", ... ({count - _MAX_LISTED} more)" if count > _MAX_LISTED else ""
    return f"{count} {what}: {shown}{more}"


def tag_problems(model: ir.Model) -> list[str]:
    """Malformed tags, and tags that name no module of the stored hierarchy."""
    check = check_tags(model, manager.hierarchy(model))
    problems = []
    if check.malformed:
        problems.append(listing(len(check.malformed), "malformed tags", check.malformed))
    if check.unknown:
        items = check.unknown_items()
        problems.append(listing(len(items), "tags not in the hierarchy", items))
    return problems


def model_problems(model: ir.Model) -> list[str]:
    """Everything verify-each checks: the ONNX checker, then graphtag's own invariants."""
    problems = []
    checker = run_onnx_checker(model)
    if checker:
        problems.append(checker)
    problems.extend(tag_problems(model))
    return problems
