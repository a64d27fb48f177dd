"""Tag helpers of graphtag.core.hierarchy against references written here from the
README's definition (a tag is '/' plus non-empty segments; ancestry is a segment
prefix), over every pair of a small set of tags, and the stored hierarchy's JSON."""

from __future__ import annotations

import itertools
import json

import onnx_ir as ir
import pytest

from graphtag.core import metadata
from graphtag.core.hierarchy import (
    Hierarchy,
    ModuleInfo,
    is_ancestor_or_self,
    is_valid_tag,
    tag_lca,
    tag_parent,
    tag_segments,
)

TAGS = ["/M", "/M/A", "/M/A/X", "/M/A/Y", "/M/AB", "/M/B/X", "/N", "/M/A/X/Z.0"]


def _segments(tag: str) -> list[str]:
    assert tag.startswith("/")
    return tag.split("/")[1:]


def _prefix_lca(tags: list[str]) -> str | None:
    common = None
    for segs in map(_segments, tags):
        if common is None:
            common = segs
        else:
            n = 0
            while n < min(len(common), len(segs)) and common[n] == segs[n]:
                n += 1
            common = common[:n]
    return "/" + "/".join(common) if common else None


@pytest.mark.parametrize(
    ("tag", "valid"),
    [
        ("/M", True),
        ("/M/A.0", True),
        ("/", False),
        ("", False),
        ("M", False),
        ("M/A", False),
        ("/M//A", False),
        ("/M/", False),
        ("//M", False),
    ],
)
def test_is_valid_tag(tag, valid):
    assert is_valid_tag(tag) is valid


def test_segments_and_parent():
    for tag in TAGS:
        assert tag_segments(tag) == _segments(tag)
        segs = _segments(tag)
        assert tag_parent(tag) == ("/" + "/".join(segs[:-1]) if len(segs) > 1 else None)
    assert tag_segments("") == []


def test_ancestry_is_a_segment_prefix():
    for a, b in itertools.product(TAGS, repeat=2):
        want = _segments(b)[: len(_segments(a))] == _segments(a)
        assert is_ancestor_or_self(a, b) is want, (a, b)
    assert not is_ancestor_or_self("/M/A", "/M/AB")  # a string prefix is not enough


def test_lca_of_every_pair_and_triple():
    assert tag_lca([]) is None
    for n in (1, 2, 3):
        for group in itertools.permutations(TAGS, n):
            assert tag_lca(group) == _prefix_lca(list(group)), group
    assert tag_lca(iter(["/M/A/X", "/M/A/Y"])) == "/M/A"  # any iterable, read once


def _hierarchy() -> Hierarchy:
    root = ModuleInfo("/M", "", "pkg.M", children={"a": "pkg.A"}, executed=True)
    child = ModuleInfo("/M/A", "a", "pkg.A", parent="/M", parameters=["a.w"], executed=False)
    return Hierarchy({"/M": root, "/M/A": child}, {"": "/M", "a": "/M/A", "a.lin": "/M/A"})


def test_json_round_trip_and_schema():
    h = _hierarchy()
    data = json.loads(h.to_json())
    # The stored format (read by other tools and by older graphtag versions): schema 1.
    assert data["schema"] == 1
    assert [m["tag"] for m in data["modules"]] == ["/M", "/M/A"]
    back = Hierarchy.from_json(h.to_json())
    assert back == h and back.root == "/M" and len(back) == 2 and "/M/A" in back
    assert "/M/B" not in back and [i.tag for i in back] == ["/M", "/M/A"]
    assert back.tag_of("a.lin") == "/M/A" and back.tag_of("nope") is None
    # Unknown fields (a newer writer) are ignored; missing optional ones default.
    data["modules"][1]["future_field"] = 1
    del data["names"], data["filter"]
    newer = Hierarchy.from_json(json.dumps(data))
    assert newer.modules == h.modules and newer.name_to_tag == {} and newer.filter_config == {}


def test_attach_and_from_model():
    model = ir.Model(ir.Graph([], [], nodes=[], opset_imports={"": 21}), ir_version=10)
    assert Hierarchy.from_model(model) is None
    h = _hierarchy()
    h.attach(model)
    assert model.metadata_props[metadata.HIERARCHY] == h.to_json()
    assert Hierarchy.from_model(model) == h
