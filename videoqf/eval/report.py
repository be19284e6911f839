"""Metric tables: Markdown for benchmarks/RESULTS.md and a readable block for the terminal.

A Markdown pipe table (GitHub-flavoured) is both: its columns are padded so it lines up in a terminal.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence


def _cell(value: object, precision: int) -> str:
    if isinstance(value, float):
        text = f"{value:.{precision}f}"
    else:
        text = str(value)
    # a pipe would end the cell early; a newline would end the row
    return text.replace("|", "\\|").replace("\n", " ")


def format_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str], *, precision: int = 4) -> str:
    """A Markdown table of ``rows`` with one column per key in ``columns``, in that order.

    Floats print with ``precision`` decimals; numeric columns are right-aligned. A row without one of
    the columns is an error (naming the row and the column), never an empty cell.
    """
    if not columns:
        raise ValueError("format_table needs at least one column")
    for index, row in enumerate(rows):
        missing = [name for name in columns if name not in row]
        if missing:
            raise KeyError(f"row {index} has no column(s) {missing}; it has {sorted(row)}")
    cells = [[_cell(row[name], precision) for name in columns] for row in rows]
    numeric = [
        bool(rows) and all(isinstance(row[name], (int, float)) and not isinstance(row[name], bool) for row in rows)
        for name in columns
    ]
    widths = [max([len(name), 3, *(len(line[i]) for line in cells)]) for i, name in enumerate(columns)]

    def line(parts: Sequence[str]) -> str:
        padded = [p.rjust(w) if num else p.ljust(w) for p, w, num in zip(parts, widths, numeric)]
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join("-" * (w - 1) + ":" if num else "-" * w for w, num in zip(widths, numeric)) + " |"
    return "\n".join([line(list(columns)), rule, *(line(c) for c in cells)])


def format_metrics(metrics: Mapping[str, object], *, precision: int = 4) -> str:
    """A two-column table (metric, value) of a metrics dict, in the dict's order, for the terminal."""
    if not metrics:
        raise ValueError("format_metrics got an empty metrics dict")
    rows = [{"metric": name, "value": value} for name, value in metrics.items()]
    return format_table(rows, ["metric", "value"], precision=precision)
