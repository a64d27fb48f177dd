"""The command line's tables: graphtag's own layout is rich's, cell for cell.

``render_table`` lays out tables of one-cell characters itself (rich is slow on long tables)
and hands anything else to rich; the two must draw the same table.
"""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from graphtag.cli.tables import _plain_layout, _rich_layout, render_table

# Cells like the ones commands print: tags with '/' and '.', numbers, op lists with
# spaces and commas, runs of blanks, empty cells, and words longer than any column.
_pieces = st.sampled_from(
    ["/", ".", ", ", " ", "  ", "-", "x" * 30, "12.5", "Block.0", " \u00b7 ", "\u00b1", "\u2026"]
)
_cell = st.lists(
    st.one_of(_pieces, st.text(string.ascii_letters + string.digits + " /._-", max_size=12)),
    max_size=8,
).map("".join)


@st.composite
def _tables(draw):
    columns = draw(st.integers(1, 6))
    headers = draw(st.lists(_cell, min_size=columns, max_size=columns))
    rows = draw(st.lists(st.lists(_cell, min_size=columns, max_size=columns), max_size=6))
    align = draw(st.text("lr", min_size=columns, max_size=columns))
    width = draw(st.integers(columns * 3, 140))
    return [headers, *rows], align, width


@settings(max_examples=300, deadline=None)
@given(_tables())
def test_own_layout_is_rich_s(table):
    cells, align, width = table
    mine = _plain_layout(cells, align, width)
    if mine is not None:
        assert mine == _rich_layout(cells, align, width)


def test_own_layout_is_used_for_plain_text_and_rich_for_the_rest():
    cells = [["module", "ms"], ["/Model/Encoder/Layer.0/Attention", "1.25"]]
    assert _plain_layout(cells, "lr", 30) is not None
    wide = [["module", "ms"], ["/Model/注意力", "1.25"]]  # wide characters: rich measures
    assert _plain_layout(wide, "lr", 30) is None
    assert render_table(wide[0], wide[1:], align="lr", width=30) == _rich_layout(wide, "lr", 30)


def test_long_cells_wrap_inside_their_column():
    tag = "/GPT2Model/GPT2Block.0/GPT2Attention/Conv1D.0/Linear"
    text = render_table(["module", "self ms", "ops"], [[tag, "12.3", "MatMul 3, Add 2"]],
                        align="lrl", width=40)  # fmt: skip
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 40
    assert lines[1].startswith("-")
    assert "".join(line.split()[0] for line in lines[2:] if line.startswith("/") or
                   not line.startswith(" ")) .startswith("/GPT2Model")  # fmt: skip
