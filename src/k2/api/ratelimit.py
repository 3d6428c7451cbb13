"""Per-caller rate limits by route class: the dependency every `/v1` route runs after `authorize` (docs/security.md,
"Rate limits").

Each caller has a token bucket per route class (point, analytics, ticks, stream — `K2_API_RATE_<CLASS>`). The caller
is its key id or token subject (`Caller.name`) when authentication is on, its IP address when it is off. A request
over the limit gets 429 with `Retry-After` and `RateLimit-Limit`/`-Remaining`/`-Reset` (the IETF draft's names);
admitted answers carry the `RateLimit-*` fields too when the counters are in this process.

The buckets are pyrate-limiter's `TokenBucket`, which is its GCRA: the leaky bucket as a meter, the token bucket's
meter twin. A bucket of `burst` tokens refilling at `limit/period` admits exactly the requests that a meter
draining one unit per `period/limit` and holding `burst` admits, and the meter keeps one number per bucket (the
moment it would be empty) instead of a token count and a refill time: one Redis hash field per caller and class,
updated atomically by the library's Lua script. With `K2_REDIS_URL` the counters are in Redis and every worker
process (every host) shares them; without, each worker counts for itself (a caller may get the limit once per
worker). If Redis cannot be reached the request is served, not refused (limits are protection, not the service),
and a warning is logged once a minute.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, cast

from cachetools import LRUCache
from fastapi import Depends, FastAPI, Request
from pyrate_limiter import (
    Decision,
    InMemoryStateStore,
    MonotonicClock,
    Rate,
    RedisStateStore,
    StateStore,
    TokenBucket,
    WallClock,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from k2.api.auth.guard import Caller, authorize
from k2.api.errors import ApiError
from k2.errors import InputError
from k2.settings import Settings, parse_rate

log = logging.getLogger(__name__)

# the route class of every /v1 route (a test checks that each route of the app has one)
ROUTE_CLASSES: dict[str, str] = {
    "/v1/trades/last": "point", "/v1/quotes/last": "point", "/v1/symbols": "point", "/v1/reference": "point",
    "/v1/corporate-actions": "point", "/v1/snapshots": "point", "/v1/quality": "point", "/v1/me": "point",
    "/v1/pipeline/lag": "point", "/v1/pipeline/dead-letters": "point", "/v1/snapshots/tags": "point",
    "/v1/bars": "analytics", "/v1/vwap": "analytics", "/v1/summary": "analytics", "/v1/asof": "analytics",
    "/v1/trades": "ticks", "/v1/quotes": "ticks",
    "/v1/replay": "stream",
}
CLASSES = ("point", "analytics", "ticks", "stream")
MAX_BUCKETS = 100_000  # buckets kept per worker (least recently used first out: its caller starts afresh)
REDIS_TIMEOUT_SECONDS = 0.5
REDIS_RETRY_SECONDS = 5.0  # after Redis failed a request, the next ones are served unlimited this long
_WARN_EVERY_SECONDS = 60.0
_HEADERS = "k2.ratelimit.headers"  # where the dependency leaves an admitted answer's fields for `Headers`


@dataclass(frozen=True)
class Policy:
    """One route class's limit: `rate.limit` requests per `rate.interval` ms, a bucket of `rate.burst`."""

    route_class: str
    text: str
    rate: Rate

    @property
    def emission_ms(self) -> float:
        """Milliseconds for one token to come back."""
        return self.rate.interval / self.rate.limit


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int  # the bucket's size: what Remaining counts down from
    remaining: int
    reset_seconds: int  # until the bucket is full again
    retry_after_seconds: int = 0

    def fields(self) -> list[tuple[bytes, bytes]]:
        return [(b"ratelimit-limit", str(self.limit).encode()), (b"ratelimit-remaining", str(self.remaining).encode()),
                (b"ratelimit-reset", str(self.reset_seconds).encode())]


def _seconds(milliseconds: float) -> int:
    """Whole seconds, rounded up: a client that waits this long is served."""
    return max(1, math.ceil(milliseconds / 1000))


