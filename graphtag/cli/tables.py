"""Tables for the command line: one look for every command, and the same data as JSON/CSV.

The conventions every command follows (documented in ARCHITECTURE.md):

* a command that prints a table takes ``--format`` (:func:`add_format_option`):
  ``table`` (the default, for people), ``json`` and ``csv`` (all of the data, for
  programs; nothing else on stdout);
* tables are drawn by :func:`render_table` in ``rich``'s layout: they fit the terminal's
  width (``COLUMNS`` overrides it; 80 when the output is not a terminal), long cells wrap
  inside their column instead of widening the table; the text of a cell is shown as
  is (no markup, no colour);
* :func:`emit` prints one table in the format asked for; a command with more to say
  than one table builds its JSON itself (``validate``, ``analyze``, ``verify``);
* progress and notes go to stderr, results to stdout;
* nothing heavy is imported at module level (``rich`` is imported only for a table of
  wide characters), so ``graphtag COMMAND --help`` stays instant.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import re
import shutil
from collections.abc import Sequence

FORMATS = ("table", "json", "csv")


def add_format_option(
    parser: argparse.ArgumentParser, *, choices: Sequence[str] = FORMATS, default: str = "table"
) -> None:
    """``--format`` with the usual choices (a command may add its own, e.g. ``summary``)."""
    parser.add_argument(
        "--format",
        choices=tuple(choices),
        default=default,
        help="table (default: fits the terminal), or all of the data as json or csv",
    )


def terminal_width() -> int:
    """Columns available: the terminal's, ``COLUMNS`` when set, else 80."""
    return max(40, shutil.get_terminal_size((80, 24)).columns)


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    align: str = "",
    width: int | None = None,
) -> str:
    """Rows under headers, fitted to ``width`` (default: the terminal); ``align`` holds one
    'l' or 'r' per column (default 'l'). Long cells wrap inside their column."""
    cells = [[str(h) for h in headers]]
    cells += [["" if cell is None else str(cell) for cell in row] for row in rows]
    align = align.ljust(len(headers), "l")
    width = width or terminal_width()
    return _plain_layout(cells, align, width) or _rich_layout(cells, align, width)


