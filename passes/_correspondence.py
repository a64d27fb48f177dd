"""Which nodes and values of a rewritten model are the reference's (used by ``retag``).

A *scope* is a naming space: the main graph with its nested subgraphs, or one local
function (matched with the reference function of the same identifier). Values of the
rewritten model are matched to reference values of the corresponding scope, then nodes:

* values by name: a value whose name exists in the reference scope, with the same
  element type (and, for constants, the same shape), is that value. Renamed graph
  inputs and outputs are matched by position (same element type); renamed constants
  (initializers, ``Constant`` outputs) by type, shape and bytes (only constants left
  unmatched are read, bucketed by type and shape first);
* ``value``: a node whose outputs are, position by position, the outputs of one
  reference node with the same operator is that node (its inputs may have been rewired,
  e.g. a folded shape operand or a merged duplicate);
* ``structural``, forward: in topological order, a node none of whose outputs matched,
  whose dynamic inputs all matched, is looked up by signature (domain, operator, the
  reference values at its dynamic inputs; constants are wildcards of the same type and
  shape); candidates must agree on the attributes both set (a tool may spell out a
  default), ties go to the very constants, then equal constant bytes, then reference
  order. Its outputs become matched, so matching proceeds from the graph inputs and
  initializers through renamed chains. A node fed by matched constants only is looked up
  among the users of the least used one;
* ``structural``, backward: from matched nodes to their inputs, consumers first: an
  unmatched dynamic input of a matched node is the reference node's input at that
  position; its producer is then a reference node if it has that node's operator. This
  enters renamed chains that begin after a rewritten node (ONNX Runtime's inlined
  functions); a second forward pass follows.
* every other node is *residual*: ``_fusion_regions`` finds what it replaced.

What it cannot match: a node all of whose values were renamed and that sits between
two rewritten nodes (it joins their group: a coarser, still correct tag), a node whose
attributes were rewritten, a node fed only by unmatched constants. Those go to the
fusion regions or to tag propagation. Backward matches and later ones are inferences;
only matches of the first forward pass count as evidence that the models agree
(:attr:`Correspondence.confirmed`, used for the match rate).

Cost: one dictionary lookup per value and per structural candidate (the signature index
is built once per scope, on first need), one walk over each node's inputs: linear in
the size of both models, plus hashing the bytes of renamed constants.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator

import onnx_ir as ir

from graphtag.core.graphs import subgraphs_of

VALUE = "value"
STRUCTURAL = "structural"

_GRAPH_ATTRS = (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS)
# Constant tensors up to this many bytes are compared by content when breaking ties.
_MAX_COMPARED_BYTES = 1 << 20


@dataclasses.dataclass
class Correspondence:
    """The matching of one rewritten model against its reference (objects by id)."""

    values: dict[int, ir.Value] = dataclasses.field(default_factory=dict)  # rewritten -> ref
    nodes: dict[int, ir.Node] = dataclasses.field(default_factory=dict)  # rewritten -> ref
    kinds: dict[int, str] = dataclasses.field(default_factory=dict)  # rewritten node -> kind
    claimed: set[int] = dataclasses.field(default_factory=set)  # reference nodes matched
    # Matched rewritten nodes whose matched inputs are the reference node's inputs too:
    # evidence that the two graphs agree, not only their names.
    confirmed: set[int] = dataclasses.field(default_factory=set)
    confirming: bool = True  # matches made now count as evidence (first forward pass)
    total_values: int = 0  # named values of the rewritten model
    by_name: int = 0  # of which matched by name or position
    ambiguous: int = 0  # structural matches chosen among equal candidates
    # The graphs of the reference scope being matched, and its nodes by signature (built
    # on first use).
    scope: list = dataclasses.field(default_factory=list)
    signatures: dict[tuple, list[ir.Node]] | None = None
    use_counts: dict[int, int] = dataclasses.field(default_factory=dict)


def match(rewritten: ir.Model, reference: ir.Model) -> Correspondence:
    """Match every scope of ``rewritten`` with the same scope of ``reference``."""
    found = Correspondence()
    pairs: list[tuple[ir.Graph | ir.Function, ir.Graph | ir.Function | None]] = [
        (rewritten.graph, reference.graph)
    ]
    for key, function in rewritten.functions.items():
        pairs.append((function, reference.functions.get(key)))
    for container, counterpart in pairs:
        _match_scope(container, counterpart, found)
    return found


def iter_scope_graphs(container: ir.Graph | ir.Function) -> Iterator[ir.Graph | ir.Function]:
    """``container`` then its nested subgraphs, each graph before the graphs it holds."""
    stack = [container]
    while stack:
        graph = stack.pop()
        yield graph
        nested: list[ir.Graph] = []
        for node in graph:
            nested.extend(subgraphs_of(node))
        stack.extend(reversed(nested))


def _scope_values(graphs: list) -> Iterator[ir.Value]:
    for graph in graphs:
        yield from graph.inputs
        initializers = getattr(graph, "initializers", None)
        if initializers:
            yield from initializers.values()
        for node in graph:
            yield from node.outputs


def _match_scope(container, counterpart, found: Correspondence) -> None:
    mine = list(iter_scope_graphs(container))
    theirs = list(iter_scope_graphs(counterpart)) if counterpart is not None else []
    names: dict[str, ir.Value] = {}
    for value in _scope_values(theirs):
        if value.name:
            names.setdefault(value.name, value)
    values = found.values
    for value in _scope_values(mine):
        if not value.name or id(value) in values:
            continue
        found.total_values += 1
        ref = names.get(value.name)
        if ref is not None and _same_kind(value, ref):
            values[id(value)] = ref
            found.by_name += 1
    if counterpart is None:
        return
    _match_by_position(container.inputs, counterpart.inputs, found)
    _match_by_position(container.outputs, counterpart.outputs, found)
    _match_constants(mine, theirs, found)
    found.scope, found.signatures = theirs, None
    orders = [_topological(graph) for graph in mine]
    found.confirming = True
    for order in orders:
        for node in order:
            _classify(node, found)
    # Matches inferred from here on are not evidence that the models agree (match rate).
    found.confirming = False
    for order in reversed(orders):
        _match_backward(order, found)
    for order in orders:
        for node in order:
            if id(node) not in found.nodes:
                _classify(node, found)


def _match_by_position(mine: Iterable[ir.Value], theirs: Iterable[ir.Value], found) -> None:
    """Renamed graph inputs/outputs: the reference's at the same position, if unclaimed."""
    mine, theirs = list(mine), list(theirs)
    if len(mine) != len(theirs):
        return
    taken = {id(v) for v in found.values.values()}
    for value, ref in zip(mine, theirs):
        if id(value) in found.values or id(ref) in taken:
            continue
        if ref.name and _same_kind(value, ref):
            found.values[id(value)] = ref
            taken.add(id(ref))
            found.by_name += 1


