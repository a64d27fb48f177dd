"""multi-consumer: value consumers, initializer origins and shared-parameter detection."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx_ir as ir
import pytest
from onnx_builders import feeds, tagged_mlp
from test_residual_resolution import (
    assert_metadata_only_change,
    layer_tag,
    torchscript_model,
    zoo_model,
)

from graphtag.analysis.parameters import parameter_usage, shared_parameters
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes
from graphtag.core.hierarchy import Hierarchy, ModuleInfo
from graphtag.core.metadata import ORIGIN
from graphtag.passes.multi_consumer import MultiConsumerPass

FLOAT = ir.TensorType(ir.DataType.FLOAT)


def consumers(value: ir.Value) -> list[str] | None:
    text = value.metadata_props.get(metadata.CONSUMERS)
    return None if text is None else json.loads(text)


def origin(value: ir.Value) -> list[str] | None:
    text = value.metadata_props.get(ORIGIN)
    return None if text is None else json.loads(text)


def _copy(model: ir.Model) -> ir.Model:
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


def _op(op: str, inputs, name: str, tag: str | None, scopes: str | None = None) -> ir.Node:
    node = ir.Node("", op, inputs, name=name, num_outputs=1)
    node.outputs[0].name = f"{name}_out"
    if tag:
        node.metadata_props[metadata.MODULE] = tag
    if scopes:
        node.metadata_props[metadata.TORCH_NAME_SCOPES] = scopes
    return node


def _init(graph: ir.Graph, name: str, folded_from: str | None = None) -> ir.Value:
    tensor = ir.tensor(np.arange(4, dtype=np.float32), name=name)
    value = ir.Value(name=name, shape=tensor.shape, type=FLOAT, const_value=tensor)
    if folded_from is not None:
        value.metadata_props[metadata.ONNXSCRIPT_FOLDED_FROM] = folded_from
    graph.register_initializer(value)
    return value


def _hierarchy(params: dict[str, list[str]]) -> Hierarchy:
    """A root /M with children /M/<name> owning ``params[name]``."""
    modules = {"/M": ModuleInfo(tag="/M", name="", class_name="M")}
    names = {"": "/M"}
    for child, own in params.items():
        tag = f"/M/{child}"
        modules[tag] = ModuleInfo(tag=tag, name=child, class_name=child, parent="/M")
        modules[tag].parameters = list(own)
        names[child] = tag
    return Hierarchy(modules, names)


# ---------------------------------------------------------------- hand-built graphs


def test_consumers_on_every_value_and_idempotent():
    model = tagged_mlp()
    before = _copy(model)
    node_metadata = {n.name: dict(n.metadata_props) for n in model.graph}
    result = MultiConsumerPass()(model)
    assert result.modified
    graph = model.graph
    assert consumers(graph.inputs[0]) == ["/MLP/Layer.fc1"]
    assert consumers(graph.initializers["fc2.weight"]) == ["/MLP/Layer.fc2"]
    by_name = {v.name: v for n in graph for v in n.outputs}
    assert consumers(by_name["t1"]) == ["/MLP"]
    assert consumers(by_name["y"]) == []  # a graph output adds no consumer
    assert result.stats["values"] == 1 + 3 + 4  # x, 3 initializers, 4 node outputs
    assert {n.name: dict(n.metadata_props) for n in graph} == node_metadata
    assert_metadata_only_change(before, model, feeds(model))
    assert not MultiConsumerPass()(model).modified
    # Value metadata survives serialization.
    assert consumers(_copy(model).graph.initializers["fc1.bias"]) == ["/MLP/Layer.fc1"]
    # Equal records are one string in memory (a 100k-node model has few distinct ones).
    fc1 = [
        graph.initializers[n].metadata_props[metadata.CONSUMERS] for n in ("fc1.weight", "fc1.bias")
    ]
    assert fc1[0] == '["/MLP/Layer.fc1"]' and fc1[0] is fc1[1]


def test_value_used_by_several_modules_lists_all_sorted():
    model = tagged_mlp()
    x = model.graph.inputs[0]
    extra = _op("Relu", [x], "extra", "/MLP/A")
    untagged = _op("Neg", [x], "untagged", None)
    model.graph.extend([extra, untagged])
    MultiConsumerPass()(model)
    assert consumers(x) == ["/MLP/A", "/MLP/Layer.fc1"]
    model = tagged_mlp()
    MultiConsumerPass(include_unconsumed=False)(model)
    assert metadata.CONSUMERS not in model.graph.outputs[0].metadata_props


def test_model_without_tags_gets_no_consumers(caplog):
    # Nothing to record without modules: no "[]" on every value (noise in value_info).
    model = tagged_mlp()
    MultiConsumerPass()(model)  # keys written while tagged ...
    for node in model.graph:
        del node.metadata_props[metadata.MODULE]
    with caplog.at_level(logging.INFO, logger="graphtag.passes.multi_consumer"):
        result = MultiConsumerPass()(model)
    assert result.modified  # ... and removed once stale
    assert result.diagnostics == ["no node carries a tag: no consumers recorded"]
    assert "no consumers recorded" in caplog.text
    values = [*model.graph.inputs, *model.graph.initializers.values()]
    values += [v for n in model.graph for v in n.outputs]
    assert not [v.name for v in values if metadata.CONSUMERS in v.metadata_props]
    assert not MultiConsumerPass()(model).modified


def test_subgraph_and_function_values():
    model = tagged_mlp()
    x = model.graph.inputs[0]
    cond = ir.node("Constant", [], attributes={"value": ir.tensor(True)}, name="cond")
    inner = _op("Identity", [x], "inner", "/MLP/Branch")
    then_graph = ir.Graph([], inner.outputs, nodes=[inner], name="then")
    other = _op("Neg", [x], "other", "/MLP/Other")
    else_graph = ir.Graph([], other.outputs, nodes=[other], name="else")
    branch = ir.node(
        "If",
        [cond.outputs[0]],
        attributes={"then_branch": then_graph, "else_branch": else_graph},
        name="branch",
    )
    branch.metadata_props[metadata.MODULE] = "/MLP"
    model.graph.extend([cond, branch])
    a = ir.Value(name="a", type=FLOAT)
    body_node = _op("Relu", [a], "body", "/F/Inner")
    body = ir.Graph([a], body_node.outputs, nodes=[body_node], name="body")
    function = ir.Function("pkg.test", "F", "", graph=body, attributes=[])
    model.functions[function.identifier()] = function
    MultiConsumerPass()(model)
    assert consumers(x) == ["/MLP/Branch", "/MLP/Layer.fc1", "/MLP/Other"]
    assert consumers(cond.outputs[0]) == ["/MLP"]
    assert consumers(inner.outputs[0]) == []
    assert consumers(a) == ["/F/Inner"]


def test_origin_from_names_folded_from_and_prefixes():
    x = ir.Value(name="x", shape=ir.Shape([4]), type=FLOAT)
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": 21}, name="g")
    plain = _init(graph, "a.weight")
    folded = _init(graph, "val_7", folded_from="['a.bias', 'val_3', 'b.weight']")
    prefixed = _init(graph, "model.b.bias")
    constant = _init(graph, "val_9", folded_from="['val_1', 'val_2']")
    nodes = []
    for i, (value, tag) in enumerate(
        [(plain, "/M/a"), (folded, "/M/a"), (prefixed, "/M/b"), (constant, "/M/b")]
    ):
        nodes.append(_op("Add", [x, value], f"n{i}", tag))
    graph.extend(nodes)
    model = ir.Model(graph, ir_version=10)
    _hierarchy({"a": ["a.weight", "a.bias"], "b": ["b.weight", "b.bias"]}).attach(model)
    result = MultiConsumerPass()(model)
    assert result.modified
    assert origin(plain) == ["a.weight"]
    assert origin(folded) == ["a.bias", "b.weight"]
    assert origin(prefixed) is None  # exact names only: validation sees the wrapper prefix
    assert origin(constant) is None
    assert result.stats["origins"] == 2
    usage = parameter_usage(model)
    assert sorted(usage) == ["a.bias", "a.weight", "b.bias", "b.weight"]
    assert usage["b.bias"].initializers == ["model.b.bias"]  # matched by dotted suffix
    # b.weight was folded into a tensor that module a consumes: a is a foreign consumer.
    assert usage["b.weight"].owners == ["/M/b"]
    assert usage["b.weight"].foreign_consumers == ["/M/a"]
    assert usage["a.bias"].initializers == ["val_7"]
    assert not MultiConsumerPass()(model).modified
    assert not MultiConsumerPass(origin=False)(model).modified


def test_shared_and_reused_parameters():
    x = ir.Value(name="x", shape=ir.Shape([4]), type=FLOAT)
    graph = ir.Graph([x], [], nodes=[], opset_imports={"": 21}, name="g")
    tied, twice, once = _init(graph, "tied"), _init(graph, "twice"), _init(graph, "once")
    graph.extend(
        [
            _op("Gather", [tied, x], "embed", "/M/Embedding"),
            _op("MatMul", [x, tied], "head", "/M"),
            # Two calls of one module: same tag, different torch ops (FX nodes).
            _op("Mul", [x, twice], "call1", "/M/Block", "['', 'block', 'mul']"),
            _op("Mul", [x, twice], "call2", "/M/Block", "['', 'block', 'mul_1']"),
            # Two ONNX nodes lowered from one torch op count once.
            _op("Shape", [once], "shape", "/M/Conv", "['', 'conv', 'conv2d']"),
            _op("Conv", [x, once], "conv", "/M/Conv", "['', 'conv', 'conv2d']"),
        ]
    )
    model = ir.Model(graph, ir_version=10)  # no hierarchy: initializers name themselves
    usage = parameter_usage(model)
    assert usage["tied"].shared and not usage["tied"].reused
    assert usage["twice"].reused and usage["twice"].uses == {"/M/Block": 2}
    assert usage["once"].uses == {"/M/Conv": 1}
    assert shared_parameters(model) == {"tied": ["/M", "/M/Embedding"], "twice": ["/M/Block"]}
    result = MultiConsumerPass()(model)
    assert result.stats["shared_parameters"] == 1 and result.stats["reused_parameters"] == 1
    assert set(parameter_usage(model)) == {"tied", "twice", "once"}
    assert origin(tied) is None  # origins need the hierarchy


# ---------------------------------------------------------------- zoo exports


@pytest.mark.parametrize("optimize", [True, False], ids=["opt", "noopt"])
@pytest.mark.parametrize("name", ["bert", "gpt2-lmhead", "siblings"])
def test_zoo_metadata_only_and_idempotent(name, optimize):
    model, inputs = zoo_model(name, optimize)
    before = _copy(model)
    tags = {n.name: dict(n.metadata_props) for n in iter_all_nodes(model)}
    assert MultiConsumerPass()(model).modified
    assert not MultiConsumerPass()(model).modified
    assert {n.name: dict(n.metadata_props) for n in iter_all_nodes(model)} == tags
    assert_metadata_only_change(before, model, inputs)
    for node in model.graph:
        for value in node.outputs:
            assert consumers(value) == sorted(
                {metadata.node_tag(u.node) for u in value.uses()} - {None}
            )


@pytest.mark.parametrize("optimize", [True, False], ids=["opt", "noopt"])
def test_gpt2_lm_head_ties_the_token_embedding(optimize):
    model, _ = zoo_model("gpt2-lmhead", optimize)
    MultiConsumerPass()(model)
    hierarchy = Hierarchy.from_model(model)
    embedding = hierarchy.tag_of("transformer.wte")
    head = hierarchy.tag_of("lm_head")
    tied = [v for v in model.graph.initializers.values() if len(consumers(v)) > 1]
    tied = [v for v in tied if embedding in consumers(v) and head in consumers(v)]
    assert len(tied) == 1, [v.name for v in tied]
    shared = shared_parameters(model)
    (name,) = origin(tied[0])
    assert shared[name] == sorted([embedding, head])
    assert embedding in parameter_usage(model)[name].foreign_consumers


@pytest.mark.parametrize("optimize", [True, False], ids=["opt", "noopt"])
def test_siblings_module_called_twice(optimize):
    model, _ = zoo_model("siblings", optimize)
    MultiConsumerPass()(model)
    usage = parameter_usage(model)
    hierarchy = Hierarchy.from_model(model)
    shared_module = hierarchy.modules[hierarchy.tag_of("shared")]
    expected = set(shared_module.parameters + shared_module.inherited_parameters)
    for child in hierarchy:
        if child.parent == shared_module.tag:
            expected.update(child.parameters + child.inherited_parameters)
    found = shared_parameters(model)
    assert set(found) == expected
    for name in expected:
        assert usage[name].reused and not usage[name].shared
        assert set(usage[name].uses.values()) == {2}


def test_bert_origins_cover_folded_weights():
    model, _ = zoo_model("bert", True)
    MultiConsumerPass()(model)
    hierarchy = Hierarchy.from_model(model)
    parameters = {p for info in hierarchy for p in info.parameters + info.inherited_parameters}
    covered = {p for v in model.graph.initializers.values() for p in origin(v) or ()}
    assert parameters <= covered
    folded = [
        v
        for v in model.graph.initializers.values()
        if metadata.ONNXSCRIPT_FOLDED_FROM in v.metadata_props and origin(v)
    ]
    assert folded and all(v.name not in origin(v) for v in folded)
    # The CSE-shared constants hold no parameter but are consumed by both layers.
    layers = [layer_tag(hierarchy, 0), layer_tag(hierarchy, 1)]
    cross = [
        v
        for v in model.graph.initializers.values()
        if all(any(c.startswith(layer + "/") for c in consumers(v)) for layer in layers)
    ]
    assert cross and all(origin(v) is None for v in cross)


def test_t5_shared_embedding_torchscript():
    model = torchscript_model("t5")
    MultiConsumerPass()(model)
    hierarchy = Hierarchy.from_model(model)
    shared = shared_parameters(model)
    tags = shared["shared.weight"]
    assert len(tags) == 2
    assert {hierarchy.modules[t].class_name for t in tags} == {"torch.nn.modules.sparse.Embedding"}
    assert [t.split("/")[2] for t in tags] == ["T5Stack.decoder", "T5Stack.encoder"]
