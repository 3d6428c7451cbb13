"""One retry helper for every transient failure K2 waits out: commit races, a broker that is still starting."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def backoff_delay(attempt: int, first: float = 0.02, cap: float = 1.0) -> float:
    """Exponential backoff with ±50% jitter: racing writers that failed together do not retry together."""
    return float(min(cap, first * 2.0 ** min(attempt - 1, 10)) * (0.5 + random.random()))


def retry(
    operation: Callable[[], T],
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    give_up_after: float,
    before_retry: Callable[[BaseException], None] | None = None,
    first_delay: float = 0.02,
    max_delay: float = 1.0,
) -> T:
    """Call `operation` until it returns; on `retry_on`, back off and call `before_retry` (e.g. refresh stale
    state), then try again. After `give_up_after` seconds the last error is raised unchanged."""
    deadline = time.monotonic() + give_up_after
    attempt = 0
    while True:
        attempt += 1
        try:
            return operation()
        except retry_on as exc:
            delay = backoff_delay(attempt, first_delay, max_delay)
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            if before_retry is not None:
                before_retry(exc)