def _constants_of(graphs: list) -> Iterator[ir.Value]:
    """Initializers and outputs of ``Constant`` nodes of a scope."""
    for graph in graphs:
        initializers = getattr(graph, "initializers", None)
        if initializers:
            yield from initializers.values()
        for node in graph:
            if node.op_type == "Constant" and node.domain == "" and node.outputs:
                yield node.outputs[0]


def _match_constants(mine: list, theirs: list, found: Correspondence) -> None:
    """Renamed constants: a reference constant with the same type, shape and bytes.

    Only constants left unmatched by name are read, bucketed by type and shape first, so
    a model whose names survived costs one walk over its constants.
    """
    values = found.values
    pending = [v for v in _constants_of(mine) if v.name and id(v) not in values]
    if not pending:
        return
    taken = {id(v) for v in values.values()}
    buckets: dict[tuple, list[ir.Value]] = {}
    for ref in _constants_of(theirs):
        tensor = _constant_tensor(ref)
        if tensor is not None:
            key = (tensor.dtype, tuple(tensor.shape))
            buckets.setdefault(key, []).append(ref)
    digests: dict[int, bytes] = {}

    def digest(value: ir.Value, tensor) -> bytes:
        key = id(value)
        if key not in digests:
            digests[key] = hashlib.blake2b(tensor.tobytes(), digest_size=16).digest()
        return digests[key]

    for value in pending:
        tensor = _constant_tensor(value)
        if tensor is None:
            continue
        candidates = buckets.get((tensor.dtype, tuple(tensor.shape)))
        if not candidates:
            continue
        mine = digest(value, tensor)
        same = [r for r in candidates if digest(r, _constant_tensor(r)) == mine]
        if same:
            # Prefer a reference constant no other value took (duplicates were merged).
            values[id(value)] = next((r for r in same if id(r) not in taken), same[0])
            taken.add(id(values[id(value)]))
            found.by_name += 1


