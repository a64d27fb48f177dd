"""A third-party pass, registered through the ``graphtag.passes`` entry-point group.

``demo-broken`` points at a missing class on purpose: graphtag must report it
without failing the other passes.
"""

from __future__ import annotations

from typing import Literal

import onnx_ir as ir


class StampPass(ir.passes.InPlacePass):
    """Write a key/value pair into every node's metadata_props."""

    def __init__(
        self, *, key: str = "demo.stamp", value: str = "1", mode: Literal["all", "untagged"] = "all"
    ) -> None:
        super().__init__()
        self.key = key
        self.value = value
        self.mode = mode

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        modified = False
        for node in model.graph:
            if self.mode == "untagged" and "pkg.graphtag.module" in node.metadata_props:
                continue
            if node.metadata_props.get(self.key) != self.value:
                node.metadata_props[self.key] = self.value
                modified = True
        return ir.passes.PassResult(model, modified)
