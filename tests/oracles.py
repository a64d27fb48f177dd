"""Independent oracles: what the tests expect, computed without graphtag's own code.

Every expectation here comes from PyTorch (``named_modules()``, forward hooks), from
what torch's exporters wrote (``pkg.torch.onnx.name_scopes``, scoped TorchScript node
names, node and value names of an unoptimized export) and from ONNX Runtime. Nothing in
this file imports graphtag: the rules are re-derived from the README's description of
tags, so a bug in graphtag's attribution, hierarchy, LCA or optimizer reconciliation
cannot make its own expectation agree with it.
"""

from __future__ import annotations

import ast
import dataclasses
from collections import Counter, deque
from collections.abc import Iterable

import numpy as np
import onnx
import torch
from torch import nn

MODULE_KEY = "pkg.graphtag.module"
NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"

# README ("How tags are made"): the torch.nn classes kept by default. Pinned here on
# purpose: tests/test_module_tree.py checks this list against the library and the README.
KEPT_TORCH_CLASSES = frozenset(
    {
        "LayerNorm",
        "Embedding",
        "BatchNorm1d",
        "BatchNorm2d",
        "BatchNorm3d",
        "GroupNorm",
        "InstanceNorm1d",
        "InstanceNorm2d",
        "InstanceNorm3d",
    }
)


# ---------------------------------------------------------------- tags from named_modules


def _kept(module: nn.Module, is_root: bool, keep: frozenset[str]) -> bool:
    cls = type(module)
    from_torch = cls.__module__.startswith(("torch.nn.", "torch.ao.nn."))
    return is_root or not from_torch or cls.__name__ in keep


def module_tags(model: nn.Module, keep: frozenset[str] = KEPT_TORCH_CLASSES) -> dict[str, str]:
    """Every dotted module name (aliases included) -> its tag, by the README's rules.

    A tag is '/' plus one segment per kept module from the root: the class name, with
    ``.<index>`` for a child of a container, and, when kept siblings would get the same
    segment, ``.<path relative to the kept parent>`` for all siblings of that class.
    Filtered modules map to their nearest kept ancestor; a module registered under
    several names maps every name to its first name's tag.
    """
    first: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        first.setdefault(id(module), name)
    modules = dict(model.named_modules())  # canonical names only, pre-order

    def kept_parent(name: str) -> str | None:
        parts = name.split(".") if name else []
        for size in range(len(parts) - 1, -1, -1):
            candidate = ".".join(parts[:size])
            if candidate in modules and _kept(modules[candidate], candidate == "", keep):
                return candidate
        return None

    siblings: dict[tuple[str, str], list[str]] = {}
    for name, module in modules.items():
        if name and _kept(module, False, keep):
            siblings.setdefault((kept_parent(name), type(module).__name__), []).append(name)
    segment: dict[str, str] = {}
    for (parent, cls_name), names in siblings.items():
        plain = {}
        for name in names:
            last = name.split(".")[-1]
            plain[name] = f"{cls_name}.{last}" if last.isdecimal() else cls_name
        if len(set(plain.values())) < len(names):
            cut = len(parent) + 1 if parent else 0
            plain = {name: f"{cls_name}.{name[cut:]}" for name in names}
        segment.update(plain)

    tags: dict[str, str] = {}
    for name, module in modules.items():  # pre-order: parents first
        if not name:
            tags[name] = "/" + type(module).__name__
        elif _kept(module, False, keep):
            tags[name] = tags[kept_parent(name)] + "/" + segment[name].replace("/", "%2F")
        else:
            tags[name] = tags[kept_parent(name)]
    # Aliases: every name named_modules(remove_duplicate=False) reports.
    for name, module in model.named_modules(remove_duplicate=False):
        canonical = first[id(module)]
        tags.setdefault(name, tags[canonical])
    return tags


# ---------------------------------------------------------------- tag arithmetic


def lca(tags: Iterable[str]) -> str | None:
    """Lowest common ancestor by common prefix of segments (the tests' own)."""
    common: list[str] | None = None
    for tag in tags:
        parts = tag.split("/")[1:]
        if common is None:
            common = parts
            continue
        size = 0
        while size < min(len(common), len(parts)) and common[size] == parts[size]:
            size += 1
        common = common[:size]
    return "/" + "/".join(common) if common else None


