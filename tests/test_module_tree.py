"""Module tree -> hierarchy (fast) and node attribution against real exports."""

from __future__ import annotations

import ast
import warnings
from collections import Counter

import onnx_ir as ir
import pytest
import torch
from torch import nn

from graphtag.analysis.attribution import (
    TorchScriptScopeResolver,
    tag_from_name_scopes,
)
from graphtag.core import metadata
from graphtag.core.graphs import iter_all_nodes
from graphtag.core.hierarchy import Hierarchy, is_valid_tag
from graphtag.exporter.module_tree import DEFAULT_KEEP_TORCH_CLASSES, FilterConfig, build_hierarchy

transformers = pytest.importorskip("transformers")


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.ln = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(torch.relu(self.lin(x))) + 1


class Net(nn.Module):
    """Same-class siblings, a one-element ModuleList, a Sequential, a shared module."""

    def __init__(self) -> None:
        super().__init__()
        self.left = Block()
        self.right = Block()
        self.blocks = nn.ModuleList([Block()])
        self.seq = nn.Sequential(Block(), nn.ReLU())
        self.layer_1 = Block()  # a real name that looks like TorchScript's repeat suffix
        self.alias = self.right  # shared: registered twice
        self.register_buffer("scale", torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.left(x) * 2
        x = self.right(x)
        x = self.left(x)  # second call of one module
        x = self.alias(x)  # call through the alias
        for block in self.blocks:
            x = block(x)
        x = self.layer_1(x)
        return self.seq(x) * self.scale


class Wrapper(nn.Module):
    """Positional tensors -> keyword call, as the TorchScript path needs (attribute ``model``)."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.names, tensors)))
        return out if isinstance(out, torch.Tensor) else out[0]


def _bert() -> nn.Module:
    cfg = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=100,
        max_position_embeddings=32,
    )
    return transformers.BertModel(cfg).eval()


def _check_invariants(model: nn.Module, h: Hierarchy) -> None:
    tags = list(h.modules)
    assert len(tags) == len(set(tags))
    assert all(is_valid_tag(t) for t in tags)
    assert h.root == "/" + type(model).__name__
    # Every dotted name, aliases included, maps to a kept tag.
    names = {n for n, _ in model.named_modules(remove_duplicate=False)}
    assert set(h.name_to_tag) == names
    assert set(h.name_to_tag.values()) <= set(tags)
    for info in h:
        assert h.name_to_tag[info.name] == info.tag
        if info.parent is not None:
            assert info.tag.startswith(info.parent + "/")
            assert info.parent in h
    # Every parameter (by its first name) is owned or inherited exactly once.
    recorded = [p for info in h for p in info.parameters + info.inherited_parameters]
    assert len(recorded) == len(set(recorded))
    assert {n for n, _ in model.named_parameters()} <= set(recorded)
    assert Hierarchy.from_json(h.to_json()) == h


# ---------------------------------------------------------------- module tree


def test_custom_model_tags() -> None:
    model = Net()
    h = build_hierarchy(model)
    _check_invariants(model, h)
    assert list(h.modules) == [
        "/Net",
        "/Net/Block.left",
        "/Net/Block.left/LayerNorm",
        "/Net/Block.right",
        "/Net/Block.right/LayerNorm",
        "/Net/Block.blocks.0",
        "/Net/Block.blocks.0/LayerNorm",
        "/Net/Block.seq.0",
        "/Net/Block.seq.0/LayerNorm",
        "/Net/Block.layer_1",
        "/Net/Block.layer_1/LayerNorm",
    ]
    names = h.name_to_tag
    assert names["left.lin"] == "/Net/Block.left"  # filtered Linear -> its kept parent
    assert names["blocks"] == names["seq"] == names["seq.1"] == "/Net"
    assert names["alias"] == "/Net/Block.right"
    assert names["alias.ln"] == "/Net/Block.right/LayerNorm"

    left = h.modules["/Net/Block.left"]
    assert left.name == "left"
    assert left.class_name == f"{Block.__module__}.Block"
    assert left.parent == "/Net"
    assert left.children == {
        "lin": "torch.nn.modules.linear.Linear",
        "ln": "torch.nn.modules.normalization.LayerNorm",
    }
    assert left.forward_args == ["x"]
    assert left.parameters == []
    assert left.inherited_parameters == ["left.lin.weight", "left.lin.bias"]
    assert h.modules["/Net/Block.left/LayerNorm"].parameters == ["left.ln.weight", "left.ln.bias"]
    root = h.modules["/Net"]
    assert root.buffers == ["scale"]
    assert root.children["alias"] == root.children["right"]
    assert all(info.executed is None for info in h)
    assert h.filter_config == FilterConfig().to_json_dict()


def test_index_segment_without_collision() -> None:
    class Net2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = Block()
            self.blocks = nn.ModuleList([Block(), Block()])
            self.single = nn.ModuleList([nn.Sequential(nn.Linear(2, 2))])

    h = build_hierarchy(Net2())
    _check_invariants(Net2(), h)
    assert [t for t in h.modules if not t.endswith("LayerNorm")] == [
        "/Net2",
        "/Net2/Block",
        "/Net2/Block.0",
        "/Net2/Block.1",
    ]
    assert h.name_to_tag["single.0.0"] == "/Net2"


def test_collisions_through_nested_filtered_containers() -> None:
    class Deep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stages = nn.ModuleList([nn.Sequential(Block(), Block()), nn.Sequential(Block())])
            self.extra = nn.Sequential(Block())

    model = Deep()
    h = build_hierarchy(model)
    _check_invariants(model, h)
    assert [t for t in h.modules if not t.endswith("LayerNorm")] == [
        "/Deep",
        "/Deep/Block.stages.0.0",
        "/Deep/Block.stages.0.1",
        "/Deep/Block.stages.1.0",
        "/Deep/Block.extra.0",
    ]


def test_sequential_root_and_odd_attribute_names() -> None:
    model = nn.Sequential(Block(), Block())
    model.add_module("a/b", Block())
    h = build_hierarchy(model)
    _check_invariants(model, h)
    assert "/Sequential/Block.0" in h
    assert "/Sequential/Block.1" in h
    assert h.name_to_tag["a/b"] == "/Sequential/Block"  # '/' never splits a segment
    h_keep = build_hierarchy(model, FilterConfig(keep_all=True))
    assert h_keep.name_to_tag["a/b.lin"] == "/Sequential/Block/Linear"


def test_shared_module_rules() -> None:
    shared = Block()

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = shared
            self.second = shared  # same parent, second name
            self.inner = nn.ModuleList([shared])  # under a filtered container

    model = Twice()
    h = build_hierarchy(model)
    _check_invariants(model, h)
    assert list(h.modules) == ["/Twice", "/Twice/Block", "/Twice/Block/LayerNorm"]
    assert h.modules["/Twice/Block"].name == "first"  # first registered name is canonical
    for name in ("first", "second", "inner.0"):
        assert h.name_to_tag[name] == "/Twice/Block"
        assert h.name_to_tag[name + ".ln"] == "/Twice/Block/LayerNorm"
    # Parameters are listed under the canonical name only.
    assert h.modules["/Twice/Block"].inherited_parameters == ["first.lin.weight", "first.lin.bias"]


def test_cycle_and_nested_alias_terminate() -> None:
    model = Block()
    model.self_ref = model  # cycle back to the root
    model.lin.back = model.ln  # alias nested below another module
    names = {n for n, _ in Block().named_modules(remove_duplicate=False)}
    h = build_hierarchy(model)
    assert h.name_to_tag["self_ref"] == "/Block"
    assert h.name_to_tag["self_ref.ln"] == "/Block/LayerNorm"
    assert h.name_to_tag["lin.back"] == "/Block/LayerNorm"
    assert names <= set(h.name_to_tag)


def test_filter_options() -> None:
    model = Net()
    default = FilterConfig()
    assert default.keep_torch_classes == DEFAULT_KEEP_TORCH_CLASSES
    assert default.is_kept(nn.Embedding(2, 2)) and not default.is_kept(nn.Linear(2, 2))

    no_ln = build_hierarchy(model, FilterConfig.create(remove=["LayerNorm"]))
    _check_invariants(model, no_ln)
    assert not any(t.endswith("LayerNorm") for t in no_ln.modules)
    assert "left.ln.weight" in no_ln.modules["/Net/Block.left"].inherited_parameters

    with_linear = build_hierarchy(model, default.adding("torch.nn.modules.linear.Linear"))
    _check_invariants(model, with_linear)
    assert with_linear.name_to_tag["left.lin"] == "/Net/Block.left/Linear"
    assert with_linear.filter_config["keep_torch_classes"] == sorted(
        DEFAULT_KEEP_TORCH_CLASSES | {"torch.nn.modules.linear.Linear"}
    )

    everything = build_hierarchy(model, FilterConfig(keep_all=True))
    _check_invariants(model, everything)
    assert len(everything) == len(list(model.modules()))
    assert everything.name_to_tag["blocks.0"] == "/Net/ModuleList/Block.0"
    assert everything.name_to_tag["seq.1"] == "/Net/Sequential/ReLU.1"

    config = FilterConfig.create(add=["Linear"], remove=["Embedding"], keep_all=True)
    assert FilterConfig.from_json_dict(config.to_json_dict()) == config


def test_forward_signature_failure_is_tolerated() -> None:
    model = Block()
    model.forward = 42  # not inspectable
    assert build_hierarchy(model).modules["/Block"].forward_args == []


def test_bert_hierarchy() -> None:
    model = _bert()
    h = build_hierarchy(model)
    _check_invariants(model, h)
    for tag in (
        "/BertModel/BertEmbeddings/Embedding.word_embeddings",
        "/BertModel/BertEmbeddings/Embedding.position_embeddings",
        "/BertModel/BertEmbeddings/Embedding.token_type_embeddings",
        "/BertModel/BertEmbeddings/LayerNorm",
        "/BertModel/BertEncoder/BertLayer.0/BertAttention/BertSelfAttention",
        "/BertModel/BertEncoder/BertLayer.1/BertOutput/LayerNorm",
        "/BertModel/BertPooler",
    ):
        assert tag in h
    assert h.name_to_tag["encoder.layer.0.attention.self.query"] == (
        "/BertModel/BertEncoder/BertLayer.0/BertAttention/BertSelfAttention"
    )
    assert "input_ids" in h.modules["/BertModel"].forward_args
    pooler = h.modules["/BertModel/BertPooler"]
    assert pooler.inherited_parameters == ["pooler.dense.weight", "pooler.dense.bias"]


# ---------------------------------------------------------------- attribution (no export)


def test_name_scopes_parsing() -> None:
    h = build_hierarchy(Net())
    assert tag_from_name_scopes("['', 'add']", h) == "/Net"
    assert tag_from_name_scopes("['', 'left', 'left.lin', 'linear']", h) == "/Net/Block.left"
    assert tag_from_name_scopes("['', 'alias', 'alias.ln', 'ln']", h) == (
        "/Net/Block.right/LayerNorm"
    )
    # The last element is the FX node name even when it spells a module name.
    assert tag_from_name_scopes("['', 'left']", h) == "/Net"
    assert tag_from_name_scopes("['', 'left', 'unknown.module', 'x']", h) == "/Net/Block.left"
    assert tag_from_name_scopes("['', 'seq', 'seq.0@1', 'x']", h) == "/Net/Block.seq.0"
    assert tag_from_name_scopes("['add']", h) is None
    assert tag_from_name_scopes("['nope', 'add']", h) is None
    assert tag_from_name_scopes("not a list", h) is None
    assert tag_from_name_scopes("", h) is None


def test_torchscript_scope_parsing() -> None:
    h = build_hierarchy(Net())
    cases = {
        "/left/lin/Gemm": "/Net/Block.left",
        "/left/ln/LayerNormalization_2": "/Net/Block.left/LayerNorm",
        "/left_1/Relu": "/Net/Block.left",  # repeated call: torch appends _1
        "/left/lin_1/Gemm": "/Net/Block.left",
        "/layer_1/Relu": "/Net/Block.layer_1",  # a real module named like a suffix
        "/blocks.0/Add": "/Net/Block.blocks.0",
        "/seq/seq.0/ln/LayerNormalization": "/Net/Block.seq.0/LayerNorm",
        "/seq/seq.1/Relu": "/Net",
        "/Mul": "/Net",
        "/unknown/Relu": "/Net",
        # An unknown segment ends the walk: what follows it is not read as a path.
        "/unknown/seq/seq.0/ln/LayerNormalization": "/Net",
        "/left/unknown/seq.0/ln/LayerNormalization": "/Net/Block.left",
        # A module not below the current one is still found (a module called from
        # outside its parent, through a shared reference).
        "/left/seq.0/ln/LayerNormalization": "/Net/Block.seq.0/LayerNorm",
        "Identity_3": "/Net",
    }
    resolver = TorchScriptScopeResolver(h)
    for name, tag in cases.items():
        assert resolver.tag(name) == tag, name
    wrapped = TorchScriptScopeResolver(h, prefix="model")
    assert wrapped.tag("/model/left/lin/Gemm") == "/Net/Block.left"
    assert wrapped.tag("/model/Mul") == "/Net"
    assert wrapped.tag("/Cast") == "/Net"  # the wrapper's own node
    assert wrapped.tag("/model/seq/seq.0/Add") == "/Net/Block.seq.0"
    other = TorchScriptScopeResolver(
        build_hierarchy(nn.Sequential(nn.LayerNorm(4)), FilterConfig.create(keep_all=True))
    )
    assert other.tag("/left/lin/Gemm") == other.hierarchy.name_to_tag[""]
    assert other.tag("/0/LayerNormalization") == other.hierarchy.name_to_tag["0"]


# ---------------------------------------------------------------- attribution (real exports)


def _dynamo_nodes(model: nn.Module, kwargs: dict) -> list[ir.Node]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (), kwargs=kwargs, dynamo=True, optimize=False)
    return list(iter_all_nodes(program.model))


def _torchscript_nodes(model: nn.Module, args: tuple, path) -> list[ir.Node]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=False)
    return list(iter_all_nodes(ir.load(path)))


def _check_dynamo_attribution(h: Hierarchy, nodes: list[ir.Node]) -> Counter:
    """Each node's tag is the tag of its innermost module; returns (op, tag) counts."""
    counts: Counter = Counter()
    for node in nodes:
        text = node.metadata_props[metadata.TORCH_NAME_SCOPES]
        scopes = ast.literal_eval(text)
        classes = ast.literal_eval(node.metadata_props[metadata.TORCH_CLASS_HIERARCHY])
        assert all(name in h.name_to_tag for name in scopes[:-1]), scopes
        expected = h.name_to_tag[scopes[-2]]
        tag = tag_from_name_scopes(text, h)
        assert tag == expected, (node.name, scopes)
        info = h.modules[tag]
        if info.name == scopes[-2]:  # innermost module kept: same class as torch reports
            assert info.class_name == classes[-2]
        counts[node.op_type, tag] += 1
    return counts


def test_dynamo_and_torchscript_agree_on_custom_model(tmp_path) -> None:
    model = Net().eval()
    x = torch.randn(2, 4)
    h = build_hierarchy(model)
    dynamo = _check_dynamo_attribution(h, _dynamo_nodes(model, {"x": x}))
    assert dynamo["Gemm", "/Net/Block.left"] == 2  # called twice
    assert dynamo["Gemm", "/Net/Block.right"] == 2  # directly and through the alias
    assert dynamo["LayerNormalization", "/Net/Block.seq.0/LayerNorm"] == 1
    assert dynamo["Relu", "/Net"] == 1  # seq.1 is a filtered ReLU

    for exported, prefix in ((model, ""), (Wrapper(model, ["x"]), "model")):
        nodes = _torchscript_nodes(exported, (x,), tmp_path / f"ts{prefix}.onnx")
        resolver = TorchScriptScopeResolver(h, prefix)
        script: Counter = Counter()
        for node in nodes:
            tag = resolver.tag(node.name or "")
            assert tag in h, node.name
            script[node.op_type, tag] += 1
        # The ops both exporters emit once per module call must land on the same modules.
        for op in ("Gemm", "LayerNormalization", "Relu"):
            assert {k: v for k, v in script.items() if k[0] == op} == {
                k: v for k, v in dynamo.items() if k[0] == op
            }, op


class _Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.proj(x))


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_Layer(), _Layer()])
        self.norm = nn.LayerNorm(4)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class _Deep(nn.Module):
    """Dotted names of every shape: numeric inside (enc.layers.0.proj), non-numeric
    last after a non-numeric parent (enc.norm), numeric last (enc.layers.1)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = _Encoder()
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.enc(x))


def test_torchscript_segments_are_the_ones_torch_writes(tmp_path) -> None:
    """The scope segment computed for each module name is the one torch puts in node
    names (read from a real TorchScript export, not from graphtag)."""
    from graphtag.analysis.attribution import _unqualified

    model = _Deep().eval()
    called = []
    for name, module in model.named_modules():
        if name:
            module.register_forward_hook(lambda *_, n=name: called.append(n))
    nodes = _torchscript_nodes(model, (torch.randn(2, 4),), tmp_path / "deep.onnx")
    written = set()
    for node in nodes:
        written.update(node.name.split("/")[1:-1])  # the scope segments, op name left out
    assert {_unqualified(name) for name in called} == written
    assert _unqualified("enc.layers.0.proj") == "proj" and "proj" in written
    assert _unqualified("enc.layers.1") == "layers.1" and "layers.1" in written
    assert _unqualified("enc.norm") == "norm" and "norm" in written


def test_bert_dynamo_and_torchscript(tmp_path) -> None:
    model = _bert()
    ids = torch.randint(0, 100, (1, 8))
    bert_inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    h = build_hierarchy(model)
    dynamo = _check_dynamo_attribution(h, _dynamo_nodes(model, bert_inputs))
    self_attention = "/BertModel/BertEncoder/BertLayer.0/BertAttention/BertSelfAttention"
    assert dynamo["Gather", "/BertModel/BertEmbeddings/Embedding.word_embeddings"] == 1
    assert dynamo["LayerNormalization", "/BertModel/BertEmbeddings/LayerNorm"] == 1
    assert any(tag == self_attention for _, tag in dynamo)

    wrapper = Wrapper(model, list(bert_inputs))
    nodes = _torchscript_nodes(wrapper, tuple(bert_inputs.values()), tmp_path / "bert_ts.onnx")
    resolver = TorchScriptScopeResolver(h, prefix="model")
    tags = {node.name: resolver.tag(node.name or "") for node in nodes}
    assert all(tag in h for tag in tags.values())
    assert tags["/model/encoder/layer.0/attention/self/query/MatMul"] == self_attention
    assert tags["/model/embeddings/word_embeddings/Gather"] == (
        "/BertModel/BertEmbeddings/Embedding.word_embeddings"
    )
    script = Counter(
        (node.op_type, tags[node.name]) for node in nodes if node.op_type == "LayerNormalization"
    )
    assert script == {k: v for k, v in dynamo.items() if k[0] == "LayerNormalization"}


# ---------------------------------------------------------------- the kept torch classes

# One instance of every torch.nn class the README keeps by default, and an input for it.
KEPT_EXAMPLES: dict[str, tuple[nn.Module, tuple[int, ...]]] = {
    "LayerNorm": (nn.LayerNorm(4), (2, 4)),
    "Embedding": (nn.Embedding(5, 4), (2,)),
    "BatchNorm1d": (nn.BatchNorm1d(4), (2, 4, 3)),
    "BatchNorm2d": (nn.BatchNorm2d(4), (2, 4, 3, 3)),
    "BatchNorm3d": (nn.BatchNorm3d(4), (2, 4, 3, 3, 3)),
    "GroupNorm": (nn.GroupNorm(2, 4), (2, 4, 3)),
    "InstanceNorm1d": (nn.InstanceNorm1d(4, affine=True), (2, 4, 3)),
    "InstanceNorm2d": (nn.InstanceNorm2d(4, affine=True), (2, 4, 3, 3)),
    "InstanceNorm3d": (nn.InstanceNorm3d(4, affine=True), (2, 4, 3, 3, 3)),
}


class Wraps(nn.Module):
    """A user module around one torch.nn module and a Linear (always filtered out)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(self.inner(x).transpose(1, -1)).sum()


