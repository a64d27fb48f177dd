"""Tables for the command line: one look for every command, and the same data as JSON/CSV.

The conventions every command follows (documented in ARCHITECTURE.md):

* a command that prints a table takes ``--format`` (:func:`add_format_option`):
  ``table`` (the default, for people), ``json`` and ``csv`` (all of the data, for
  programs; nothing else on stdout);
* tables are drawn by :func:`render_table` with ``rich``: they fit the terminal's width
  (``COLUMNS`` overrides it; 80 when the output is not a terminal) and long cells wrap
  inside their column instead of widening the table; the text of a cell is shown as
  is (no markup, no colour);
* :func:`emit` prints one table in the format asked for; a command with more to say
  than one table builds its JSON itself (``validate``, ``analyze``, ``verify``);
* progress and notes go to stderr, results to stdout;
* nothing heavy is imported at module level (``rich`` is imported when a table is
  drawn), so ``graphtag COMMAND --help`` stays instant.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
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
    align = align.ljust(len(headers), "l")
    for header, side in zip(headers, align):
        table.add_column(
            Text(str(header)), justify="right" if side == "r" else "left", overflow="fold"
        )
    for row in rows:
        table.add_row(*(Text("" if cell is None else str(cell)) for cell in row))
    out = io.StringIO()
    console = Console(
        file=out,
        width=width or terminal_width(),
        color_system=None,
        highlight=False,
        emoji=False,
        markup=False,
        soft_wrap=False,
    )
    console.print(table)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


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