def related(a: str, b: str) -> bool:
    """One tag is an ancestor-or-self of the other."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


# ---------------------------------------------------------------- the exporters' scopes


def scope_tag(scopes_text: str, tags: dict[str, str]) -> str | None:
    """Dynamo: the tag of the innermost module in a name_scopes list (last item: FX node)."""
    for name in reversed(ast.literal_eval(scopes_text)[:-1]):
        base = name.split("@")[0] if "@" in name else name
        if base in tags:
            return tags[base]
    return None


def torchscript_tag(
    node_name: str, model: nn.Module, tags: dict[str, str], prefix: str = ""
) -> str:
    """TorchScript: the tag of the deepest module named by ``/<scope>/.../<Op>``.

    torch writes one segment per called module: its dotted name from the last
    non-numeric atom on (``encoder.layer.0`` -> ``layer.0``), ``_<n>`` appended when a
    scope path repeats; modules it shows under an unexpected parent are looked up
    anywhere. A wrapper's attribute ``prefix`` comes first and is dropped.
    """
    root = tags[""]
    if not node_name.startswith("/"):
        return root
    segments = node_name.split("/")[1:-1]
    if prefix:
        if segments[:1] != [prefix]:
            return root
        segments = segments[1:]
    names = [n for n, _ in model.named_modules(remove_duplicate=False) if n]

    def scope_of(name: str) -> str:
        atoms = name.split(".")
        last = (
            max(i for i, a in enumerate(atoms) if not a.isdecimal())
            if any(not a.isdecimal() for a in atoms)
            else 0
        )
        return ".".join(atoms[last:])

    current = ""
    for segment in segments:
        spellings = [segment]
        head, _, tail = segment.rpartition("_")
        if head and tail.isdecimal():
            spellings.append(head)
        found = None
        for below_only in (True, False):
            for spelling in spellings:
                matches = [
                    n
                    for n in names
                    if scope_of(n) == spelling
                    and (not below_only or not current or n.startswith(current + "."))
                ]
                if matches:
                    found = min(matches, key=lambda n: (n.count("."), n))
                    break
            if found:
                break
        if found is None:
            break
        current = found
    return tags[current]


def torchscript_tags(
    model: onnx.ModelProto, module: nn.Module, tags: dict[str, str], prefix: str = ""
) -> list[str]:
    """TorchScript, per main-graph node: the module of its scope (:func:`torchscript_tag`),
    except a copy of an initializer made outside any module call (an unscoped
    ``Identity`` reading an initializer or such a copy: TorchScript's merged parameters,
    ``Identity(n1.weight) -> n2.weight``): it takes the module of the nodes reading it,
    by README's tag-propagation rule over their tags (:func:`inferred_tag`)."""
    graph = model.graph
    expected = [torchscript_tag(n.name, module, tags, prefix) for n in graph.node]
    copies = {t.name for t in graph.initializer}  # grows with the copies, in graph order
    unscoped: set[int] = set()
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            readers.setdefault(name, []).append(i)
        if node.op_type == "Identity" and node.input[0] in copies:
            copies.add(node.output[0])
            if not node.name.startswith("/"):
                unscoped.add(i)
    for i in sorted(unscoped, reverse=True):  # readers come later in a sorted graph
        found = [expected[j] for j in readers.get(graph.node[i].output[0], [])]
        if found:
            expected[i] = inferred_tag([], found, tags[""])
    return expected


# ---------------------------------------------------------------- ONNX protobuf helpers


def props(entry) -> dict[str, str]:
    return {p.key: p.value for p in entry.metadata_props}