def _same_kind(value: ir.Value, ref: ir.Value) -> bool:
    """Element types agree (when both are known); constants must also agree in shape."""
    a, b = value.dtype, ref.dtype
    if a is not None and b is not None and a != b:
        return False
    if value.const_value is not None and ref.const_value is not None:
        return tuple(value.const_value.shape) == tuple(ref.const_value.shape)
    return True


def _topological(graph) -> list[ir.Node]:
    """The graph's nodes in a topological order (its own order when it already is one)."""
    nodes = list(graph)
    produced: set[int] = set()
    ordered = True
    local = {id(v) for node in nodes for v in node.outputs}
    for node in nodes:
        for value in node.inputs:
            if value is not None and id(value) in local and id(value) not in produced:
                ordered = False
                break
        if not ordered:
            break
        produced.update(id(v) for v in node.outputs)
    if ordered:
        return nodes
    return _kahn(nodes, local)


def _kahn(nodes: list[ir.Node], local: set[int]) -> list[ir.Node]:
    index = {id(node): i for i, node in enumerate(nodes)}
    waiting = [0] * len(nodes)
    users: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        for value in {id(v): v for v in node.inputs if v is not None}.values():
            producer = value.producer()
            if id(value) in local and producer is not None and id(producer) in index:
                waiting[i] += 1
                users.setdefault(index[id(producer)], []).append(i)
    ready = [i for i in range(len(nodes)) if waiting[i] == 0]
    ready.reverse()
    order: list[ir.Node] = []
    while ready:
        i = ready.pop()
        order.append(nodes[i])
        for j in reversed(users.get(i, ())):
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    if len(order) < len(nodes):  # a cycle: keep the rest in graph order
        seen = {id(n) for n in order}
        order.extend(n for n in nodes if id(n) not in seen)
    return order


def _classify(node: ir.Node, found: Correspondence) -> None:
    values = found.values
    outputs = [(i, v) for i, v in enumerate(node.outputs) if v.name]
    refs = [values.get(id(v)) for _, v in outputs]
    if outputs and all(r is not None for r in refs):
        _match_by_outputs(node, outputs, refs, VALUE, found)
        return
    if any(r is not None for r in refs):
        return  # some outputs survive under their names: a rewrite, not a renamed node
    candidate = _structural_candidate(node, found)
    if candidate is None:
        return
    _claim(node, candidate, STRUCTURAL, found)
    if found.confirming:
        found.confirmed.add(id(node))
    for value, ref in zip(node.outputs, candidate.outputs):
        values.setdefault(id(value), ref)
    for value, ref in zip(node.inputs, candidate.inputs):
        if value is not None and ref is not None and _is_constant(value):
            values.setdefault(id(value), ref)


def _match_by_outputs(node, outputs, refs, kind: str, found: Correspondence) -> bool:
    """``node`` is the reference node producing ``refs`` at the same positions, if any."""
    producer = refs[0].producer()
    if (
        producer is None
        or id(producer) in found.claimed
        or producer.op_type != node.op_type
        or producer.domain != node.domain
        or not all(
            i < len(producer.outputs) and producer.outputs[i] is r
            for (i, _), r in zip(outputs, refs)
        )
    ):
        return False
    _claim(node, producer, kind, found)
    if found.confirming and _inputs_consistent(node, producer, found.values):
        found.confirmed.add(id(node))
    return True


