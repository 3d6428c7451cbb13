"""The FastAPI application: `/v1` routes over one QueryEngine per process, health, metrics, one error body.

Routes are plain `def` functions: FastAPI runs them in its thread pool, so blocking DuckDB and Arrow work never
stalls the event loop; the engine is thread-safe (a DuckDB cursor per query, locked caches).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from k2 import console
from k2.api import errors, ratelimit, watch
from k2.api.auth.guard import Guard, authorize, documented_schemes
from k2.api.cache import ResultCache, shared_cache
from k2.api.routes import account, analytics, health, lake, pipeline, stream, ticks
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
        watch.close(app)
        app.state.engine.close()
        await app.state.limiter.close()

    tracing.enabled()  # set up now, if configured: not inside the first request
    app = FastAPI(
        title="K2 market data API", version="1", lifespan=lifespan, **_without_fastapi_tracing(),
        description="Trades, quotes, bars, VWAP, as-of joins, time travel and replay over K2's Iceberg lake. "
        "Every error has the body {\"error\": {\"code\", \"message\", \"details\"}}. Tables come as JSON, or as "
        "Arrow IPC (Accept: application/vnd.apache.arrow.stream) or Parquet (Accept: application/vnd.apache.parquet).",
    )
    errors.install(app)

    app.add_middleware(Measured)  # type: ignore[arg-type]  # a plain ASGI middleware class

    origins = [o.strip() for o in settings.api_cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET"],
                           allow_headers=["*"], expose_headers=["K2-Next-Cursor", "Retry-After", "RateLimit-Limit",
                                                                  "RateLimit-Remaining", "RateLimit-Reset"])
    app.state.cache = ResultCache(settings.api_cache_mb * 1024 * 1024)
    app.state.shared_cache = shared_cache(settings)
    app.state.guard = Guard(settings)  # here, not at the first request: a misconfiguration stops the start
    ratelimit.install(app, settings)  # app.state.limiter: per-caller token buckets by route class
    for router in (ticks.router, analytics.router, lake.router, stream.router, pipeline.router, account.router):
        app.include_router(router, prefix="/v1", dependencies=[
            *documented_schemes(app.state.guard.enabled), Depends(authorize), Depends(ratelimit.limited)])
    app.include_router(health.router)
    if settings.api_console:
        app.router.routes.extend(console.routes())
    return app


class Measured:
    """Latency and status per route, and the request's server span (the parent of its query spans), as a plain
    ASGI middleware: `@app.middleware("http")` (Starlette's BaseHTTPMiddleware) runs each request through an extra
    task and stream pair, a measured share of a point query's time over HTTP."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method: str = scope["method"]
        status = 500  # unless the app starts a response: an exception went through

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        # the server span is current while the route runs (the task and its worker thread copy the context)
        with tracing.span(method, {"http.request.method": method, "url.path": scope["path"]}, kind="server",
                          parent=tracing.from_http_headers(Headers(scope=scope))) as span:
            try:
                await self.app(scope, receive, sent)
            finally:
                # K2's routes take no path parameters, so a matched route's path is its template; anything
                # unmatched (a scanner's random paths) shares one label value: label values stay bounded
                template = scope["path"] if scope.get("route") is not None else "unmatched"
                _describe(span, method, template, status)
                API_REQUEST_SECONDS.labels(template, method).observe(time.perf_counter() - started)
                API_RESPONSES.labels(template, str(status)).inc()


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
