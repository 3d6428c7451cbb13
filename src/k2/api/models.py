"""Response models, derived from the Arrow schemas (themselves derived from the Avro schemas: schema-first), so
that the OpenAPI document and the JSON bodies always match what the engine returns."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from functools import cache
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, create_model


def _python_type(kind: pa.DataType) -> Any:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        return str
    if pa.types.is_integer(kind):
        return int
    if pa.types.is_floating(kind):
        return float
    if pa.types.is_decimal(kind):
        return Decimal
    if pa.types.is_timestamp(kind):
        return dt.datetime
    if pa.types.is_date(kind):
        return dt.date
    if pa.types.is_boolean(kind):
        return bool
    raise TypeError(f"no JSON type for {kind}")


@cache
def row_model(name: str, schema: pa.Schema) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for field in schema:
        kind = _python_type(field.type)
        fields[field.name] = (kind | None, None) if field.nullable else (kind, ...)
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


@cache
def page_model(name: str, schema: pa.Schema) -> type[BaseModel]:
    """{"data": [rows], "next_cursor": token or null}."""
    row = row_model(name, schema)
    return create_model(f"{name}Page", data=(list[row], ...), next_cursor=(str | None, None))  # type: ignore[valid-type]


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


# The error answers every /v1 route can give, all with the one error body (422 replaces FastAPI's own
# {"detail": [...]} schema, which K2 never sends).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The request cannot be answered as asked (a range too long, a bad "
          "interval or speed, a page token from another query …): the message says how to fix it."},
    401: {"model": ErrorBody, "description": "Authentication is on and the request carries no valid API key or "
          "token (docs/security.md)."},
    403: {"model": ErrorBody, "description": "The caller's roles do not grant what the request reads: "
          "`details.missing` names the entitlement (a dataset, or symbols)."},
    404: {"model": ErrorBody, "description": "An unknown symbol (the message names close ones) or snapshot."},
    422: {"model": ErrorBody, "description": "A parameter is malformed or out of bounds: `details` lists each one "
          "(`where`, `problem`)."},
    429: {"model": ErrorBody, "description": "Over the caller's rate limit for this route class (point, analytics, "
          "ticks, stream): `Retry-After` says when to retry (docs/security.md, Rate limits).",
          "headers": {name: {"description": text, "schema": {"type": "integer", "minimum": low}}
                      for name, text, low in (("Retry-After", "Seconds until the request would be served.", 1),
                                              ("RateLimit-Limit", "Requests the caller's bucket holds.", 1),
                                              ("RateLimit-Remaining", "Requests left now (0).", 0),
                                              ("RateLimit-Reset", "Seconds until the bucket is full again.", 1))}},
    500: {"model": ErrorBody, "description": "An unexpected failure: the details are in the server's log, never in "
          "the answer."},
    503: {"model": ErrorBody, "description": "The lake's catalog cannot be read (or K2 is misconfigured): retry "
          "later."},
}