class RateLimiter:
    """The buckets of one `k2 serve` worker: in this process, or in Redis (`K2_REDIS_URL`)."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.api_rate_limit == "on"
        self.policies = {name: _policy(name, getattr(settings, f"api_rate_{name}")) for name in CLASSES}
        # pyrate-limiter's TokenBucket is its GCRA, the leaky bucket as a meter: the token bucket's meter twin,
        # admitting exactly the same requests with one number of state per bucket
        self._algorithm = TokenBucket()
        self._stores: LRUCache[str, StateStore] = LRUCache(MAX_BUCKETS)
        self._redis: Any = None
        self._unreachable: tuple[type[Exception], ...] = ()
        if self.enabled and settings.redis_url:
            self._redis, self._unreachable = _redis_client(settings.redis_url)
        self.shared = self._redis is not None
        self._clock = WallClock() if self.shared else MonotonicClock()  # a shared meter needs a shared clock
        self._warned = self._down_until = -math.inf

    async def check(self, route_class: str, who: str) -> Verdict | None:
        """Spend one token of `who`'s bucket for `route_class`; None when Redis could not be asked (not limited)."""
        policy = self.policies[route_class]
        rates = [policy.rate]
        key = f"k2:ratelimit:{route_class}:{who}"
        store = self._stores.get(key)
        if store is None:
            store = self._stores[key] = (RedisStateStore(self._redis, key) if self.shared else InMemoryStateStore())
        now = int(self._clock.now())
        if not self.shared:  # in this process: the check and a read of the new state cost microseconds
            decision = store.check(self._algorithm, rates, now, 1)
            assert isinstance(decision, Decision)
            if decision.allowed:
                state = cast(tuple[float, ...], store.read(self._algorithm, rates))
                owed = self._algorithm.consumed(rates, state, now)
                return Verdict(True, policy.rate.burst, max(0, policy.rate.burst - owed),
                               _seconds(int(state[0]) / 1000 - now))
            return _refused(policy, decision)
        if time.monotonic() < self._down_until:
            return None
        try:
            decision = await cast(Awaitable[Decision], store.check(self._algorithm, rates, now, 1))
        except self._unreachable as exc:  # serve rather than refuse, and do not wait on Redis for a while
            self._down_until = time.monotonic() + REDIS_RETRY_SECONDS
            self._warn(exc)
            return None
        # an admitted answer would need a second round trip to Redis for Remaining: it carries no fields
        return None if decision.allowed else _refused(policy, decision)

    async def close(self) -> None:
        """Close the connections to Redis (at the worker's shutdown)."""
        if self._redis is not None:
            await self._redis.aclose()

    def _warn(self, exc: Exception) -> None:
        if time.monotonic() - self._warned >= _WARN_EVERY_SECONDS:
            self._warned = time.monotonic()
            log.warning("rate limits not applied for %.0f s: Redis (K2_REDIS_URL) cannot be reached: %s: %s",
                        REDIS_RETRY_SECONDS, type(exc).__name__, exc)


def _refused(policy: Policy, decision: Decision) -> Verdict:
    # the wait is for one token; the bucket is full again (burst - 1) tokens' time after that
    wait_ms = decision.retry_after_ms if decision.retry_after_ms is not None else policy.rate.interval
    return Verdict(False, policy.rate.burst, 0, _seconds(wait_ms + (policy.rate.burst - 1) * policy.emission_ms),
                   _seconds(wait_ms))


def _policy(route_class: str, text: str) -> Policy:
    limit, interval_ms, burst = parse_rate(text)
    return Policy(route_class, text, Rate(limit, interval_ms, burst=burst))


def _redis_client(url: str) -> tuple[Any, tuple[type[Exception], ...]]:
    """An asyncio Redis client (it connects at the first request), and the errors that say Redis is unreachable.
    Imported here: redis costs ~0.1 s to import, paid only when configured."""
    import redis.asyncio
    import redis.asyncio.retry
    import redis.backoff
    import redis.exceptions

    try:
        client = redis.asyncio.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                              socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                                              retry=redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0))
    except ValueError as exc:
        raise InputError(f"K2_REDIS_URL is not a Redis URL ({exc}): write redis://host:6379/0") from None
    return client, (redis.exceptions.RedisError, OSError, TimeoutError)


def _who(request: Request, caller: Caller) -> str:
    """The bucket's owner: the authenticated caller, else the client's address."""
    if caller.kind != "none":
        return caller.name
    client: Sequence[Any] | None = request.scope.get("client")
    return f"ip:{client[0]}" if client else "ip:unknown"


async def limited(request: Request, caller: Annotated[Caller, Depends(authorize)]) -> None:
    """The dependency of every `/v1` route after `authorize`: spend a token, or refuse with 429."""
    limiter: RateLimiter = request.app.state.limiter
    if not limiter.enabled:
        return
    route_class = ROUTE_CLASSES.get(request.scope["path"], "analytics")
    verdict = await limiter.check(route_class, _who(request, caller))
    if verdict is None:
        return
    if verdict.allowed:
        request.scope[_HEADERS] = verdict.fields()
        return
    policy = limiter.policies[route_class]
    headers = {"Retry-After": str(verdict.retry_after_seconds), "RateLimit-Limit": str(verdict.limit),
               "RateLimit-Remaining": "0", "RateLimit-Reset": str(verdict.reset_seconds)}
    raise ApiError(429, "rate_limited", f"too many {route_class} requests: the limit is {policy.text} per caller "
                   f"(K2_API_RATE_{route_class.upper()}); retry in {verdict.retry_after_seconds} s",
                   details={"route_class": route_class, "limit": policy.text,
                            "retry_after": verdict.retry_after_seconds},
                   headers=headers)


class Headers:
    """Adds the `RateLimit-*` fields `limited` computed to an admitted answer: the routes return their own
    `Response`, to which FastAPI does not copy the headers a dependency sets. Plain ASGI, like `Measured`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sent(message: Message) -> None:
            if message["type"] == "http.response.start" and _HEADERS in scope:
                message["headers"] = [*message.get("headers", ()), *scope[_HEADERS]]
            await send(message)

        await self.app(scope, receive, sent)


def install(app: FastAPI, settings: Settings) -> None:
    """Build the worker's limiter (app.state.limiter); with in-process counters, the fields on admitted answers."""
    app.state.limiter = RateLimiter(settings)
    if app.state.limiter.enabled and not app.state.limiter.shared:
        app.add_middleware(Headers)  # type: ignore[arg-type]  # a plain ASGI middleware class
