"""Check every extracted module of a tagged export against PyTorch, module by module.

``verify_modules(module, inputs)`` exports ``module`` with graphtag (``auto`` route; by
default ``optimize=False``, so tags are exact), then:

1. PyTorch: one eager run (with the implementation switches the export route set, e.g.
   eager attention) with a forward hook on every kept module (hierarchy ``name``
   -> module) records each call's outputs (tensors found in nested tuples, lists,
   mappings such as ModelOutput, and dataclasses), copied at once so later in-place ops
   cannot change them. Outputs that are one of the call's own inputs passed through, or
   one of the module's own parameters/buffers, are left out (same tensor object, or same
   storage, shape and strides): no node of the module produces them.
2. ONNX: one onnxruntime run of the full model with every intermediate value exposed as
   an output (on a serialized copy) gives every value of the graph.
3. Every module is extracted (graphtag.surgery.extraction), run alone in onnxruntime on the
   boundary values of step 2, and each captured tensor must be reproduced by one of its
   outputs: same shape, max abs difference <= ``tolerance`` (1e-4).

Modules called more than once: every call is captured and checked. ONNX gives all calls
one tag, so the extracted model holds them all and, when one call feeds the next, the
earlier call's result is internal to it. The last call's tensors must match an output
of the extracted model; an earlier call's may match any value the extracted model
computes (all its values are exposed too).

Statuses: OK; MISMATCH (some captured tensor has no match); NOT-EXECUTED (no call in
the eager run); NO-NODES (executed, but no node carries its tag or a descendant's, e.g.
folded away by the optimizer); ERROR (extraction or onnxruntime failed; ``reason``).
A module with nothing to compare (all outputs passed through) is OK with 0/0.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import onnx_ir as ir
import torch

from graphtag.core import metadata
from graphtag.core.errors import GraphtagError
from graphtag.exporter.example_inputs import ExampleInputs

TOLERANCE = 1e-4
STATUSES = ("OK", "MISMATCH", "NOT-EXECUTED", "NO-NODES", "ERROR")


@dataclasses.dataclass
class ModuleCheck:
    """The verdict for one kept module."""

    tag: str
    name: str  # dotted module name in PyTorch
    class_name: str
    status: str  # one of STATUSES
    matched: int = 0  # captured tensors reproduced by the extracted module
    total: int = 0  # captured tensors compared (over all calls)
    max_abs_diff: float | None = None  # worst best-candidate difference; None: no candidate
    calls: int = 0
    # ERROR: the failure; MISMATCH: the first unmatched tensors; NO-NODES: where its
    # computation went ("fused into <tag>", "folded into constant <name>"), when known.
    reason: str = ""
    unmatched: list[str] = dataclasses.field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status in ("MISMATCH", "ERROR")

    def status_text(self) -> str:
        shown = self.status in ("ERROR", "NO-NODES") and self.reason
        return f"{self.status}: {self.reason}" if shown else self.status


@dataclasses.dataclass
class _Captured:
    label: str  # where the tensor sits in the output, e.g. "[0]" or ".last_hidden_state"
    array: np.ndarray


def verify_modules(
    module: torch.nn.Module,
    inputs: ExampleInputs | tuple | Mapping,
    *,
    optimize: bool = False,
    tolerance: float = TOLERANCE,
    filter_config: Any = None,
    progress: Callable[[str], None] | None = None,
    transform: Callable[[ir.Model], None] | None = None,
    exporter: Any = "auto",
    **export_options: Any,
) -> list[ModuleCheck]:
    """Export ``module``, extract every kept module and compare it with PyTorch.

    ``inputs``: ExampleInputs, a tuple of positional arguments or a mapping of keyword
    arguments. ``exporter`` and ``export_options`` go to graphtag.export (e.g.
    ``opset_version``); PyTorch then runs with the implementation switches the export
    used (graphtag.exporter.switches), so both sides compute the same thing.
    ``transform`` edits the exported model in place before any ONNX run (for tests:
    tampering with an initializer must turn its modules into MISMATCH). Returns one
    check per kept module, in hierarchy order.
    """
    from graphtag.exporter.switches import implementation_switches
    from graphtag.exporter.tagged_export import export

    inputs = _as_example_inputs(inputs)
    say = progress or (lambda _text: None)
    say(f"exporting ({exporter}, optimize={optimize})")
    export_options.setdefault("verbose", False)
    result = export(
        module,
        inputs.args,
        inputs.kwargs,
        exporter=exporter,
        optimize=optimize,
        filter_config=filter_config,
        **export_options,
    )
    say(f"exported by the {result.route} route")
    model, hierarchy = result.model, result.hierarchy
    if transform is not None:
        transform(model)
    say(f"running PyTorch with hooks on {len(hierarchy)} modules")
    with implementation_switches(module, result.switches):
        captured = capture_calls(module, inputs, {info.tag: info.name for info in hierarchy})
    say("running the full model in onnxruntime")
    feeds = graph_feeds(model, module, inputs)
    values = {**run_all_values(model, feeds), **feeds}
    return compare_modules(model, hierarchy, captured, values, tolerance=tolerance, say=say)


def compare_modules(model, hierarchy, captured, values, *, tolerance, say) -> list[ModuleCheck]:
    from graphtag.analysis.boundaries import compute_boundaries
    from graphtag.surgery.extraction import Extractor

    boundaries = compute_boundaries(model)
    extractor = Extractor(model, boundaries)
    absorbed = _fused_into(model)
    checks = []
    for index, info in enumerate(hierarchy, 1):
        say(f"[{index}/{len(hierarchy)}] {info.tag}")
        calls = captured.get(info.tag, [])
        check = ModuleCheck(info.tag, info.name, info.class_name, "OK", calls=len(calls))
        checks.append(check)
        if not calls:
            check.status = "NOT-EXECUTED"
            continue
        check.total = sum(len(call) for call in calls)
        boundary = boundaries.get(info.tag)
        if boundary is None or not boundary.nodes:
            check.status = "NO-NODES"
            check.reason = absorbed.get(info.tag) or _folded_into(model, info)
            continue
        try:
            sub = extractor.extract(info.tag)
            outputs = [v.name for v in sub.graph.outputs]
            feeds = {v.name: values[v.name] for v in sub.graph.inputs if v.name in values}
            missing = [v.name for v in sub.graph.inputs if v.name not in values]
            if missing:
                raise GraphtagError(f"no value computed for input(s) {', '.join(missing[:3])}")
            computed = run_all_values(sub, feeds)
        except Exception as exc:
            check.status = "ERROR"
            check.reason = _first_line(exc)
            continue
        final = {name: computed[name] for name in outputs}
        _match_calls(check, calls, final, computed, tolerance)
    return checks


def _fused_into(model: ir.Model) -> dict[str, str]:
    """Module tag -> "fused into <tag>" for modules named in another node's contexts."""
    found: dict[str, str] = {}
    for node in model.graph:
        text = node.metadata_props.get(metadata.CONTEXTS)
        tag = metadata.node_tag(node)
        if not text or not tag:
            continue
        try:
            contexts = json.loads(text)
        except ValueError:
            continue
        for context in contexts if isinstance(contexts, list) else []:
            module = context.get("module") if isinstance(context, dict) else None
            if module and module != tag:
                found.setdefault(module, f"fused into {tag}")
    return found


