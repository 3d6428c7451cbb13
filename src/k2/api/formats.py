"""Tables out as JSON (the default), Arrow IPC or Parquet, chosen by the request's Accept header."""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from fastapi import Request
from fastapi.responses import Response

ARROW = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"
NEXT_CURSOR_HEADER = "K2-Next-Cursor"


def table_responses(paged: bool = False) -> dict[int | str, dict[str, Any]]:
    """What the OpenAPI document says of a table route's 200 besides its JSON model: the binary formats (and, for
    paged routes, the header that carries the next page's token with them)."""
    binary_body = {"schema": {"type": "string", "format": "binary"}}
    ok: dict[str, Any] = {"content": {ARROW: binary_body, PARQUET: binary_body}}
    if paged:
        ok["headers"] = {NEXT_CURSOR_HEADER: {"description": "With Arrow or Parquet: the next page's token (JSON "
                                              "has it as `next_cursor`).", "schema": {"type": "string"}}}
    return {200: ok}


def wanted(request: Request) -> str:
    accept = request.headers.get("accept", "")
    if ARROW in accept:
        return ARROW
    if PARQUET in accept or "application/x-parquet" in accept:
        return PARQUET
    return "application/json"


def binary(table: pa.Table, media_type: str, next_cursor: str | None = None) -> Response:
    sink = pa.BufferOutputStream()
    if media_type == ARROW:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, sink, compression="zstd")
    headers = {NEXT_CURSOR_HEADER: next_cursor} if next_cursor else {}
    return Response(sink.getvalue().to_pybytes(), media_type=media_type, headers=headers)


def rows(table: pa.Table) -> list[dict[str, Any]]:
    """JSON-ready rows: decimals as strings (exact), times and dates in ISO-8601."""
    return [{k: _json(v) for k, v in row.items()} for row in table.to_pylist()]


def _json(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def answer(request: Request, table: pa.Table, next_cursor: str | None = None) -> Response:
    """The table in the format asked for; JSON as {"data": [...], "next_cursor": ...}."""
    media_type = wanted(request)
    if media_type != "application/json":
        return binary(table, media_type, next_cursor)
    return Response(json_body(table, next_cursor), media_type="application/json")


def json_body(table: pa.Table, next_cursor: str | None = None) -> bytes:
    """{"data": [rows], "next_cursor": …} encoded column-wise (Arrow casts, then polars' encoder), not row by row
    through Python objects and the response model, which cost ~4x as much on a day of bars. The bytes are the
    ones the route's response model would produce (tests/test_api.py compares them table by table)."""
    if table.num_rows <= SMALL_ROWS:  # a point answer: the column-wise path's fixed cost (~0.3 ms) would dominate
        rows = json.dumps([{k: _json_value(v) for k, v in row.items()} for row in table.to_pylist()],
                          separators=(",", ":"), ensure_ascii=False)
    else:
        rows = pl.from_arrow(_json_ready(table)).write_json()  # type: ignore[union-attr]
    return b'{"data":' + rows.encode() + b',"next_cursor":' + json.dumps(next_cursor).encode() + b"}"


SMALL_ROWS = 64


def _json_value(value: object) -> object:
    """One value as the response models write it (see _json_column for the column-wise twin)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.isoformat()
        return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat() + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_ready(table: pa.Table) -> pa.Table:
    """Columns as the response models write them: decimals as exact strings, times as ISO-8601 UTC with a `Z` (the
    fraction only when there is one), dates as ISO-8601, dictionaries as plain strings, non-finite floats as null."""
    return pa.table([_json_column(column) for column in table.columns], names=table.column_names)


def _json_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    kind = column.type
    if pa.types.is_dictionary(kind):
        return column.cast(kind.value_type)
    if pa.types.is_decimal(kind) or pa.types.is_date(kind):
        return column.cast(pa.string())
    if pa.types.is_timestamp(kind):  # as Python's datetime (microseconds), in UTC when it has a zone
        micros = pc.cast(column, pa.timestamp("us", "UTC" if kind.tz else None), safe=False)
        text = pc.strftime(micros, format="%Y-%m-%dT%H:%M:%S")  # %S carries the six sub-second digits
        text = pc.replace_substring_regex(text, r"\.0+$", "")
        return pc.binary_join_element_wise(text, "Z", "") if kind.tz else text
    if pa.types.is_floating(kind):
        return pc.if_else(pc.is_finite(column), column, pa.scalar(None, kind))
    return column
