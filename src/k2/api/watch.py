"""The process's long-lived watchers of Kafka, made at first use (the API may start before the broker does): the
lag collector (`/metrics` and the pipeline view share it) and the dead-letter tail. Closed with the app."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from fastapi import FastAPI, Request

from k2.api import deps
from k2.settings import Settings

if TYPE_CHECKING:
    from k2.kafka.dead_letter_tail import DeadLetterTail
    from k2.kafka.lag import LagCollector

_LOCK = threading.Lock()
W = TypeVar("W")


def _once(request: Request, name: str, make: Callable[[Settings, str], W]) -> W | None:
    """The app's watcher `name`, made from the settings and the broker's address the first time one can be; None
    while there is no broker to point at (the local one is not running)."""
    from k2.kafka.broker import resolve_bootstrap

    state = request.app.state
    with _LOCK:
        found: W | None = getattr(state, name, None)
        if found is None:
            settings = deps.settings(request)
            try:
                found = make(settings, resolve_bootstrap(settings))
            except Exception:
                return None
            setattr(state, name, found)
        return found


def lag_collector(request: Request) -> LagCollector | None:
    from k2.kafka.lag import LagCollector

    return _once(request, "lag_collector", LagCollector)


def dead_letter_tail(request: Request) -> DeadLetterTail | None:
    from k2.kafka.dead_letter_tail import DeadLetterTail

    return _once(request, "dead_letter_tail", DeadLetterTail)


def close(app: FastAPI) -> None:
    tail: DeadLetterTail | None = getattr(app.state, "dead_letter_tail", None)
    if tail is not None:
        tail.close()