def _folded_into(model: ir.Model, info) -> str:
    """ "folded into constant <name>" when an initializer holds the module's parameters."""
    own = {*info.parameters, *info.buffers, *info.inherited_parameters, *info.inherited_buffers}
    for value in model.graph.initializers.values():
        origin = value.metadata_props.get(metadata.ORIGIN)
        if own and origin and value.name not in own and own & set(json.loads(origin)):
            return f"folded into constant {value.name}"
    return ""


def _match_calls(check, calls, final, computed, tolerance) -> None:
    worst: float | None = None
    for number, call in enumerate(calls, 1):
        candidates = final if number == len(calls) else computed
        for item in call:
            diff = _best_diff(item.array, candidates.values())
            if diff is not None:
                worst = diff if worst is None else max(worst, diff)
            if diff is not None and diff <= tolerance:
                check.matched += 1
            else:
                where = f"call {number} " if len(calls) > 1 else ""
                check.unmatched.append(f"{where}output{item.label} {tuple(item.array.shape)}")
    check.max_abs_diff = worst
    if check.unmatched:
        check.status = "MISMATCH"
        check.reason = "no match for " + ", ".join(check.unmatched[:3])


def _best_diff(expected: np.ndarray, candidates) -> float | None:
    """Smallest max-abs difference to a same-shaped candidate (None when there is none)."""
    best: float | None = None
    for value in candidates:
        if not isinstance(value, np.ndarray) or value.shape != expected.shape:
            continue
        diff = _max_abs_diff(expected, value)
        if best is None or diff < best:
            best = diff
            if best == 0.0:
                break
    return best


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.size == 0:
        return 0.0
    try:
        x, y = a.astype(np.float64), b.astype(np.float64)
    except (TypeError, ValueError):
        return 0.0 if np.array_equal(a, b) else float("inf")
    both_nan = np.isnan(x) & np.isnan(y)
    diff = np.where(both_nan, 0.0, np.abs(x - y))
    return float(np.nan_to_num(diff, nan=np.inf).max())