def expected_tags(
    reference: onnx.ModelProto,
    ref_tags: list[str | None],
    rewritten: onnx.ModelProto,
    *,
    ref_values: dict[str, np.ndarray] | None = None,
) -> dict[int, tuple[str | None, str]]:
    """Rewritten main-graph node index -> (expected tag, kind), from a reference graph.

    ``ref_tags[i]`` is the tag of reference node ``i`` (the caller's own expectation). A
    rewritten node that IS a reference node (same outputs and operator by name; or, with
    renamed values, same operator and inputs) has its tag (kind ``same``). The other
    nodes, grouped through values the reference lacks, stand for the reference nodes
    between the group's inputs and outputs: the lowest common ancestor of those nodes'
    tags (kind ``fused``). Groups that replaced nothing get no entry.

    With ``ref_values`` (every reference value of one run), a node that kept its outputs
    but reads, at some input, a reference value from further up than before has absorbed
    the removed nodes in between: those that computed something (output not equal to
    their input) count with it (kind ``absorbed``: the lowest common ancestor); removed
    copies (Identity, a reshape to the same shape) do not.
    """
    ref, new = reference.graph, rewritten.graph
    producer: dict[str, tuple[int, int]] = {}
    consumers: dict[str, list[int]] = {}
    by_signature: dict[tuple, list[int]] = {}
    for i, node in enumerate(ref.node):
        for k, name in enumerate(node.output):
            if name:
                producer[name] = (i, k)
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(i)
        by_signature.setdefault((node.op_type, tuple(node.input)), []).append(i)
    known = set(producer) | {v.name for v in ref.input} | {t.name for t in ref.initializer}
    present = {o for node in new.node for o in node.output if o}
    renamed: dict[str, str] = {}
    same: dict[int, int] = {}
    absorbed: dict[int, set[int]] = {}
    taken: set[int] = set()
    for j, node in enumerate(new.node):
        outputs = [(k, o) for k, o in enumerate(node.output) if o]
        if outputs and all(o in producer for _, o in outputs):
            i = producer[outputs[0][1]][0]
            if ref.node[i].op_type == node.op_type and all(
                producer[o] == (i, k) for k, o in outputs
            ):
                same[j] = i
                taken.add(i)
                if ref_values is not None:
                    absorbed[j] = _absorbed(node, ref.node[i], producer, present, ref, ref_values)
            continue
        if any(o in producer for _, o in outputs):
            continue
        inputs = tuple(renamed.get(x, x) for x in node.input)
        if not all(x == "" or x in known for x in inputs):
            continue
        candidates = [i for i in by_signature.get((node.op_type, inputs), []) if i not in taken]
        if candidates:
            same[j] = candidates[0]
            taken.add(candidates[0])
            for k, o in enumerate(node.output):
                if o and k < len(ref.node[candidates[0]].output):
                    renamed[o] = ref.node[candidates[0]].output[k]
    expected = {j: (ref_tags[i], "same") for j, i in same.items()}
    for j, extra in absorbed.items():
        if extra:
            tags = [t for i in (same[j], *extra) if (t := ref_tags[i])]
            expected[j] = (lca(tags), "absorbed")

    def ref_name(name: str) -> str | None:
        name = renamed.get(name, name)
        return name if name in known else None

    others = [j for j in range(len(new.node)) if j not in same]
    made_by = {o: j for j in others for o in new.node[j].output if o}
    parent = {j: j for j in others}

    def find(j: int) -> int:
        while parent[j] != j:
            j = parent[j]
        return j

    for j in others:
        for name in new.node[j].input:
            if name and ref_name(name) is None and name in made_by:
                parent[find(made_by[name])] = find(j)
    groups: dict[int, list[int]] = {}
    for j in others:
        groups.setdefault(find(j), []).append(j)
    for members in groups.values():
        inside = {o for j in members for o in new.node[j].output if o}
        stops = {
            ref_name(x)
            for j in members
            for x in new.node[j].input
            if x and x not in inside and ref_name(x) is not None
        }
        starts = {ref_name(o) for o in inside if ref_name(o) is not None}
        for j, i in same.items():  # a new value read by a kept node stands for the old one
            before = [*ref.node[i].input]
            for position, name in enumerate(new.node[j].input):
                old = before[position] if position < len(before) else ""
                if old and name in inside and ref_name(name) is None:
                    starts.add(old)
        for position, output in enumerate(new.output):  # likewise a graph output
            if output.name in inside and position < len(ref.output):
                starts.add(ref.output[position].name)
        back, queue = set(), deque(starts)
        while queue:
            name = queue.popleft()
            if name in stops or name not in producer:
                continue
            i = producer[name][0]
            if i not in back:
                back.add(i)
                queue.extend(x for x in ref.node[i].input if x)
        ahead, queue = set(), deque(i for s in stops for i in consumers.get(s, ()))
        while queue:
            i = queue.popleft()
            if i not in ahead:
                ahead.add(i)
                queue.extend(c for o in ref.node[i].output if o for c in consumers.get(o, ()))
        between = (back & ahead) or back
        if between:
            tag = lca(t for i in between if (t := ref_tags[i]))
            expected.update((j, (tag, "fused")) for j in members)
    return expected


def _absorbed(node, ref_node, producer, present, ref, values) -> set[int]:
    """Removed reference nodes on the path from what ``node`` reads now back to what it
    read before, except those whose output equals their first input (copies)."""
    found: set[int] = set()
    for now, before in zip(node.input, ref_node.input):
        if now == before or not now or not before:
            continue
        path, current = [], before
        while current in producer and current not in present and current != now:
            i = producer[current][0]
            path.append(i)
            current = ref.node[i].input[0] if ref.node[i].input else ""
        if current != now:
            continue  # another, equal value (shared by CSE): nothing absorbed
        for i in path:
            source, result = ref.node[i].input[0], ref.node[i].output[0]
            a, b = values.get(source), values.get(result)
            if a is None or b is None or a.shape != b.shape or not np.array_equal(a, b):
                found.add(i)
    return found


