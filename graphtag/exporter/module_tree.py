"""Build the graphtag :class:`~graphtag.core.hierarchy.Hierarchy` from a model's module tree.

Which modules get a tag
    The root is always kept. Modules whose class lives in torch's own ``nn`` packages
    (``torch.nn.Linear``, ``torch.nn.ModuleList``, ...) are filtered out: their nodes belong
    to the nearest kept ancestor. A configurable set of semantically meaningful torch classes
    (normalisations, embeddings) is kept anyway; ``keep_all`` keeps every module.

Segment of a kept module (one per kept module, joined by '/')
    ``Class`` or, when the module's own attribute name is an index (a child of a
    ModuleList/Sequential), ``Class.<index>``. When two kept siblings (same kept parent,
    same class name) would get the same segment, every kept sibling of that class name
    gets ``Class.<path>`` instead, where ``<path>`` is its dotted name relative to the kept
    parent: ``Block.left``/``Block.right``, ``Embedding.word_embeddings``, and
    ``Block.blocks.0`` next to ``Block.extra.0`` when the containers in between are
    filtered. Paths relative to one parent are distinct, so tags are unique; this is
    checked.

Shared modules (one object registered under several names)
    The first name in pre-order (registration order, the name ``named_modules()`` and
    ``named_parameters()`` report) is canonical and gets the ModuleInfo; every other name,
    and every name below it, maps in ``name_to_tag`` to the tag of the matching canonical
    name. Executions through an alias therefore land on the canonical module's tag.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Iterable

import torch

from graphtag.core.hierarchy import Hierarchy, ModuleInfo, name_within

DEFAULT_KEEP_TORCH_CLASSES: frozenset[str] = frozenset(
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

# torch's module libraries: plain nn and its quantized/QAT variants under torch.ao.nn.
_TORCH_NN_PREFIXES = ("torch.nn.", "torch.ao.nn.")


# TorchScript numbers the classes it compiles more than once: Linear, ___torch_mangle_3.Linear.
_MANGLED = re.compile(r"\.___torch_mangle_\d+")


def qualified_class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def class_names(module: torch.nn.Module) -> tuple[str, str]:
    """``module``'s class name, short and fully qualified.

    A TorchScript module (``torch.jit.script`` or ``torch.jit.trace``) is named by the
    class it was compiled from (``Linear``, ``torch.nn.modules.linear.Linear``), not by
    its runtime class ``RecursiveScriptModule``, so its tags read as the eager model's.
    """
    if isinstance(module, torch.jit.ScriptModule):
        try:
            compiled = module._c._type().qualified_name()
        except (AttributeError, RuntimeError):  # no compiled type to read: runtime names
            compiled = None
        if compiled:
            qualified = _MANGLED.sub("", compiled.removeprefix("__torch__."))
            return getattr(module, "original_name", None) or qualified.rsplit(".", 1)[-1], qualified
    cls = type(module)
    return cls.__name__, qualified_class_name(cls)


def is_torch_nn(module: torch.nn.Module) -> bool:
    """Whether ``module`` is one of torch's own layers (torch.nn, torch.ao.nn)."""
    return class_names(module)[1].startswith(_TORCH_NN_PREFIXES)


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    """Which modules get their own tag.

    ``keep_torch_classes`` holds class names (``LayerNorm``) or fully qualified names
    (``torch.nn.modules.normalization.LayerNorm``) of torch.nn classes that stay visible.
    Non-torch classes are always kept.
    """

    keep_torch_classes: frozenset[str] = DEFAULT_KEEP_TORCH_CLASSES
    keep_all: bool = False

    def __post_init__(self) -> None:
        # Accept any iterable (a list from JSON, a set) but store a frozenset.
        object.__setattr__(self, "keep_torch_classes", frozenset(self.keep_torch_classes))

    @classmethod
    def create(
        cls,
        add: Iterable[str] = (),
        remove: Iterable[str] = (),
        keep_all: bool = False,
    ) -> FilterConfig:
        """The default configuration with torch classes added to / removed from the kept set."""
        return cls(keep_all=keep_all).adding(*add).removing(*remove)

    def adding(self, *class_names: str) -> FilterConfig:
        return dataclasses.replace(
            self, keep_torch_classes=self.keep_torch_classes | set(class_names)
        )

    def removing(self, *class_names: str) -> FilterConfig:
        # Short or qualified, as is_kept reads them: either spelling drops both.
        short = {name.rsplit(".", 1)[-1] for name in class_names}
        kept = {name for name in self.keep_torch_classes if name.rsplit(".", 1)[-1] not in short}
        return dataclasses.replace(self, keep_torch_classes=frozenset(kept))

    def is_kept(self, module: torch.nn.Module) -> bool:
        """Whether ``module`` gets its own segment (the root is kept regardless)."""
        if self.keep_all or not is_torch_nn(module):
            return True
        short, qualified = class_names(module)
        return short in self.keep_torch_classes or qualified in self.keep_torch_classes

    def to_json_dict(self) -> dict:
        return {"keep_torch_classes": sorted(self.keep_torch_classes), "keep_all": self.keep_all}

    @classmethod
    def from_json_dict(cls, data: dict) -> FilterConfig:
        return cls(
            keep_torch_classes=data.get("keep_torch_classes", DEFAULT_KEEP_TORCH_CLASSES),
            keep_all=bool(data.get("keep_all", False)),
        )


