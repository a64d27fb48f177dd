"""onnx-graphsurgeon round trips that keep graphtag's tags.

onnx-graphsurgeon drops every node's and value's ``metadata_props`` when it imports or
exports a model, so surgery erases the module map. Use :func:`to_graphsurgeon` to start
the surgery and :func:`from_graphsurgeon` to come back::

    from graphtag.tools.graphsurgeon import from_graphsurgeon, to_graphsurgeon

    graph = to_graphsurgeon(model)  # onnx_graphsurgeon.Graph
    ...  # insert, remove, rewire nodes
    edited = from_graphsurgeon(graph, reference=model)  # onnx_ir.Model, tagged

Coming back retags the edited graph from the reference (``graphtag.retag`` with
``exact=True``): nodes and values the surgery left alone get back every metadata entry
they had (tags, contexts, torch's metadata), new nodes are tagged from what they replaced
or from their neighbours (``pkg.graphtag.tag_source`` says how). onnx-graphsurgeon is
optional: it is imported when these functions run.
"""

from __future__ import annotations

__all__ = ["from_graphsurgeon", "to_graphsurgeon"]

import os
from typing import TYPE_CHECKING, Any

import onnx_ir as ir

from graphtag.core.errors import GraphtagError
from graphtag.core.io import has_external_tensors, load
from graphtag.passes.retag import DEFAULT_MIN_MATCH_RATE, RetagReport, retag

if TYPE_CHECKING:
    import onnx_graphsurgeon as gs


def _graphsurgeon() -> Any:
    try:
        import onnx_graphsurgeon
    except ImportError as exc:
        raise GraphtagError(
            "onnx-graphsurgeon is not installed (pip install onnx-graphsurgeon)"
        ) from exc
    return onnx_graphsurgeon


def to_graphsurgeon(model: ir.Model | str | os.PathLike) -> gs.Graph:
    """The model as an ``onnx_graphsurgeon.Graph`` (the model itself is not modified).

    Weights stored in an external data file are read into memory: graphsurgeon holds
    tensors as arrays.
    """
    gs = _graphsurgeon()
    if not isinstance(model, ir.Model):
        model = load(model)
    if has_external_tensors(model):
        model = model.clone()  # new values, shared tensors: the caller's model stays as is
        ir.external_data.load_to_model(model)
    return gs.import_onnx(ir.serde.serialize_model(model))


def from_graphsurgeon(
    graph: gs.Graph,
    reference: ir.Model | str | os.PathLike,
    *,
    force: bool = False,
    min_match_rate: float = DEFAULT_MIN_MATCH_RATE,
) -> ir.Model:
    """The edited graph as an ``onnx_ir.Model``, retagged from ``reference``.

    ``reference`` is the tagged model the graph came from (not modified). Unchanged nodes
    and values get back all their metadata; see :func:`graphtag.retag` for how the others
    are tagged and for the errors (``force``, ``min_match_rate``).
    """
    return retag_graphsurgeon(graph, reference, force=force, min_match_rate=min_match_rate).model


def retag_graphsurgeon(
    graph: gs.Graph,
    reference: ir.Model | str | os.PathLike,
    *,
    force: bool = False,
    min_match_rate: float = DEFAULT_MIN_MATCH_RATE,
) -> RetagReport:
    """:func:`from_graphsurgeon`, returning retag's report (match kinds per node)."""
    gs = _graphsurgeon()
    try:
        proto = gs.export_onnx(graph)
    except Exception as exc:  # graphsurgeon raises assorted errors on invalid graphs
        raise GraphtagError(f"onnx-graphsurgeon could not export the graph ({exc})") from exc
    model = ir.serde.deserialize_model(proto)
    return retag(reference, model, force=force, min_match_rate=min_match_rate, exact=True)
