"""Rendering Arrow tables for the terminal (Rich), CSV or JSON."""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

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

    out = Table(title=title, show_lines=False)
    for name in table.column_names:
        out.add_column(name, justify="right" if pa_types.is_integer(table.schema.field(name).type)
                       or pa_types.is_decimal(table.schema.field(name).type) else "left")
    for row in table.slice(0, max_rows).to_pylist():
        out.add_row(*(_cell(v) for v in row.values()))
    (Console() if sys.stdout.isatty() else Console(width=160)).print(out)
    total = table.num_rows if total is None else total
    shown = min(max_rows, table.num_rows)
    if total > shown:
        console.print(f"showing {shown:,} of {total:,} rows (use --limit N, or --format csv|json for all of them)")


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
