"""The module hierarchy as graphtag stores it in the ONNX file (torch-free).

A *tag* is the path of a kept module from the root, one segment per kept module,
for example ``/Model/Encoder/Layer.0/Attention``. Tags are paths, so ancestry and the
lowest common ancestor follow from the segments alone; the :class:`Hierarchy` adds the
per-module information recorded at export time.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator

import onnx_ir as ir

from graphtag.core import metadata
from graphtag.core.errors import GraphtagError

SCHEMA_VERSION = 1


def is_valid_tag(tag: str) -> bool:
    """A tag is '/' followed by one or more non-empty segments."""
    return len(tag) > 1 and tag[0] == "/" and all(tag[1:].split("/"))


def tag_segments(tag: str) -> list[str]:
    return tag[1:].split("/") if tag else []


def tag_parent(tag: str) -> str | None:
    """The enclosing module's tag, or None for the root."""
    cut = tag.rfind("/")
    return tag[:cut] if cut > 0 else None


def name_within(name: str, ancestor: str) -> bool:
    """Dotted module names: ``name`` is ``ancestor`` or below it ('' is the root)."""
    return not ancestor or name == ancestor or name.startswith(ancestor + ".")


def is_ancestor_or_self(ancestor: str, tag: str) -> bool:
    """True when ``tag`` is ``ancestor`` or lies inside it."""
    return tag == ancestor or tag.startswith(ancestor + "/")


def tag_lca(tags: Iterable[str]) -> str | None:
    """Lowest common ancestor of the tags (None for an empty input)."""
    common: list[str] | None = None
    for tag in tags:
        segments = tag_segments(tag)
        if common is None:
            common = segments
            continue
        size = 0
        for a, b in zip(common, segments):
            if a != b:
                break
            size += 1
        del common[size:]
    if common is None or not common:
        return None
    return "/" + "/".join(common)


@dataclasses.dataclass
class ModuleInfo:
    """What graphtag records about one kept module."""

    tag: str
    name: str  # dotted module name in the PyTorch model, "" for the root
    class_name: str  # fully qualified class name
    parent: str | None = None  # parent tag
    children: dict[str, str] = dataclasses.field(default_factory=dict)  # attr -> class
    forward_args: list[str] = dataclasses.field(default_factory=list)
    parameters: list[str] = dataclasses.field(default_factory=list)  # own, full dotted names
    buffers: list[str] = dataclasses.field(default_factory=list)
    # Parameters/buffers of filtered-out descendants whose nodes belong to this module.
    inherited_parameters: list[str] = dataclasses.field(default_factory=list)
    inherited_buffers: list[str] = dataclasses.field(default_factory=list)
    executed: bool | None = None  # None when unknown (no export ran)


@dataclasses.dataclass
class Hierarchy:
    """Kept modules by tag (pre-order) plus the map from every module name to its tag."""

    modules: dict[str, ModuleInfo]
    # Every module's dotted name (kept or filtered out) -> tag of it or its nearest kept ancestor.
    name_to_tag: dict[str, str]
    filter_config: dict = dataclasses.field(default_factory=dict)

    @property
    def root(self) -> str:
        return next(iter(self.modules))

    def __contains__(self, tag: object) -> bool:
        return tag in self.modules

    def __iter__(self) -> Iterator[ModuleInfo]:
        return iter(self.modules.values())

    def __len__(self) -> int:
        return len(self.modules)

    def tag_of(self, module_name: str) -> str | None:
        """Tag for a dotted module name, or None when the name is not a module."""
        return self.name_to_tag.get(module_name)

    def is_alias(self, module_name: str) -> bool:
        """Whether ``module_name`` is a second name of a module object (or lies below one):
        a module registered under two names (``a.s`` and ``b.inner``) has one tag, its
        first name's, and the other name maps to that tag from outside its dotted name."""
        info = self.modules.get(self.name_to_tag.get(module_name, ""))
        return info is not None and not name_within(module_name, info.name)

    def alias_roots(self) -> dict[str, list[str]]:
        """Tag -> the other names its module object is registered under (not the names
        below them, which the aliases of its filtered-out children are)."""
        found: dict[str, list[str]] = {}
        for name, tag in self.name_to_tag.items():
            if self.is_alias(name):
                found.setdefault(tag, []).append(name)
        return {
            tag: [n for n in names if not any(m != n and name_within(n, m) for m in names)]
            for tag, names in found.items()
        }

    def to_json_dict(self) -> dict:
        return {
            "schema": SCHEMA_VERSION,
            "filter": self.filter_config,
            # A shallow copy of each module's fields: asdict's deep copy cost more than the
            # JSON encoding (hierarchies are attached once per extraction).
            "modules": [dict(vars(info)) for info in self.modules.values()],
            "names": self.name_to_tag,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), sort_keys=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Hierarchy:
        """Read :meth:`to_json`'s text; text that is not such a hierarchy (a damaged
        file) raises GraphtagError saying so."""
        try:
            data = json.loads(text)
            fields = {f.name for f in dataclasses.fields(ModuleInfo)}
            modules = {}
            for entry in data["modules"]:
                info = ModuleInfo(**{k: v for k, v in entry.items() if k in fields})
                if not isinstance(info.tag, str):
                    raise TypeError(f"a module's tag is {type(info.tag).__name__}")
                modules[info.tag] = info
            return cls(modules, dict(data.get("names", {})), dict(data.get("filter", {})))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # json.JSONDecodeError is a ValueError; the others: JSON of the wrong shape.
            raise GraphtagError(
                f"unreadable {metadata.HIERARCHY} (the module hierarchy stored in the "
                f"model): {type(exc).__name__}: {exc}"
            ) from exc

    @classmethod
    def from_model(cls, model: ir.Model) -> Hierarchy | None:
        """The hierarchy stored in the model's metadata, or None when there is none."""
        text = model.metadata_props.get(metadata.HIERARCHY)
        return cls.from_json(text) if text else None

    def attach(self, model: ir.Model) -> None:
        model.metadata_props[metadata.HIERARCHY] = self.to_json()
