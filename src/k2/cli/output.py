"""Rendering Arrow tables for the terminal (Rich), CSV or JSON."""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import sys
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from k2.errors import OutputError

if TYPE_CHECKING:  # every command imports this module; only those that print rows need pyarrow (~0.15 s)
    import pyarrow as pa

console = Console(stderr=True)
TABLE_ROWS = 100  # rows the table view shows unless --limit asks for more


class OutputFormat(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"
    PARQUET = "parquet"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")  # all K2 times are UTC
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    return str(value)


def _json_value(value: object) -> object:
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, Decimal):
        return str(value.normalize())  # exact: no float rounding of prices
    return value


def render(
    table: pa.Table, fmt: OutputFormat, title: str | None = None, max_rows: int = TABLE_ROWS, total: int | None = None
) -> None:
    """CSV and JSON get every row of `table`; the table view shows the first `max_rows` and says how many there are
    in all (`total`, when the query fetched only the first rows)."""
    if fmt is OutputFormat.PARQUET:
        _write_parquet(table)
        return
    if fmt is OutputFormat.CSV:
        import pyarrow.csv as pacsv

        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer)
        sys.stdout.write(buffer.getvalue().decode())
        return
    if fmt is OutputFormat.JSON:
        for row in table.to_pylist():
            sys.stdout.write(json.dumps({k: _json_value(v) for k, v in row.items()}))
            sys.stdout.write("\n")
        return
    from pyarrow import types as pa_types

    right = [pa_types.is_integer(field.type) or pa_types.is_decimal(field.type) for field in table.schema]
    rows = [[_cell(v) for v in row.values()] for row in table.slice(0, max_rows).to_pylist()]
    terminal = sys.stdout.isatty()
    # a terminal wraps what is wider than itself, so Rich fits those tables to it; a file or a pipe keeps every
    # row on one line, whatever its width
    width = shutil.get_terminal_size().columns if terminal else None
    text = box_table(title, table.column_names, right, rows, width, styled=terminal)
    if text is not None:
        sys.stdout.write(text)
    else:  # wider than the screen: Rich shrinks and wraps the columns to fit
        out = Table(title=title, show_lines=False)
        for name, is_right in zip(table.column_names, right, strict=True):
            out.add_column(name, justify="right" if is_right else "left")
        for cells in rows:
            out.add_row(*cells)
        Console().print(out)
    total = table.num_rows if total is None else total
    shown = min(max_rows, table.num_rows)
    if total > shown:
        console.print(f"showing {shown:,} of {total:,} rows (use --limit N, or --format csv|json for all of them)")


def box_table(title: str | None, headers: list[str], right: list[bool], rows: list[list[str]], width: int | None,
              styled: bool = False) -> str | None:
    """The table exactly as Rich's default `Table` draws it when it fits in `width` (None when it does not: the
    caller lets Rich wrap it). Rich's general layout costs ~1.5 ms a row, most of a small query's wall time; this
    is string joins. `styled` adds Rich's bold header and italic title for a terminal."""
    sizes = [max([cell_len(h), *(cell_len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    total = sum(sizes) + 3 * len(sizes) + 1
    if (width is not None and total > width) or (title is not None and cell_len(title) > total):
        return None

    def line(cells: list[str], aligned: list[bool], edge: str, bold: bool = False) -> str:
        padded = []
        for cell, size, is_right in zip(cells, sizes, aligned, strict=True):
            fill = " " * (size - cell_len(cell))
            text = fill + cell if is_right else cell + fill
            padded.append(f"\x1b[1m {text} \x1b[0m" if bold and styled else f" {text} ")
        return edge + edge.join(padded) + edge + "\n"

    def rule(left: str, middle: str, right_end: str, fill: str) -> str:
        return left + middle.join(fill * (size + 2) for size in sizes) + right_end + "\n"

    parts = []
    if title is not None:
        gap = total - cell_len(title)
        centered = " " * (gap // 2) + title + " " * (gap - gap // 2)
        parts.append(f"\x1b[3m{centered}\x1b[0m\n" if styled else centered + "\n")
    parts.append(rule("┏", "┳", "┓", "━"))
    parts.append(line(headers, right, "┃", bold=True))
    parts.append(rule("┡", "╇", "┩", "━"))
    parts.extend(line(cells, right, "│") for cells in rows)
    parts.append(rule("└", "┴", "┘", "─"))
    return "".join(parts)


def _write_parquet(table: pa.Table) -> None:
    """Every row as one Parquet file on stdout (zstd), for `> file.parquet` or a pipe; never onto a terminal."""
    import pyarrow.parquet as pq

    if sys.stdout.isatty():
        raise OutputError(
            "Parquet is binary: redirect it to a file, e.g. `k2 query trades -f parquet > trades.parquet`"
        )
    sys.stdout.flush()
    pq.write_table(table, sys.stdout.buffer, compression="zstd")
    sys.stdout.buffer.flush()
