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
from k2.obs.metrics import QUERY_SECONDS

P = ParamSpec("P")
R = TypeVar("R")
_depth = threading.local()


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
                    QUERY_SECONDS.labels(query).observe(time.perf_counter() - started)

        return measured

    return decorate
