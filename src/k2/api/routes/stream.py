"""Replay streamed to the client as Server-Sent Events, on the same engine as `k2 replay` (k2.replay)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from k2.api import deps, formats
from k2.api.errors import ApiError
from k2.api.routes.ticks import AsOf, End, Start, Symbols
from k2.errors import QueryError
from k2.replay.cursor import ReplayRequest
from k2.replay.engine import Replay
from k2.schemas import Dataset

router = APIRouter(tags=["replay"])


def _speed(text: str) -> float | None:
    if text.lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ApiError(400, "bad_speed", f"speed {text!r} is not max or a positive multiple of real time") from None
    if value <= 0:
        raise ApiError(400, "bad_speed", f"speed {text!r} must be positive (or max)")
    return value


@router.get("/replay", response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
def replay(request: Request, symbols: Symbols = None, start: Start = None, end: End = None,
           datasets: Annotated[str, Query(description="trades, quotes or both.")] = "trades,quotes",
           speed: Annotated[str, Query(description="max, or a multiple of real time (1, 10, 100 …).")] = "max",
           cursor: Annotated[str | None, Query(description="Resume right after this cursor's event.")] = None,
           limit: Annotated[int | None, Query(ge=1, le=10_000_000)] = None, as_of: AsOf = None) -> StreamingResponse:
    """Trades and quotes merged in exact event order (ts, sequence, quote before trade, exchange, symbol).
    Each event is an SSE `data:` line of JSON; after every batch an `event: cursor` message carries the token
    that resumes right after the last event sent (pass it back as `cursor`)."""
    settings = deps.settings(request)
    try:
        chosen = tuple(Dataset(d.strip()) for d in datasets.split(",") if d.strip())
    except ValueError:
        raise ApiError(400, "bad_datasets", f"datasets {datasets!r}: trades, quotes or both") from None
    span = deps.window(start, end)
    plan = None if cursor else ReplayRequest(
        datasets=chosen, symbols=tuple(deps.symbol_list(symbols) or ()) or None, start=span.start, end=span.end)
    try:
        session = Replay(settings, plan, cursor, _speed(speed), as_of=as_of, engine=deps.engine(request),
                         batch_rows=4_096, limit=limit)
    except QueryError as exc:
        raise ApiError(400, "bad_replay", str(exc)) from None
    return StreamingResponse(_events(session), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _events(session: Replay) -> Iterator[str]:
    yield f"event: cursor\ndata: {json.dumps(session.cursor.token())}\n\n"
    for batch in session.batches():
        lines = [f"data: {json.dumps(row, separators=(',', ':'))}\n\n" for row in formats.rows(batch)]
        yield "".join(lines)
        yield f"event: cursor\ndata: {json.dumps(session.cursor.token())}\n\n"
    yield "event: end\ndata: {}\n\n"


_ = dt  # times arrive through the shared query parameters
