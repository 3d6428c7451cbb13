"""The web console: static files (HTML, CSS, ES modules and the vendored charting library) that `k2 serve` serves
at `/`. The page talks only to the public `/v1` API, with the caller's own credentials: no back door.

The charting library is TradingView's lightweight-charts from the npm registry, vendored into `static/vendor/` by
`scripts/build-console` (pinned in console/package.json): installing or running K2 needs no Node and no CDN.
"""

from __future__ import annotations

from pathlib import Path

from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

# The page runs only its own scripts and talks only to its own origin: an injected script or a hostile frame
# cannot reach the credentials it holds in memory.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: "
    "blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def _index(_: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)


def routes() -> list[Route | Mount]:
    """`/` (the page) and `/console/…` (its assets)."""
    assets = GZipMiddleware(StaticFiles(directory=STATIC), minimum_size=1024)  # the charting library: 198 → 63 kB
    return [Route("/", _index, methods=["GET", "HEAD"], include_in_schema=False),
            Mount("/console", assets, name="console")]
