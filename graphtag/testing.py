"""pytest helpers: golden JSON snapshots of tagged exports (syrupy).

Use ``snapshot.use_extension(GoldenJSONExtension)``; files go to ``golden/`` beside the
tests folder, one JSON file per snapshot, refreshed with ``pytest --snapshot-update``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx_ir as ir
from syrupy.extensions.json import JSONSnapshotExtension

from graphtag import metadata
from graphtag.hierarchy import Hierarchy


class GoldenJSONExtension(JSONSnapshotExtension):
    """One JSON file per snapshot under ``<tests folder>/../golden``."""

    golden_dirname = "golden"

    @classmethod
    def dirname(cls, *, test_location) -> str:
        return str(Path(test_location.filepath).parent.parent / cls.golden_dirname)


def export_summary(model: ir.Model) -> dict:
    """Deterministic facts about a tagged export: module tags, per-tag ops, counts."""
    ops: dict[str, Counter] = {}
    untagged = 0
    total = 0
    for node in metadata.iter_all_nodes(model):
        total += 1
        tag = metadata.node_tag(node)
        if tag is None:
            untagged += 1
            tag = "<untagged>"
        ops.setdefault(tag, Counter())[
            f"{node.domain}::{node.op_type}" if node.domain else node.op_type
        ] += 1
    hierarchy = Hierarchy.from_model(model)
    from graphtag.passes.multi_consumer import shared_parameters

    sources = Counter(
        n.metadata_props[metadata.TAG_SOURCE]
        for n in metadata.iter_all_nodes(model)
        if metadata.TAG_SOURCE in n.metadata_props
    )
    return {
        "tag_sources": dict(sorted(sources.items())),
        "multi_context_nodes": sum(
            1 for n in metadata.iter_all_nodes(model) if metadata.CONTEXTS in n.metadata_props
        ),
        "shared_parameters": dict(sorted(shared_parameters(model).items())),
        "nodes": total,
        "untagged": untagged,
        "modules": sorted(hierarchy.modules) if hierarchy else [],
        "ops_per_module": {tag: dict(sorted(c.items())) for tag, c in sorted(ops.items())},
        "inputs": [v.name for v in model.graph.inputs],
        "outputs": [v.name for v in model.graph.outputs],
        "initializers": len(model.graph.initializers),
        "opsets": dict(sorted(model.opset_imports.items())),
    }
