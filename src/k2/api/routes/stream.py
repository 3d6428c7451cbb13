"""Replay streamed to the client as Server-Sent Events, on the same engine as `k2 replay` (k2.replay)."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from k2.api import deps, formats, models
from k2.api.errors import ApiError
from k2.api.routes.ticks import AsOf, End, Start, Symbols
from k2.errors import QueryError
from k2.query.engine import QueryEngine
from k2.replay.cursor import ReplayRequest
from k2.replay.engine import Replay
from k2.schemas import Dataset

router = APIRouter(tags=["replay"], responses=models.ERROR_RESPONSES)


SLOWEST = 0.01  # slower, a replay would sit for days between events


def _speed(text: str) -> float | None:
    if text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ApiError(400, "bad_speed", f"speed {text[:40]!r} is not max or a positive multiple of real time "
                       "(1, 10, 100 …)") from None
    if not math.isfinite(value) or value <= 0:
        raise ApiError(400, "bad_speed", f"speed {text[:40]!r} must be a positive number (1, 10, 100 …) or max")
    if value < SLOWEST:
        raise ApiError(400, "bad_speed", f"speed {text[:40]!r} is too slow: at least {SLOWEST:g} times real time")
    return value


@router.get("/replay", response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
def replay(request: Request, symbols: Symbols = None, start: Start = None, end: End = None,
           datasets: Annotated[str, Query(description="trades, quotes or both.")] = "trades,quotes",
           speed: Annotated[str, Query(description="max, or a multiple of real time of at least 0.01 "
                                                  "(1, 10, 100 …).")] = "max",
           cursor: Annotated[str | None, Query(description="Resume right after this cursor's event.")] = None,
           limit: Annotated[int | None, Query(ge=1, le=10_000_000)] = None, as_of: AsOf = None) -> StreamingResponse:
    """Trades and quotes merged in exact event order (ts, sequence, quote before trade, exchange, symbol).
    Each event is an SSE `data:` line of JSON; after every batch an `event: cursor` message carries the token
    that resumes right after the last event sent (pass it back as `cursor`)."""
    settings = deps.settings(request)
    try:
        chosen = tuple(Dataset(d.strip()) for d in datasets.split(",") if d.strip())
    except ValueError:
        raise ApiError(400, "bad_datasets",
                       f"datasets {datasets[:40]!r}: give trades, quotes or trades,quotes") from None
    span = deps.window(start, end)
    cursor = cursor.strip() if cursor and cursor.strip() else None  # `cursor=` (empty) is no cursor
    plan = None if cursor else ReplayRequest(
        datasets=chosen, symbols=tuple(deps.symbol_list(symbols) or ()) or None, start=span.start, end=span.end)
    if plan is not None and plan.symbols and chosen:  # (no datasets: Replay says so below)
        _check_symbols(deps.engine(request), chosen, plan.symbols)
    try:
        session = Replay(settings, plan, cursor, _speed(speed), as_of=as_of, engine=deps.engine(request),
                         batch_rows=4_096, limit=limit)
    except QueryError as exc:
        raise ApiError(400, "bad_replay", str(exc)) from None
    return StreamingResponse(_stream(session), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _check_symbols(engine: QueryEngine, datasets: tuple[Dataset, ...], symbols: tuple[str, ...]) -> None:
    """A symbol that none of the datasets holds is a 404 naming the close ones, as on every other route (the
    stream would otherwise just be empty)."""
    known = set().union(*(engine.symbols(d) for d in datasets))
    unknown = [s for s in symbols if s not in known]
    if unknown:
        engine.check_symbols(datasets[0], unknown)


async def _stream(session: Replay) -> AsyncIterator[str]:
    """The events, each chunk made in a worker thread. When the client goes away, Starlette cancels the response:
    the replay then stops at once, rather than pacing on for nobody and holding its thread until the next event is
    due (hours away, over a night's gap at real time)."""
    events = _events(session)
    try:
        while (chunk := await anyio.to_thread.run_sync(next, events, None, abandon_on_cancel=True)) is not None:
            yield chunk
    finally:
        session.stop()  # an abandoned thread's pacing sees it within 50 ms and returns


def _events(session: Replay) -> Iterator[str]:
    yield f"event: cursor\ndata: {json.dumps(session.cursor.token())}\n\n"
    for batch in session.batches():
        lines = [f"data: {json.dumps(row, separators=(',', ':'))}\n\n" for row in formats.rows(batch)]
        yield "".join(lines)
        yield f"event: cursor\ndata: {json.dumps(session.cursor.token())}\n\n"
    yield "event: end\ndata: {}\n\n"


_ = dt  # times arrive through the shared query parameters