def _match_backward(order: list[ir.Node], found: Correspondence) -> None:
    """From matched nodes back to their inputs, consumers before producers.

    A matched node's unmatched dynamic input is the reference node's input at the same
    position (the same node computes from the same values); its producer is then a
    reference node if it has that node's operator. This crosses renamed chains that
    forward matching could not enter (they start after a rewritten node).
    """
    values = found.values
    for node in reversed(order):
        ref = found.nodes.get(id(node))
        if ref is None:
            outputs = [(i, v) for i, v in enumerate(node.outputs) if v.name]
            refs = [values.get(id(v)) for _, v in outputs]
            if not outputs or any(r is None for r in refs):
                continue
            if not _match_by_outputs(node, outputs, refs, STRUCTURAL, found):
                continue
            ref = found.nodes[id(node)]
        theirs = ref.inputs
        for position, value in enumerate(node.inputs):
            if value is None or id(value) in values or value.producer() is None:
                continue
            if position < len(theirs) and theirs[position] is not None:
                values[id(value)] = theirs[position]


def _inputs_consistent(node: ir.Node, ref: ir.Node, values: dict[int, ir.Value]) -> bool:
    """Some dynamic input of ``node`` is, in the reference, ``ref``'s input there (or it
    has none): the names are backed by structure. Constants and single inputs may be
    rewired by a legitimate rewrite (merged duplicates, a removed no-op Cast), so one
    agreeing input suffices."""
    theirs = ref.inputs
    dynamic = False
    for position, value in enumerate(node.inputs):
        if value is None or _is_constant(value):
            continue
        dynamic = True
        known = values.get(id(value))
        if known is not None and position < len(theirs) and theirs[position] is known:
            return True
    return not dynamic


def _claim(node: ir.Node, ref: ir.Node, kind: str, found: Correspondence) -> None:
    found.nodes[id(node)] = ref
    found.kinds[id(node)] = kind
    found.claimed.add(id(ref))


def _is_constant(value: ir.Value) -> bool:
    if value.const_value is not None:
        return True
    producer = value.producer()
    return producer is not None and producer.op_type == "Constant" and producer.domain == ""


def _signature(node: ir.Node, values: dict[int, ir.Value] | None) -> tuple | None:
    """Operator, arity and the dynamic inputs (reference objects) of a node.

    Constants are wildcards (a tool may merge or rename equal constants). For a rewritten
    node (``values`` given) None when a dynamic input is unmatched.
    """
    key: list = [node.domain, node.op_type]
    for value in node.inputs:
        if value is None:
            key.append(0)
        elif _is_constant(value):
            key.append(1)
        elif values is None:
            key.append(id(value))
        else:
            ref = values.get(id(value))
            if ref is None:
                return None
            key.append(id(ref))
    return tuple(key)


def _reference_signatures(found: Correspondence) -> dict[tuple, list[ir.Node]]:
    if found.signatures is None:
        found.signatures = {}
        for graph in found.scope:
            for node in graph:
                found.signatures.setdefault(_signature(node, None), []).append(node)
    return found.signatures


def _structural_candidate(node: ir.Node, found: Correspondence) -> ir.Node | None:
    """The reference node ``node`` is, found from its matched inputs (see module doc).

    With a matched dynamic input, an exact lookup by signature (constant time); with
    matched constants only, the uses of the least used one.
    """
    values = found.values
    dynamic = anchored = False
    for value in node.inputs:
        if value is None:
            continue
        if not _is_constant(value):
            if id(value) not in values:
                return None  # a dynamic input the reference does not know
            dynamic = True
        elif id(value) in values:
            anchored = True
    if dynamic:
        key = _signature(node, values)
        pool = _reference_signatures(found).get(key, ()) if key is not None else ()
    elif anchored:
        pool = _constant_users(node, found)
    else:
        return None
    candidates = [
        other
        for other in pool
        if id(other) not in found.claimed
        and len(other.outputs) >= len(node.outputs)
        and _inputs_agree(node, other, values)
    ]
    if len(candidates) > 1:
        candidates = [c for c in candidates if _attributes_equal(node, c)] or candidates
    if len(candidates) > 1:  # constants: the very value first, then equal contents
        candidates = [c for c in candidates if _constants_known(node, c, values)] or candidates
    if len(candidates) > 1:
        candidates = [c for c in candidates if _constants_equal(node, c, values)] or candidates
        if len(candidates) > 1:
            found.ambiguous += 1
    if not candidates or not _attributes_equal(node, candidates[0]):
        return None
    return candidates[0]


