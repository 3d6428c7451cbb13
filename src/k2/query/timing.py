"""Query latency by query type (`k2_query_seconds`) and a trace span per query (`k2.query.<type>`, a child of the
API request's span when there is one), for the outermost engine call only: `asof` reads ticks through `ticks`, and
that inner call must not be counted as a query of its own."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from k2.obs import tracing

P = ParamSpec("P")
R = TypeVar("R")
_depth = threading.local()
_exporting = True


def without_metrics() -> None:
    """For a one-shot process (a `k2 query` command) that has no /metrics endpoint to export them on: skip
    recording, and so importing prometheus_client (20-60 ms of a command's start-up, measured)."""
    global _exporting
    _exporting = False


def _observe(query: str, seconds: float) -> None:
    if _exporting:
        from k2.obs.metrics import QUERY_SECONDS  # a dictionary lookup once imported

        QUERY_SECONDS.labels(query).observe(seconds)


def timed(query: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    name, attributes = f"k2.query.{query}", {"k2.query": query}

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def measured(*args: P.args, **kwargs: P.kwargs) -> R:
            depth = getattr(_depth, "calls", 0)
            _depth.calls = depth + 1
            started = time.perf_counter()
            try:
                if depth:
                    return function(*args, **kwargs)
                with tracing.span(name, attributes):
                    return function(*args, **kwargs)
            finally:
                _depth.calls = depth
                if depth == 0:
                    _observe(query, time.perf_counter() - started)

        return measured

    return decorate
