"""The hot cache: encoded answers of bars, VWAP, summaries and last ≤ T, by (route, parameters, format, table
versions). A table's version is its metadata location, which every commit, compaction, expiry or rollback
changes: a new snapshot is a new key, so a stale answer is never served (old keys age out of the LRU).

Two tiers: an in-process LRU per worker, and, with `K2_API_CACHE_REDIS=on` and `K2_REDIS_URL`, Redis shared by
every worker and host (what one computed, the others read). Redis entries expire after `REDIS_TTL_SECONDS`; a
Redis that does not answer is skipped for a while (the in-process tier and the engine still answer).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

from k2.api.formats import wanted
from k2.errors import InputError
from k2.obs.metrics import API_CACHE
from k2.query.engine import QueryEngine
from k2.schemas import Dataset
from k2.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    body: bytes
    media_type: str
    headers: tuple[tuple[str, str], ...]

    def response(self) -> Response:
        return Response(self.body, media_type=self.media_type, headers=dict(self.headers))


class ResultCache:
    """An in-process LRU bounded by bytes (0: off). Safe to share between threads."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, Answer] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._max_bytes > 0

    def get(self, key: str) -> Answer | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: str, answer: Answer) -> None:
        size = len(answer.body) + len(key)
        if size > self._max_bytes // 8:  # one answer may not evict most of the others
            return
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._bytes -= len(previous.body) + len(key)
            self._entries[key] = answer
            self._bytes += size
            while self._bytes > self._max_bytes:
                old_key, old = self._entries.popitem(last=False)
                self._bytes -= len(old.body) + len(old_key)


REDIS_TTL_SECONDS = 3600
REDIS_TIMEOUT_SECONDS = 0.25
REDIS_BACKOFF_SECONDS = 5.0


class RedisAnswers:
    """The shared tier: one Redis key per answer (a SHA-256 of the cache key), the answer packed as bytes."""

    def __init__(self, url: str) -> None:
        import redis  # ~0.1 s to import: only when configured

        self._client = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                            socket_connect_timeout=REDIS_TIMEOUT_SECONDS)
        self._errors: tuple[type[Exception], ...] = (redis.exceptions.RedisError, OSError)
        self._down_until = 0.0
        self._warned_at = -60.0

    def get(self, key: str) -> Answer | None:
        packed = self._call(lambda: self._client.get(_redis_key(key)))
        return _unpack(packed) if isinstance(packed, bytes) else None

    def put(self, key: str, answer: Answer) -> None:
        self._call(lambda: self._client.set(_redis_key(key), _pack(answer), ex=REDIS_TTL_SECONDS))

    def _call(self, operation: Callable[[], object]) -> object:
        if time.monotonic() < self._down_until:
            return None
        try:
            return operation()
        except self._errors as exc:
            self._down_until = time.monotonic() + REDIS_BACKOFF_SECONDS
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                log.warning("the hot cache's Redis did not answer (%s): skipping it for %.0f s", exc,
                            REDIS_BACKOFF_SECONDS)
            return None


def _redis_key(key: str) -> str:
    return "k2:answer:" + hashlib.sha256(key.encode()).hexdigest()


def _pack(answer: Answer) -> bytes:
    head = json.dumps({"media_type": answer.media_type, "headers": answer.headers}).encode()
    return len(head).to_bytes(4, "big") + head + answer.body


def _unpack(packed: bytes) -> Answer | None:
    try:
        size = int.from_bytes(packed[:4], "big")
        head = json.loads(packed[4:4 + size])
        return Answer(packed[4 + size:], str(head["media_type"]), tuple((str(k), str(v)) for k, v in head["headers"]))
    except (ValueError, KeyError, TypeError):
        return None  # not an answer K2 wrote: a miss


def cached(request: Request, engine: QueryEngine, datasets: Iterable[Dataset], answer: Callable[[], Response],
           cache: ResultCache | None = None) -> Response:
    """The route's answer from the cache when the tables it reads are unchanged, else computed and kept."""
    cache = cache or request.app.state.cache
    if not cache.enabled:
        return answer()
    versions = ";".join(engine.version(d) or "-" for d in datasets)
    key = f"{request.url.path}?{sorted(request.query_params.multi_items())}|{wanted(request)}|{versions}"
    found = cache.get(key)
    if found is not None:
        API_CACHE.labels(request.url.path, "hit").inc()
        return found.response()
    shared: RedisAnswers | None = getattr(request.app.state, "shared_cache", None)
    found = shared.get(key) if shared is not None else None
    if found is not None:
        API_CACHE.labels(request.url.path, "shared_hit").inc()
        cache.put(key, found)
        return found.response()
    API_CACHE.labels(request.url.path, "miss").inc()
    response = answer()
    if response.status_code == 200:
        headers = tuple((k, v) for k, v in response.headers.items() if k.lower().startswith("k2-"))
        computed = Answer(bytes(response.body), response.media_type or "application/json", headers)
        cache.put(key, computed)
        if shared is not None:
            shared.put(key, computed)
    return response


def shared_cache(settings: Settings) -> RedisAnswers | None:
    """The Redis tier when asked for (an InputError when it is asked for without a Redis to use)."""
    if not settings.api_cache_redis or settings.api_cache_mb == 0:
        return None
    if not settings.redis_url:
        raise InputError("K2_API_CACHE_REDIS=on needs K2_REDIS_URL (redis://host:6379/0)")
    return RedisAnswers(settings.redis_url)