@dataclasses.dataclass
class _Entry:
    """One canonical module during the walk."""

    name: str
    module: torch.nn.Module
    kept: bool
    kept_parent: str | None  # dotted name of the nearest kept ancestor (None for the root)
    tag: str = ""


def _join(prefix: str, attr: str) -> str:
    return f"{prefix}.{attr}" if prefix else attr


def _escape(segment: str) -> str:
    # Attribute names may contain '/', which would split the segment; '%' escapes first.
    return segment.replace("%", "%25").replace("/", "%2F")


def _walk(
    model: torch.nn.Module, config: FilterConfig
) -> tuple[list[_Entry], list[tuple[str, str]]]:
    """Canonical modules in pre-order, plus (alias name, canonical name) pairs."""
    entries: list[_Entry] = []
    aliases: list[tuple[str, str]] = []
    canonical: dict[int, str] = {}
    # Iterative pre-order walk over _modules: named_children() would drop a module that is
    # registered twice under the same parent, and deep models must not hit recursion limits.
    stack: list[tuple[str, torch.nn.Module, str | None]] = [("", model, None)]
    while stack:
        name, module, kept_parent = stack.pop()
        if id(module) in canonical:
            aliases.append((name, canonical[id(module)]))
            continue
        canonical[id(module)] = name
        kept = kept_parent is None or config.is_kept(module)
        entries.append(_Entry(name, module, kept, kept_parent))
        child_parent = name if kept else kept_parent
        children = [(a, m) for a, m in module._modules.items() if m is not None]
        stack.extend((_join(name, a), m, child_parent) for a, m in reversed(children))
    return entries, aliases


def _segments(entries: list[_Entry]) -> dict[str, str]:
    """Segment of every kept non-root module, by dotted name (see the module docstring)."""
    # Kept siblings (same kept parent) grouped by class name: only a group can collide,
    # since a segment always starts with its class name.
    groups: dict[tuple[str, str], list[_Entry]] = {}
    for entry in entries:
        if entry.kept and entry.kept_parent is not None:
            key = (entry.kept_parent, class_names(entry.module)[0])
            groups.setdefault(key, []).append(entry)
    segments: dict[str, str] = {}
    for (parent, cls_name), group in groups.items():
        short = {}
        for entry in group:
            attr = entry.name.rsplit(".", 1)[-1]
            short[entry.name] = f"{cls_name}.{attr}" if attr.isdecimal() else cls_name
        if len(set(short.values())) < len(group):
            # A collision: the whole group switches to paths relative to the kept parent,
            # which are distinct, so ``Block.left`` sits next to ``Block.blocks.0``.
            short = {
                e.name: f"{cls_name}.{e.name[len(parent) + 1 if parent else 0 :]}" for e in group
            }
        segments.update((name, _escape(seg)) for name, seg in short.items())
    return segments


def _forward_args(module: torch.nn.Module) -> list[str]:
    try:
        return list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError, AttributeError):
        # Builtins, C extensions or odd forward objects: the names are just unknown.
        return []


def _own_tensors(module: torch.nn.Module, name: str) -> tuple[list[str], list[str]]:
    params = [
        _join(name, p) for p, _ in module.named_parameters(recurse=False, remove_duplicate=False)
    ]
    buffers = [
        _join(name, b) for b, _ in module.named_buffers(recurse=False, remove_duplicate=False)
    ]
    return params, buffers


def build_hierarchy(model: torch.nn.Module, config: FilterConfig | None = None) -> Hierarchy:
    """The graphtag hierarchy of ``model``'s module tree (no export involved)."""
    config = config or FilterConfig()
    entries, aliases = _walk(model, config)
    segments = _segments(entries)
    by_name = {entry.name: entry for entry in entries}

    modules: dict[str, ModuleInfo] = {}
    name_to_tag: dict[str, str] = {}
    for entry in entries:  # pre-order: a kept parent's tag exists before its children's
        if entry.kept_parent is None:
            entry.tag = "/" + _escape(class_names(entry.module)[0])
        elif entry.kept:
            entry.tag = f"{by_name[entry.kept_parent].tag}/{segments[entry.name]}"
        else:
            entry.tag = by_name[entry.kept_parent].tag
        name_to_tag[entry.name] = entry.tag
        params, buffers = _own_tensors(entry.module, entry.name)
        if entry.kept:
            if entry.tag in modules:
                raise AssertionError(f"duplicate module tag {entry.tag!r}")
            modules[entry.tag] = ModuleInfo(
                tag=entry.tag,
                name=entry.name,
                class_name=class_names(entry.module)[1],
                parent=by_name[entry.kept_parent].tag if entry.kept_parent is not None else None,
                children={
                    attr: class_names(child)[1]
                    for attr, child in entry.module._modules.items()
                    if child is not None
                },
                forward_args=_forward_args(entry.module),
                parameters=params,
                buffers=buffers,
            )
        else:
            owner = modules[entry.tag]
            owner.inherited_parameters.extend(params)
            owner.inherited_buffers.extend(buffers)

    # Aliases in discovery order: an alias found inside another alias's target has already
    # been mapped when the outer one is processed, so nested aliases resolve too.
    for alias, target in aliases:
        for name in [n for n in name_to_tag if name_within(n, target)]:
            rest = name[len(target) :] if target else "." + name if name else ""
            name_to_tag[alias + rest] = name_to_tag[name]

    return Hierarchy(modules, name_to_tag, config.to_json_dict())