def _rich_layout(cells: list[list[str]], align: str, width: int) -> str:
    """The table drawn by rich (any text: wide characters, tabs, line breaks)."""
    from rich.box import Box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    rule_under_header = Box("    \n    \n -  \n    \n    \n    \n    \n    \n", ascii=True)
    table = Table(
        box=rule_under_header,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    for header, side in zip(cells[0], align):
        table.add_column(Text(header), justify="right" if side == "r" else "left", overflow="fold")
    for row in cells[1:]:
        table.add_row(*(Text(cell) for cell in row))
    out = io.StringIO()
    console = Console(
        file=out,
        width=width,
        color_system=None,
        highlight=False,
        emoji=False,
        markup=False,
        soft_wrap=False,
    )
    console.print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


# -- the same layout without rich ------------------------------------------------------
# rich spends ~3 ms a row measuring and wrapping (0.7-1 s for a 250-module profile, more
# than graphtag's own work). For text of one cell per character the layout below is rich's, step by
# step (column widths: Table._calculate_column_widths and _collapse_widths; wrapping:
# rich._wrap.divide_line with overflow "fold"); tests/test_tables.py checks it against
# rich on generated tables. Anything else goes to rich.

_WORD = re.compile(r"\s*\S+\s*")


def _plain_layout(cells: list[list[str]], align: str, width: int) -> str | None:
    n = len(cells[0])
    if n == 0 or any(len(row) != n for row in cells):
        return None
    if not all(_one_cell_per_character(cell) for row in cells for cell in row):
        return None
    pads = [1] * (n - 1) + [0]  # pad_edge off: no padding left of the first column or
    available = width - (n - 1)  # right of the last; one divider between columns
    if available < 1:
        return None
    natural = [min(max(len(row[i]) for row in cells) + pads[i], available) for i in range(n)]
    widths = [w or 1 for w in natural]
    if sum(widths) > available:
        widths = _collapse(widths, available)
        if sum(widths) > available:
            widths = _ratio_reduce(sum(widths) - available, [1] * n, widths, widths)
        widths = [min(w, nat) for w, nat in zip(widths, natural)]
    if any(w - pad < 1 for w, pad in zip(widths, pads)):
        return None
    lines: list[str] = []
    for index, row in enumerate(cells):
        wrapped = [
            _wrap_cell(cell, w - pad, side == "r")
            for cell, w, pad, side in zip(row, widths, pads, align)
        ]
        height = max(len(c) for c in wrapped)
        if index == 0:  # rich aligns the header row to its bottom line, others to the top
            wrapped = [[""] * (height - len(c)) + c for c in wrapped]
        for k in range(height):
            parts = [
                (c[k] if k < len(c) else "").ljust(w - pad) + " " * pad
                for c, w, pad in zip(wrapped, widths, pads)
            ]
            lines.append(" ".join(parts).rstrip())
        if index == 0:
            lines.append(" ".join("-" * w for w in widths))
    return "\n".join(lines)


def _one_cell_per_character(text: str) -> bool:
    """Printable text every character of which takes one terminal cell (no wide or
    combining characters, which only rich measures)."""
    if text.isascii():
        return text.isprintable()
    from rich.cells import get_character_cell_size

    return text.isprintable() and all(get_character_cell_size(c) == 1 for c in set(text))


def _collapse(widths: list[int], available: int) -> list[int]:
    """Narrow the widest columns towards the next widest until the table fits."""
    excess = sum(widths) - available
    while excess > 0:
        widest = max(widths)
        second = max((w for w in widths if w != widest), default=0)
        if widest == second:
            break
        ratios = [1 if w == widest else 0 for w in widths]
        widths = _ratio_reduce(excess, ratios, [min(excess, widest - second)] * len(widths), widths)
        excess = sum(widths) - available
    return widths


def _ratio_reduce(total: int, ratios: list[int], most: list[int], values: list[int]) -> list[int]:
    ratios = [r if m else 0 for r, m in zip(ratios, most)]
    left, share = total, sum(ratios)
    result = []
    for ratio, maximum, value in zip(ratios, most, values):
        if ratio and share > 0:
            cut = min(maximum, round(ratio * left / share))
            result.append(value - cut)
            left -= cut
            share -= ratio
        else:
            result.append(value)
    return result


def _wrap_cell(text: str, width: int, right: bool) -> list[str]:
    """Word-wrap ``text`` to ``width``, folding words longer than a line."""
    if len(text) <= width:  # most cells: one line, no break (the loop below agrees)
        return [text.rstrip().rjust(width) if right else text]
    breaks: list[int] = []
    used = 0
    for match in _WORD.finditer(text):
        start, word = match.start(), match.group()
        length = len(word.rstrip())
        if width - used >= length:
            used += len(word)
        elif length > width:
            chunks = [word[i : i + width] for i in range(0, len(word), width)]
            for chunk in chunks:
                if start:
                    breaks.append(start)
                start += len(chunk)
            used = len(chunks[-1])
        elif used and start:
            breaks.append(start)
            used = len(word)
    bounds = [0, *breaks, len(text)]
    lines = []
    for a, b in itertools.pairwise(bounds):
        line = text[a:b]
        if len(line) > width:  # trailing blanks past the edge are dropped
            line = line[: max(width, len(line.rstrip()))]
        line = line.rstrip()[:width].rjust(width) if right else line[:width]
        lines.append(line)
    return lines


def render_csv(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(["" if c is None else c for c in row] for row in rows)
    return out.getvalue().rstrip("\n")


def rows_as_dicts(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> list[dict]:
    return [dict(zip(headers, row)) for row in rows]


def emit(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    fmt: str,
    *,
    align: str = "",
    json_data: object = None,
) -> None:
    """Print one table as ``fmt``: ``table``, ``csv``, or ``json`` (``json_data`` when
    given, else the rows as objects keyed by header)."""
    if fmt == "json":
        data = rows_as_dicts(headers, rows) if json_data is None else json_data
        print(json.dumps(data, indent=2, default=str))
    elif fmt == "csv":
        print(render_csv(headers, rows))
    else:
        print(render_table(headers, rows, align=align))