def test_kept_classes_are_the_readme_s():
    import re
    from pathlib import Path

    import oracles

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    listed = re.search(r"Kept anyway by default: (.*?)\.\n", readme, re.S).group(1)
    names = set()
    for item in re.findall(r"`([^`]+)`", listed):
        base, *variants = item.split("/")
        names |= {base} | {base[:-2] + v for v in variants}  # BatchNorm1d/2d/3d
    assert names == set(KEPT_EXAMPLES) == oracles.KEPT_TORCH_CLASSES == DEFAULT_KEEP_TORCH_CLASSES


@pytest.mark.parametrize("name", list(KEPT_EXAMPLES))
def test_every_kept_class_is_kept_by_default_and_droppable(name):
    inner, _ = KEPT_EXAMPLES[name]
    model = Wraps(inner)
    default = build_hierarchy(model)
    assert default.name_to_tag["inner"] == f"/Wraps/{name}"
    assert default.name_to_tag["lin"] == "/Wraps"
    for spelling in (name, f"{type(inner).__module__}.{name}"):  # short or qualified
        dropped = build_hierarchy(model, FilterConfig.create(remove=[spelling]))
        assert dropped.name_to_tag["inner"] == "/Wraps", spelling
        assert list(dropped.modules) == ["/Wraps"]
        assert f"inner.{next(iter(dict(inner.named_parameters())))}" in (
            dropped.modules["/Wraps"].inherited_parameters
        )


