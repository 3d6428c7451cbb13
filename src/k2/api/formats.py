"""Tables out as JSON (the default), Arrow IPC or Parquet, chosen by the request's Accept header."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pyarrow as pa
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


def answer(request: Request, table: pa.Table, next_cursor: str | None = None) -> Response | dict[str, Any]:
    """The table in the format asked for; JSON as {"data": [...], "next_cursor": ...} (validated by the route's
    response model)."""
    media_type = wanted(request)
    if media_type != "application/json":
        return binary(table, media_type, next_cursor)
    return {"data": table.to_pylist(), "next_cursor": next_cursor}
