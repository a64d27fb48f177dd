"""Small tagged models for the reliability tests (output guard, fuzzing, own outputs).

``control_flow_model()`` has what the plain MLP lacks: an If, a Loop whose body reads
an outer value, a local function, a value read by several modules, and the records an
export writes (hierarchy, ``pkg.graphtag.consumers``, origins).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphtag.core import metadata
from graphtag.core.hierarchy import Hierarchy, ModuleInfo
from graphtag.passes.multi_consumer import MultiConsumerPass

FLOAT = ir.DataType.FLOAT
ROOT = "/Net"


def _typed(name: str, shape, dtype=FLOAT) -> ir.Value:
    return ir.Value(name=name, shape=ir.Shape(shape), type=ir.TensorType(dtype))


def _node(op, inputs, tag, name, outputs, domain="", attributes=None):
    node = ir.Node(domain, op, inputs, attributes or [], name=name, num_outputs=len(outputs))
    for value, out in zip(node.outputs, outputs):
        if isinstance(out, ir.Value):  # a pre-built typed value: copy its name and type
            value.name, value.type, value.shape = out.name, out.type, out.shape
        else:
            value.name = out
    if tag is not None:
        metadata.set_tag(node, tag)
    return node


def _init(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    tensor = ir.tensor(array, name=name)
    value = ir.Value(name=name, shape=tensor.shape, type=ir.TensorType(tensor.dtype))
    value.const_value = tensor
    graph.register_initializer(value)
    return value


def control_flow_model(seed: int = 0) -> ir.Model:
    """x -> Pre (MatMul) -> Gate (If: Relu | Neg) -> Loop (3x: v + b) -> Post (function).

    Modules: /Net, /Net/Pre, /Net/Gate (its branches tagged /Net/Gate/Then and
    /Net/Gate/Else), /Net/Repeat (body nodes /Net/Repeat/Step), /Net/Post (a call to the
    local function ``test.fn::Scale``, whose body nodes are tagged too). ``h`` (Pre's
    output) is read by Gate, by the Loop's body and by Post.
    """
    rng = np.random.default_rng(seed)
    x = _typed("x", [2, 4])
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": 21, "test.fn": 1}, name="net")
    w = _init(graph, "pre.weight", rng.standard_normal((4, 4)).astype(np.float32))
    b = _init(graph, "repeat.bias", rng.standard_normal((4,)).astype(np.float32))
    trips = _init(graph, "trips", np.array(3, dtype=np.int64))
    keep = _init(graph, "keep_going", np.array(True))

    pre = _node("MatMul", [x, w], "/Net/Pre", "pre_matmul", [_typed("h", [2, 4])])
    h = pre.outputs[0]
    total = _node("ReduceSum", [h], "/Net/Gate", "gate_sum", ["h_sum"], attributes=[
        ir.AttrInt64("keepdims", 0)
    ])  # fmt: skip
    zero = _node("Constant", [], "/Net/Gate", "gate_zero", ["zero"], attributes=[
        ir.AttrTensor("value", ir.tensor(np.array(0.0, dtype=np.float32)))
    ])  # fmt: skip
    cond = _node("Greater", [total.outputs[0], zero.outputs[0]], "/Net/Gate", "gate_cmp", ["cond"])
    then_relu = _node("Relu", [h], "/Net/Gate/Then", "then_relu", [_typed("then_out", [2, 4])])
    else_neg = _node("Neg", [h], "/Net/Gate/Else", "else_neg", [_typed("else_out", [2, 4])])
    then_graph = ir.Graph([], [then_relu.outputs[0]], nodes=[then_relu], name="then")
    else_graph = ir.Graph([], [else_neg.outputs[0]], nodes=[else_neg], name="else")
    gate = _node(
        "If", [cond.outputs[0]], "/Net/Gate", "gate_if", [_typed("gated", [2, 4])],
        attributes=[ir.AttrGraph("then_branch", then_graph),
                    ir.AttrGraph("else_branch", else_graph)],
    )  # fmt: skip

    # Loop body: (iteration, cond, v) -> (cond, v + bias + h): reads two outer values.
    iteration = _typed("i", [], ir.DataType.INT64)
    cond_in = _typed("cond_in", [], ir.DataType.BOOL)
    v_in = _typed("v_in", [2, 4])
    step = _node("Add", [v_in, b], "/Net/Repeat/Step", "step_add", ["v_biased"])
    mix = _node("Add", [step.outputs[0], h], "/Net/Repeat/Step", "step_mix",
                [_typed("v_out", [2, 4])])  # fmt: skip
    carry = _node("Identity", [cond_in], "/Net/Repeat", "step_cond",
                  [_typed("cond_out", [], ir.DataType.BOOL)])  # fmt: skip
    body = ir.Graph(
        [iteration, cond_in, v_in],
        [carry.outputs[0], mix.outputs[0]],
        nodes=[step, mix, carry],
        name="body",
    )
    repeat = _node(
        "Loop", [trips, keep, gate.outputs[0]], "/Net/Repeat", "repeat_loop",
        [_typed("repeated", [2, 4])], attributes=[ir.AttrGraph("body", body)],
    )  # fmt: skip

    # A local function: Scale(a, b) = a * b + a, called by Post.
    fa, fb = ir.Value(name="a"), ir.Value(name="b")
    mul = _node("Mul", [fa, fb], "/Net/Post/Scale", "scale_mul", ["ab"])
    add = _node("Add", [mul.outputs[0], fa], "/Net/Post/Scale", "scale_add", ["out"])
    fgraph = ir.Graph([fa, fb], [add.outputs[0]], nodes=[mul, add], opset_imports={"": 21})
    function = ir.Function("test.fn", "Scale", graph=fgraph, attributes=[])
    post = _node("Scale", [repeat.outputs[0], h], "/Net/Post", "post_call",
                 [_typed("y", [2, 4])], domain="test.fn")  # fmt: skip

    for node in (pre, total, zero, cond, gate, repeat, post):
        graph.append(node)
    graph.outputs.append(post.outputs[0])
    model = ir.Model(graph, ir_version=10, producer_name="graphtag-tests", functions=[function])
    infos = [
        ModuleInfo(ROOT, "", "tests.Net", children={"pre": "Pre", "gate": "Gate"}),
        ModuleInfo("/Net/Pre", "pre", "tests.Pre", ROOT, parameters=["pre.weight"]),
        ModuleInfo("/Net/Gate", "gate", "tests.Gate", ROOT),
        ModuleInfo("/Net/Gate/Then", "gate.then", "tests.Branch", "/Net/Gate"),
        ModuleInfo("/Net/Gate/Else", "gate.else", "tests.Branch", "/Net/Gate"),
        ModuleInfo("/Net/Repeat", "repeat", "tests.Repeat", ROOT, parameters=["repeat.bias"]),
        ModuleInfo("/Net/Repeat/Step", "repeat.step", "tests.Step", "/Net/Repeat"),
        ModuleInfo("/Net/Post", "post", "tests.Post", ROOT),
        ModuleInfo("/Net/Post/Scale", "post.scale", "tests.Scale", "/Net/Post"),
    ]
    for info in infos:
        info.executed = True
    Hierarchy({i.tag: i for i in infos}, {i.name: i.tag for i in infos}).attach(model)
    MultiConsumerPass()(model)
    return model


def control_flow_feeds(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((2, 4)).astype(np.float32)}
