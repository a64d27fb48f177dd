"""Small ONNX models built by hand for the core tests (no torch)."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from graphtag.core import metadata


def tagged_mlp(seed: int = 0, hidden: int = 8) -> ir.Model:
    """x -> MatMul -> Add -> Relu -> MatMul -> y, two modules, each node tagged."""
    rng = np.random.default_rng(seed)
    x = ir.Value(name="x", shape=ir.Shape([2, 4]), type=ir.TensorType(ir.DataType.FLOAT))
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": 21}, name="mlp")

    def init(name: str, shape: tuple[int, ...]) -> ir.Value:
        tensor = ir.tensor(rng.standard_normal(shape).astype(np.float32), name=name)
        value = ir.Value(
            name=name, shape=tensor.shape, type=ir.TensorType(tensor.dtype), const_value=tensor
        )
        graph.register_initializer(value)
        return value

    w1, b1, w2 = (
        init("fc1.weight", (4, hidden)),
        init("fc1.bias", (hidden,)),
        init("fc2.weight", (hidden, 3)),
    )
    steps = [
        ("MatMul", [x, w1], "/MLP/Layer.fc1"),
        ("Add", [None, b1], "/MLP/Layer.fc1"),
        ("Relu", [None], "/MLP"),
        ("MatMul", [None, w2], "/MLP/Layer.fc2"),
    ]
    previous = None
    for index, (op, inputs, tag) in enumerate(steps):
        inputs = [previous if v is None else v for v in inputs]
        node = ir.Node("", op, inputs, name=f"n{index}_{op}", num_outputs=1)
        node.outputs[0].name = f"t{index}"
        node.metadata_props[metadata.MODULE] = tag
        graph.append(node)
        previous = node.outputs[0]
    previous.name = "y"
    previous.shape = ir.Shape([2, 3])
    previous.type = ir.TensorType(ir.DataType.FLOAT)
    graph.outputs.append(previous)
    return ir.Model(graph, ir_version=10, producer_name="graphtag-tests")


def local_function(
    name: str, inputs: list[ir.Value], nodes: list[ir.Node], opsets: dict[str, int] | None = None
) -> ir.Function:
    """Model-local function ``pkg.test::<name>`` of ``nodes``, returning the last one's
    outputs (opset 21 unless ``opsets`` says otherwise)."""
    graph = ir.Graph(inputs, nodes[-1].outputs, nodes=nodes, opset_imports=opsets or {"": 21})
    return ir.Function("pkg.test", name, "", graph=graph, attributes=[])


def feeds(model: ir.Model, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        v.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in v.shape]).astype(
            np.float32
        )
        for v in model.graph.inputs
    }


def run_ort(path_or_model, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    if isinstance(path_or_model, ir.Model):
        data = ir.serde.serialize_model(path_or_model).SerializeToString()
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    else:
        session = ort.InferenceSession(str(path_or_model), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)
