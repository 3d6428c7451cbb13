"""One error body everywhere — `{"error": {"code", "message", "details"}}` — with the right status, and never a stack
trace sent to a client (unexpected errors are logged server-side and answered with a 500 that says only that)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from k2.errors import (
    CatalogError,
    ConfigError,
    ConflictError,
    InputError,
    K2Error,
    QueryError,
    SnapshotNotFoundError,
    UnknownSymbolError,
)

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.headers = headers


def body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


# most specific first
_K2_ERRORS: list[tuple[type[K2Error], int, str]] = [
    (UnknownSymbolError, 404, "unknown_symbol"),
    (SnapshotNotFoundError, 404, "snapshot_not_found"),
    (QueryError, 400, "bad_query"),
    (ConflictError, 409, "conflict"),
    (InputError, 400, "bad_input"),
    (CatalogError, 503, "catalog_unavailable"),
    (ConfigError, 503, "misconfigured"),
]


def status_of(error: K2Error) -> tuple[int, str]:
    for kind, status, code in _K2_ERRORS:
        if isinstance(error, kind):
            return status, code
    return 500, "internal_error"


# how to write a value of each kind that pydantic could not read
_HINTS = {
    "datetime": "write it in ISO-8601, e.g. 2026-03-02T14:30:00Z or 2026-03-02 (no zone = UTC)",
    "date": "write it in ISO-8601, e.g. 2026-03-02",
    "int": "write a whole number",
}


def _problem(error: Any) -> str:
    message = str(error.get("msg", ""))
    message = message.removeprefix("Value error, ")  # K2's own validators' messages stand alone
    kind = str(error.get("type", "")).split("_")[0]
    return f"{message}: {_HINTS[kind]}" if kind in _HINTS else message


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(body(exc.code, exc.message, exc.details), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(K2Error)
    async def k2_error(_: Request, exc: K2Error) -> JSONResponse:
        status, code = status_of(exc)
        if status >= 500:
            log.warning("request failed: %s", exc)
        return JSONResponse(body(code, str(exc)), status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"where": ".".join(str(p) for p in e.get("loc", ())), "problem": _problem(e)}
                    for e in exc.errors()]
        summary = "; ".join(f"{p['where']}: {p['problem']}" for p in problems[:5])
        return JSONResponse(body("invalid_request", f"the request is not valid: {summary}", problems),
                            status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status_code, "http_error")
        return JSONResponse(body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error serving a request")
        return JSONResponse(body("internal_error", "the server failed to answer; the error is in its log"),
                            status_code=500)