def _constant_users(node: ir.Node, found: Correspondence) -> list[ir.Node]:
    """Reference nodes of the same operator reading the least used matched constant."""
    best: tuple[int, int, ir.Value] | None = None
    for position, value in enumerate(node.inputs):
        ref = found.values.get(id(value)) if value is not None else None
        if ref is None:
            continue
        count = found.use_counts.get(id(ref))
        if count is None:
            count = found.use_counts[id(ref)] = len(ref.uses())
        if best is None or count < best[0]:
            best = (count, position, ref)
    if best is None:
        return []
    _, position, ref = best
    return [
        use.node
        for use in ref.uses()
        if use.idx == position
        and use.node.op_type == node.op_type
        and use.node.domain == node.domain
        and len(use.node.inputs) == len(node.inputs)
    ]


def _inputs_agree(node: ir.Node, other: ir.Node, values: dict[int, ir.Value]) -> bool:
    for value, ref in zip(node.inputs, other.inputs):
        if value is None or ref is None:
            if value is not ref:
                return False
            continue
        known = values.get(id(value))
        if known is not None and not _is_constant(value):
            if known is not ref:
                return False
        elif not (_is_constant(ref) and _same_constant_type(value, ref)):
            return False
    return True


def _same_constant_type(value: ir.Value, ref: ir.Value) -> bool:
    a, b = _constant_tensor(value), _constant_tensor(ref)
    if a is None or b is None:
        return value.dtype == ref.dtype
    return a.dtype == b.dtype and tuple(a.shape) == tuple(b.shape)


def _constant_tensor(value: ir.Value):
    if value.const_value is not None:
        return value.const_value
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant":
        attr = producer.attributes.get("value")
        if attr is not None and attr.type == ir.AttributeType.TENSOR:
            return attr.value
    return None


def _constants_known(node: ir.Node, other: ir.Node, values) -> bool:
    """Every matched constant input of ``node`` is the very input ``other`` reads."""
    for value, ref in zip(node.inputs, other.inputs):
        if value is not None and _is_constant(value):
            known = values.get(id(value))
            if known is not None and known is not ref:
                return False
    return True


def _constants_equal(node: ir.Node, other: ir.Node, values) -> bool:
    """The constant inputs hold the same bytes as the candidate's (small ones only)."""
    for value, ref in zip(node.inputs, other.inputs):
        if value is None or ref is None or not _is_constant(value) or values.get(id(value)) is ref:
            continue
        a, b = _constant_tensor(value), _constant_tensor(ref)
        if a is None or b is None or a.nbytes > _MAX_COMPARED_BYTES:
            continue
        if a.tobytes() != b.tobytes():
            return False
    return True


def _attributes_equal(node: ir.Node, other: ir.Node) -> bool:
    """Attributes both nodes set are equal (one side may spell out a default the other
    leaves implicit, as ONNX Runtime does); subgraph attributes are not compared."""
    theirs = other.attributes
    for name, attr in node.attributes.items():
        ref = theirs.get(name)
        if ref is None:
            continue
        if ref.type != attr.type:
            return False
        if attr.type in _GRAPH_ATTRS or attr.is_ref() or ref.is_ref():
            continue
        if attr.type == ir.AttributeType.TENSOR:
            a, b = attr.value, ref.value
            if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
                return False
            if a.nbytes <= _MAX_COMPARED_BYTES and a.tobytes() != b.tobytes():
                return False
        elif attr.value != ref.value:
            return False
    return True
