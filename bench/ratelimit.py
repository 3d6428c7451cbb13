"""What a rate-limit check costs a request, in-process: `limited` (the dependency every /v1 route runs after
`authorize`: one token spent, the RateLimit-* fields computed) and the `Headers` middleware that puts them on the
answer, with in-process counters (the default); with `--redis-url`, counters in that Redis (a round trip each).

    .venv/bin/python bench/ratelimit.py --requests 200000 [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request

from k2.api import ratelimit
from k2.api.auth.guard import ANONYMOUS, Caller
from k2.api.auth.roles import Entitlements
from k2.settings import Settings


def _request(app: FastAPI, client: str) -> Request:
    return Request({"type": "http", "path": "/v1/trades/last", "app": app, "client": (client, 40000), "headers": []})


async def _per_request(app: FastAPI, requests: int, callers: int, anonymous: bool) -> float:
    """Microseconds per `limited` call, `callers` different callers in turn (each its own bucket)."""
    who = [ANONYMOUS if anonymous else Caller(f"key:{i:012x}", "key", Entitlements(unrestricted=True))
           for i in range(callers)]
    scopes = [_request(app, f"10.0.{i // 256 % 256}.{i % 256}") for i in range(callers)]
    started = time.perf_counter()
    for n in range(requests):
        await ratelimit.limited(scopes[n % callers], who[n % callers])
    return (time.perf_counter() - started) / requests * 1e6


async def _middleware(requests: int, wrapped: bool) -> float:
    async def route(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b""})

    async def send(_: Any) -> None:
        pass

    app = ratelimit.Headers(route) if wrapped else route
    fields = [(b"ratelimit-limit", b"2000"), (b"ratelimit-remaining", b"1999"), (b"ratelimit-reset", b"1")]
    started = time.perf_counter()
    for _ in range(requests):
        await app({"type": "http", "path": "/v1/trades/last", "k2.ratelimit.headers": fields}, None, send)
    return (time.perf_counter() - started) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--redis-url", default="", help="also measure counters in this Redis (keys k2:ratelimit:*)")
    args = parser.parse_args()
    # limits no run reaches: every request is admitted, the common case
    app = FastAPI()
    ratelimit.install(app, Settings(api_rate_point="1000000/s"))
    for callers, anonymous in ((1, False), (10_000, False), (10_000, True)):
        cost = asyncio.run(_per_request(app, args.requests, callers, anonymous))
        print(f"limited(), {callers:>6} {'addresses' if anonymous else 'API keys'}: {cost:6.2f} µs per request")
    if args.redis_url:
        shared = FastAPI()
        ratelimit.install(shared, Settings(api_rate_point="1000000/s", redis_url=args.redis_url))
        cost = asyncio.run(_per_request(shared, args.requests // 20, 1_000, False))
        print(f"limited(), Redis, {1_000:>6} API keys: {cost:6.2f} µs per request (sequential round trips)")
    bare, wrapped = (asyncio.run(_middleware(args.requests, w)) for w in (False, True))
    print(f"Headers middleware: {wrapped - bare:6.2f} µs per request ({bare:.2f} µs without, {wrapped:.2f} with)")


if __name__ == "__main__":
    main()
