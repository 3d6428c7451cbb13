"""The process's long-lived watchers of Kafka, made at first use (the API may start before the broker does): the
lag collector (`/metrics` and the pipeline view share it) and the dead-letter tail. Closed with the app."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request

from k2.api import deps

if TYPE_CHECKING:
    from k2.kafka.dead_letter_tail import DeadLetterTail
    from k2.kafka.lag import LagCollector

_LOCK = threading.Lock()


def lag_collector(request: Request) -> LagCollector | None:
    """The collector, or None while there is no broker to point at (the local one is not running)."""
    from k2.kafka.broker import resolve_bootstrap
    from k2.kafka.lag import LagCollector

    state = request.app.state
    with _LOCK:
        found: LagCollector | None = getattr(state, "lag_collector", None)
        if found is None:
            settings = deps.settings(request)
            try:
                found = LagCollector(settings, resolve_bootstrap(settings))
            except Exception:
                return None
            state.lag_collector = found
        return found


def dead_letter_tail(request: Request) -> DeadLetterTail | None:
    from k2.kafka.broker import resolve_bootstrap
    from k2.kafka.dead_letter_tail import DeadLetterTail

    state = request.app.state
    with _LOCK:
        found: DeadLetterTail | None = getattr(state, "dead_letter_tail", None)
        if found is None:
            settings = deps.settings(request)
            try:
                found = DeadLetterTail(settings, resolve_bootstrap(settings))
            except Exception:
                return None
            state.dead_letter_tail = found
        return found


def close(app: FastAPI) -> None:
    tail: DeadLetterTail | None = getattr(app.state, "dead_letter_tail", None)
    if tail is not None:
        tail.close()