# ---------------------------------------------------------------------------- PyTorch side


def capture_calls(
    module: torch.nn.Module, inputs: ExampleInputs, names: Mapping[str, str]
) -> dict[str, list[list[_Captured]]]:
    """Tag -> one list per call of the tensors the module returned (one eager run)."""
    by_object: dict[int, list[list[_Captured]]] = {}
    handles = []
    tags_of: dict[int, list[str]] = {}
    for tag, name in names.items():
        try:
            sub = module.get_submodule(name) if name else module
        except AttributeError:
            continue
        tags_of.setdefault(id(sub), []).append(tag)
        if id(sub) in by_object:
            continue  # the same object under two kept names: one hook, shared calls
        calls = by_object[id(sub)] = []
        handles.append(sub.register_forward_hook(_recorder(sub, calls), with_kwargs=True))
    try:
        with torch.no_grad():
            module(*inputs.args, **inputs.kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return {tag: by_object[key] for key, tags in tags_of.items() for tag in tags}


def _recorder(sub: torch.nn.Module, calls: list) -> Callable:
    own = {id(t) for t in (*sub.parameters(), *sub.buffers())}
    own_keys = {_storage_key(t) for t in (*sub.parameters(), *sub.buffers())}

    def hook(_module, args, kwargs, output) -> None:
        given = [t for _, t in _tensors((args, kwargs), "")]
        ids = {id(t) for t in given} | own
        keys = {_storage_key(t) for t in given} | own_keys
        seen: set[int] = set()
        call = []
        for label, tensor in _tensors(output, ""):
            if id(tensor) in ids or id(tensor) in seen or _storage_key(tensor) in keys:
                continue
            seen.add(id(tensor))
            call.append(_Captured(label, _to_numpy(tensor)))
        calls.append(call)

    return hook


def _storage_key(t: torch.Tensor) -> tuple:
    return (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype, t.device.type)


def _tensors(obj: Any, label: str, depth: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """(label, tensor) for every tensor in nested containers, in order."""
    if depth > 20:
        return
    if isinstance(obj, torch.Tensor):
        yield label, obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _tensors(value, f"{label}.{key}", depth + 1)
    elif isinstance(obj, (list, tuple)):
        for index, value in enumerate(obj):
            yield from _tensors(value, f"{label}[{index}]", depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for field in dataclasses.fields(obj):
            yield from _tensors(getattr(obj, field.name, None), f"{label}.{field.name}", depth + 1)


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.clone().numpy()


def _as_example_inputs(inputs: Any) -> ExampleInputs:
    if isinstance(inputs, ExampleInputs):
        return inputs
    if isinstance(inputs, Mapping):
        return ExampleInputs(kwargs=dict(inputs))
    if isinstance(inputs, tuple):
        return ExampleInputs(args=inputs)
    return ExampleInputs(args=(inputs,))


def graph_feeds(
    model: ir.Model, module: torch.nn.Module, inputs: ExampleInputs
) -> dict[str, np.ndarray]:
    """The model's graph inputs from the example inputs: by argument name, else in order."""
    names = [v.name for v in model.graph.inputs]
    named: dict[str, Any] = dict(inputs.kwargs)
    try:
        bound = inspect.signature(module.forward).bind_partial(*inputs.args, **inputs.kwargs)
        named.update(bound.arguments)
    except (TypeError, ValueError):
        pass
    if all(isinstance(named.get(name), torch.Tensor) for name in names):
        return {name: _to_numpy(named[name]) for name in names}
    flat = [t for _, t in _tensors((inputs.args, inputs.kwargs), "")]
    if len(flat) == len(names):
        return {name: _to_numpy(t) for name, t in zip(names, flat)}
    raise GraphtagError(
        f"cannot match the example inputs ({len(flat)} tensors) to the model's "
        f"{len(names)} graph inputs ({', '.join(names[:5])})"
    )


# ---------------------------------------------------------------------------- ONNX side


def run_all_values(model: ir.Model, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``model`` in onnxruntime; every value its main-graph nodes compute, by name.

    A serialized copy with every node output listed as a graph output is run, without
    onnxruntime's graph optimizations (the values are those of the graph as written).
    """
    import onnxruntime as ort

    proto = ir.serde.serialize_model(model)
    listed = {o.name for o in proto.graph.output} | {i.name for i in proto.graph.input}
    for node in model.graph:
        for value in node.outputs:
            if value.name and value.name not in listed:
                listed.add(value.name)
                proto.graph.output.append(ir.serde.serialize_value(value))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    wanted = {i.name for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip(names, results))


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
