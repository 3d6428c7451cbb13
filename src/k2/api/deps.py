"""What every route shares: the process's engine and settings, symbol lists, time windows and page caps."""

from __future__ import annotations

import datetime as dt

from fastapi import Request

from k2.api.errors import ApiError
from k2.query.engine import QueryEngine, TimeRange
from k2.settings import Settings


def engine(request: Request) -> QueryEngine:
    found: QueryEngine = request.app.state.engine
    return found


def settings(request: Request) -> Settings:
    found: Settings = request.app.state.settings
    return found


def symbol_list(text: str | None) -> list[str] | None:
    if text is None or not text.strip():
        return None
    symbols = [s.strip() for s in text.split(",") if s.strip()]
    if len(symbols) > 500:
        raise ApiError(400, "too_many_symbols", f"{len(symbols)} symbols in one request: at most 500")
    return symbols


def window(start: dt.datetime | None, end: dt.datetime | None, max_days: float | None = None) -> TimeRange:
    """The [start, end) window; naive times are UTC. `max_days` bounds it (and then both ends are required)."""
    start = _utc(start)
    end = _utc(end)
    span = TimeRange(start, end)  # QueryError (400) when start is not before end
    if max_days is not None:
        if start is None or end is None:
            raise ApiError(400, "range_required", f"give start and end (at most {max_days:g} days apart)")
        if end - start > dt.timedelta(days=max_days):
            raise ApiError(400, "range_too_large", f"start to end is {(end - start).days} days; at most "
                           f"{max_days:g} per request: narrow the range or page through it")
    return span


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def capped(rows: int, limit: int, what: str) -> None:
    if rows > limit:
        raise ApiError(400, "result_too_large", f"{rows:,} {what} in one answer (at most {limit:,}): narrow the "
                       "symbols or the range, or use a coarser interval")
