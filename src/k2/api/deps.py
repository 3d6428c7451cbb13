"""What every route shares: the process's engine and settings, symbol lists, time windows and page caps."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from fastapi import Request
from pydantic import AfterValidator, BeforeValidator

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


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_LOST_PLUS = re.compile(r"\d{2}:\d{2}(:\d{2}(\.\d+)?)? \d{2}(:?\d{2})?$")  # 14:30:00+10:00 sent unencoded


def _iso(value: object, example: str) -> object:
    """Times and dates in ISO-8601 only: pydantic alone reads `0.5`, `20260301` or `1709251200000` as a count of
    (milli)seconds since 1970 and answers for a moment the client never meant."""
    if isinstance(value, str) and not _ISO_DATE.match(value.strip()):
        raise ValueError(f"{value[:40]!r} is not ISO-8601: write e.g. {example}")
    if isinstance(value, str) and _LOST_PLUS.search(value.strip()):
        raise ValueError(f"{value[:40]!r} has a space: a '+' in a URL reads as one, send a time zone as %2B10:00 "
                         "(or use Z)")
    return value


FIRST_YEAR, LAST_YEAR = 1900, 2199


def _in_years(value: dt.date | None) -> dt.date | None:
    """Times far outside any market's data overflow the engine's padding and arithmetic: refused up front."""
    if value is not None and not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(f"{value.isoformat()} is outside the years K2 answers for ({FIRST_YEAR} to {LAST_YEAR})")
    return value


def _iso_time(value: object) -> object:
    return _iso(value, "2026-03-02T14:30:00Z or 2026-03-02 (no zone = UTC)")


def _iso_day(value: object) -> object:
    return _iso(value, "2026-03-02")


# A moment or a session date as the routes take them: ISO-8601 text, within the years above
Moment = Annotated[dt.datetime, BeforeValidator(_iso_time), AfterValidator(_in_years)]
Day = Annotated[dt.date, BeforeValidator(_iso_day), AfterValidator(_in_years)]


def capped(rows: int, limit: int, what: str) -> None:
    if rows > limit:
        raise ApiError(400, "result_too_large", f"{rows:,} {what} in one answer (at most {limit:,}): narrow the "
                       "symbols or the range, or use a coarser interval")