def test_every_kept_class_tags_its_nodes_in_a_real_export():
    """Exported (dynamo) with all of them: each class's nodes carry its own tag by default
    and its parent's when dropped; never the filtered Linear's."""
    import graphtag

    class All(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(Wraps(m) for m, _ in KEPT_EXAMPLES.values())

        def forward(self, *xs: torch.Tensor) -> torch.Tensor:
            return sum(block(x) for block, x in zip(self.blocks, xs, strict=True))

    torch.manual_seed(0)
    model = All().eval()
    inputs = tuple(
        torch.randint(0, 5, shape) if name == "Embedding" else torch.randn(shape)
        for name, (_, shape) in KEPT_EXAMPLES.items()
    )
    for config in (None, FilterConfig.create(remove=list(KEPT_EXAMPLES))):
        result = graphtag.export(model, inputs, exporter="dynamo", filter_config=config)
        tags = Counter(n.metadata_props.get(metadata.MODULE) for n in result.model.graph)
        for i, name in enumerate(KEPT_EXAMPLES):
            kept = f"/All/Wraps.{i}/{name}"
            assert (tags[kept] > 0) == (config is None), (name, tags)
            assert tags[f"/All/Wraps.{i}"] > 0, (name, tags)


class _Leaf(nn.Module):
    def __init__(self, child: str = "l") -> None:
        super().__init__()
        setattr(self, child, nn.Linear(4, 4))
        self.child = child

    def forward(self, x):
        return getattr(self, self.child)(x) * 2


class _ListOfDicts(nn.Module):
    """ModuleDicts in a ModuleList: TorchScript writes every ``blocks.N.alpha`` as
    ``/alpha`` (``blocks.N`` is never called), numbering the calls ``_1``, ``_2``."""

    def __init__(self, n: int = 3, order: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.ModuleDict({"alpha": _Leaf()}) for _ in range(n)])
        self.order = order or tuple(range(n))

    def forward(self, x):
        for i in self.order:
            x = self.blocks[i]["alpha"](x) + 1
        return x