def inferred_tag(producers: list[str], consumers: list[str], root: str) -> str:
    """README's tag-propagation rule: the deepest module containing the tagged neighbours;
    when that is the root while a neighbour lies deeper, the producers' then the
    consumers' common module, else the most frequent neighbour tag."""
    both = producers + consumers
    if not both:
        return root  # no tagged neighbour: the root
    tag = lca(both)
    if tag is not None and not (tag == root and any(t != tag for t in both)):
        return tag
    for side in (producers, consumers):
        tag = lca(side)
        if tag is not None and not (tag == root and any(t != tag for t in side)):
            return tag
    counts = Counter(both)
    return max(counts.items(), key=lambda item: (item[1], -len(item[0]), item[0]))[0]


# ---------------------------------------------------------------- PyTorch's side


@dataclasses.dataclass
class Produced:
    """A tensor a module returned in the eager run (not one of its inputs handed back)."""

    module: str  # dotted name
    array: np.ndarray


def module_outputs(model: nn.Module, args: tuple, kwargs: dict) -> list[Produced]:
    """Every tensor every module (kept or not) returned, recorded by forward hooks."""
    found: list[Produced] = []
    names = {id(m): n for n, m in model.named_modules()}

    def leaves(value) -> list[torch.Tensor]:
        return [t for t in torch.utils._pytree.tree_leaves(value) if isinstance(t, torch.Tensor)]

    def hook(module, inputs, kw, output):
        given = {t.data_ptr() for t in leaves((inputs, kw))}
        given |= {p.data_ptr() for p in module.parameters()} | {
            b.data_ptr() for b in module.buffers()
        }
        for tensor in leaves(output):
            if tensor.data_ptr() in given or tensor.numel() == 0:
                continue  # handed back (a view of an input or a weight), not computed here
            found.append(Produced(names[id(module)], tensor.detach().numpy().copy()))

    handles = [
        m.register_forward_hook(hook, with_kwargs=True)
        for m in {id(m): m for m in model.modules()}.values()
    ]
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return found


def all_values(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every main-graph value of one ONNX Runtime run, graph inputs included (ONNX's own
    shape inference types the intermediate values exposed as extra outputs)."""
    import onnxruntime as ort

    inferred = onnx.shape_inference.infer_shapes(model)
    typed = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
    full = onnx.ModelProto()
    full.CopyFrom(model)
    exposed = {o.name for o in full.graph.output}
    for node in full.graph.node:
        for name in node.output:
            if name and name not in exposed and name in typed:
                full.graph.output.append(typed[name])
                exposed.add(name)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        full.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in session.get_outputs()]
    return {**feeds, **dict(zip(names, session.run(None, feeds), strict=True))}


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "biu" or b.dtype.kind in "biu":
        return a.dtype.kind == b.dtype.kind and np.array_equal(a, b)
    scale = max(1.0, float(np.max(np.abs(b))) if b.size else 1.0)
    return bool(np.allclose(a, b, rtol=1e-4, atol=1e-5 * scale, equal_nan=True))


def contamination(
    model: onnx.ModelProto,
    values: dict[str, np.ndarray],
    produced: list[Produced],
    tags: dict[str, str],
) -> list[tuple[str, str, list[str]]]:
    """Nodes whose output equals tensors only modules unrelated to its tag returned.

    For every node output that equals (shape and value) a tensor some module returned
    in the eager run, the node's tag must be related (ancestor-or-self, either way) to
    at least one module that returned an equal tensor: the node computed that module's
    output, so it runs inside it (or carries a coarser, fused tag above it). A node
    whose output equals one of its inputs only copied it and is not judged. Returns
    (node name, its tag, the modules that returned its value) for each violation.
    """
    by_shape: dict[tuple, list[Produced]] = {}
    for item in produced:
        by_shape.setdefault(item.array.shape, []).append(item)
    found = []
    for node in model.graph.node:
        tag = props(node).get(MODULE_KEY)
        if tag is None:
            continue
        inputs = [values[x] for x in node.input if x in values]
        for name in node.output:
            value = values.get(name)
            if value is None or value.size <= 1:
                continue  # a scalar equals too many things to say who made it
            if any(_close(value, x) for x in inputs):
                continue  # a copy (Identity, a cast to the same type): computed elsewhere
            makers = {
                tags[item.module]
                for item in by_shape.get(value.shape, ())
                if _close(value, item.array)
            }
            if makers and not any(related(tag, m) for m in makers):
                found.append((node.name, tag, sorted(makers)))
    return found


def matched_modules(values: dict[str, np.ndarray], produced: list[Produced]) -> set[str]:
    """Modules at least one of whose returned tensors some ONNX value equals."""
    by_shape: dict[tuple, list[np.ndarray]] = {}
    for value in values.values():
        if value.size > 1:
            by_shape.setdefault(value.shape, []).append(value)
    return {
        item.module
        for item in produced
        if any(_close(v, item.array) for v in by_shape.get(item.array.shape, ()))
    }
