"""The FastAPI application: `/v1` routes over one QueryEngine per process, health, metrics, one error body.

Routes are plain `def` functions: FastAPI runs them in its thread pool, so blocking DuckDB and Arrow work never
stalls the event loop; the engine is thread-safe (a DuckDB cursor per query, locked caches).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware

from k2.api import errors
from k2.api.routes import analytics, health, lake, stream, ticks
from k2.obs import tracing
from k2.obs.metrics import API_REQUEST_SECONDS, API_RESPONSES
from k2.query.engine import QueryEngine
from k2.settings import Settings, get_settings


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.engine = QueryEngine(settings)
        yield
        app.state.engine.close()

    tracing.enabled()  # set up now, if configured: not inside the first request
    app = FastAPI(
        title="K2 market data API", version="1", lifespan=lifespan, **_without_fastapi_tracing(),
        description="Trades, quotes, bars, VWAP, as-of joins, time travel and replay over K2's Iceberg lake. "
        "Every error has the body {\"error\": {\"code\", \"message\", \"details\"}}. Tables come as JSON, or as "
        "Arrow IPC (Accept: application/vnd.apache.arrow.stream) or Parquet (Accept: application/vnd.apache.parquet).",
    )
    errors.install(app)

    @app.middleware("http")
    async def measured(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        # the server span is current while the route runs (the task and its worker thread copy the context):
        # the query's span is its child
        with tracing.span(request.method, {"http.request.method": request.method, "url.path": request.url.path},
                          kind="server", parent=tracing.from_http_headers(request.headers)) as span:
            response = await call_next(request)
            # K2's routes take no path parameters, so a matched route's path is its template; anything unmatched (a
            # scanner's random paths) shares one label value: label values stay bounded
            template = request.url.path if request.scope.get("route") is not None else "unmatched"
            _describe(span, request.method, template, response.status_code)
        API_REQUEST_SECONDS.labels(template, request.method).observe(time.perf_counter() - started)
        API_RESPONSES.labels(template, str(response.status_code)).inc()
        return response

    origins = [o.strip() for o in settings.api_cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET"],
                           allow_headers=["*"], expose_headers=["K2-Next-Cursor"])
    for router in (ticks.router, analytics.router, lake.router, stream.router):
        app.include_router(router, prefix="/v1")
    app.include_router(health.router)
    return app


def _without_fastapi_tracing() -> dict[str, Any]:
    """Newer FastAPI traces requests itself once a tracer provider is set: a second server span beside the one of
    K2's middleware, which stays (the same span names and attributes, with the query span as its child, whatever the
    FastAPI version)."""
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        return {"telemetry": {"tracing": False}}
    return {}


def _describe(span: tracing.Span, method: str, template: str, status: int) -> None:
    """Name and attributes of a request's span, as OpenTelemetry's HTTP conventions have them."""
    if template != "unmatched":
        span.update_name(f"{method} {template}")
        span.set_attribute("http.route", template)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        tracing.set_error(span, str(status))


def app_from_environment() -> FastAPI:
    """The application of a `k2 serve` worker process: settings from its `K2_*` environment."""
    return create_app(get_settings())