def test_torchscript_ambiguous_scope_gets_the_common_module(caplog) -> None:
    h = build_hierarchy(_ListOfDicts())
    resolver = TorchScriptScopeResolver(h)
    with caplog.at_level("INFO", logger="graphtag.analysis.attribution"):
        for name in ("/alpha/l/Gemm", "/alpha/l_1/Gemm", "/alpha_2/Mul", "/alpha/Constant"):
            assert resolver.tag(name) == "/_ListOfDicts", name
    assert resolver.ambiguous["/alpha/l_1"] == tuple(f"blocks.{i}.alpha.l" for i in range(3))
    assert "names 3 modules alike" in caplog.text
    # A later segment only one candidate has settles it.
    other = _ListOfDicts(2)
    other.blocks[1]["alpha"] = _Leaf("m")
    h = build_hierarchy(other)
    resolver = TorchScriptScopeResolver(h)
    assert resolver.tag("/alpha/m/Gemm") == h.name_to_tag["blocks.1.alpha"]
    assert resolver.tag("/alpha_1/Mul") == "/_ListOfDicts"
    assert "/alpha/m" not in resolver.ambiguous


@pytest.mark.parametrize("n, order", [(2, None), (3, None), (4, None), (3, (2, 0, 1))])
def test_torchscript_list_of_dicts_tags_no_other_block(tmp_path, n, order) -> None:
    """No node of one block carries another block's tag, whatever the call order (torch's
    ``_<n>`` numbers calls, not indices: with order 2, 0, 1, ``/alpha/l`` is blocks.2)."""
    model = _ListOfDicts(n, order).eval()
    h = build_hierarchy(model)
    resolver = TorchScriptScopeResolver(h)
    nodes = _torchscript_nodes(model, (torch.randn(2, 4),), tmp_path / "lod.onnx")
    gemms = 0
    for node in nodes:
        tag = resolver.tag(node.name or "")
        weights = [v.name for v in node.inputs if v is not None and v.name.endswith(".weight")]
        if weights:  # the Gemm of blocks.<i>.alpha.l
            gemms += 1
            ran_in = h.name_to_tag[weights[0].rsplit(".", 2)[0]]
            assert ran_in.startswith(tag), (node.name, tag, ran_in)
        assert tag == "/_ListOfDicts", node.name  # nothing tells the blocks apart
    assert gemms == n


def test_torchscript_list_of_modules_keeps_per_index_tags(tmp_path) -> None:
    """The unambiguous case: ModuleList items are called, so ``layers.N`` is written."""
    model = _Encoder().eval()
    h = build_hierarchy(model)
    resolver = TorchScriptScopeResolver(h)
    nodes = _torchscript_nodes(model, (torch.randn(2, 4),), tmp_path / "enc.onnx")
    gemm_tags = [resolver.tag(node.name) for node in nodes if node.op_type == "Gemm"]
    assert gemm_tags == [h.name_to_tag["layers.0"], h.name_to_tag["layers.1"]]
    assert gemm_tags == ["/_Encoder/_Layer.0", "/_Encoder/_Layer.1"]
    assert not resolver.ambiguous
