"""The hot cache: encoded answers of bars, VWAP, summaries and last ≤ T, by (route, parameters, format, table
versions). A table's version is its metadata location, which every commit, compaction, expiry or rollback
changes: a new snapshot is a new key, so a stale answer is never served (old keys age out of the LRU).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

from k2.api.formats import wanted
from k2.obs.metrics import API_CACHE
from k2.query.engine import QueryEngine
from k2.schemas import Dataset


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
    API_CACHE.labels(request.url.path, "miss").inc()
    response = answer()
    if response.status_code == 200:
        headers = tuple((k, v) for k, v in response.headers.items() if k.lower().startswith("k2-"))
        cache.put(key, Answer(bytes(response.body), response.media_type or "application/json", headers))
    return response
