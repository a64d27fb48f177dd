"""Plain-text tables for terminal output."""

from __future__ import annotations

from collections.abc import Sequence


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, align: str = ""
) -> str:
    """Render rows under headers; ``align`` holds one 'l' or 'r' per column (default 'l')."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    align = align.ljust(len(headers), "l")

    def fmt(row: list[str]) -> str:
        parts = [
            cell.rjust(w) if a == "r" else cell.ljust(w) for cell, w, a in zip(row, widths, align)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(cells[0]), rule, *(fmt(r) for r in cells[1:])])
