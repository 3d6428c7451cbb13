"""Bars, VWAP, daily summary, last (point in time) and the as-of join: one answer each, capped in size."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from k2.api import deps, formats, models
from k2.api.cache import cached
from k2.api.routes.ticks import AsOf, End, Snapshot, Start, Symbols
from k2.query.adjust import Adjust
from k2.query.asof import ASOF_SCHEMA
from k2.query.engine import BARS_SCHEMA, SUMMARY_SCHEMA, VWAP_BUCKET_SCHEMA, QueryEngine
from k2.schemas import Dataset, arrow_schema

router = APIRouter(tags=["analytics"], responses={**models.ERROR_RESPONSES, **formats.table_responses()})
Engine = Annotated[QueryEngine, Depends(deps.engine)]
Adjustment = Annotated[Adjust, Query(description="Back-adjust for splits, or splits and dividends.")]
MAX_ROWS = 100_000
WITH_ACTIONS = (Dataset.TRADES, Dataset.CORPORATE_ACTIONS)  # bars and summaries may be back-adjusted


def _checked(engine: QueryEngine, rows: Any, symbols: list[str] | None) -> Any:
    """An empty answer for symbols the lake never held is a 404 that suggests the close ones."""
    if rows.num_rows == 0 and symbols:
        engine.check_symbols(Dataset.TRADES, symbols)
    return rows


@router.get("/bars", response_model=models.page_model("Bar", BARS_SCHEMA))
def bars(request: Request, engine: Engine, symbols: Symbols = None,
         interval: Annotated[str, Query(description="1s to 366d: 1m, 5m, 1h, 1d …")] = "1m",
         start: Start = None, end: End = None, adjust: Adjustment = Adjust.NONE, as_of: AsOf = None,
         snapshot_id: Snapshot = None) -> Any:
    """OHLCV bars with trade count and exact VWAP, on UTC boundaries."""
    def answer() -> Response:
        chosen = deps.symbol_list(symbols)
        rows = engine.bars(chosen, interval, deps.window(start, end), snapshot_id, as_of, adjust)
        rows = _checked(engine, rows, chosen)
        deps.capped(rows.num_rows, MAX_ROWS, "bars")
        return formats.answer(request, rows)

    return cached(request, engine, WITH_ACTIONS, answer)


@router.get("/vwap", response_model=models.page_model("Vwap", VWAP_BUCKET_SCHEMA.remove(1).insert(
    1, VWAP_BUCKET_SCHEMA.field(1).with_nullable(True))))
def vwap(request: Request, engine: Engine, symbols: Symbols = None, start: Start = None, end: End = None,
         interval: Annotated[str | None, Query(description="Per bucket of this interval (else the window).")] = None,
         as_of: AsOf = None, snapshot_id: Snapshot = None) -> Any:
    """Volume-weighted average price per symbol over the window, or per bucket (`bar_start` is then set)."""
    def answer() -> Response:
        chosen = deps.symbol_list(symbols)
        rows = _checked(engine, engine.vwap(chosen, deps.window(start, end), interval, snapshot_id, as_of), chosen)
        deps.capped(rows.num_rows, MAX_ROWS, "VWAP rows")
        return formats.answer(request, rows)

    return cached(request, engine, (Dataset.TRADES,), answer)


@router.get("/summary", response_model=models.page_model("DailySummary", SUMMARY_SCHEMA))
def summary(request: Request, engine: Engine, symbols: Symbols = None,
            first_day: Annotated[deps.Day | None,
                                 Query(alias="from", description="First session date.")] = None,
            last_day: Annotated[deps.Day | None,
                                Query(alias="to", description="Last session date.")] = None,
            adjust: Adjustment = Adjust.NONE, as_of: AsOf = None, snapshot_id: Snapshot = None) -> Any:
    """Daily figures per symbol and session date in the exchange's own time zone."""
    def answer() -> Response:
        chosen = deps.symbol_list(symbols)
        rows = _checked(engine, engine.summary(chosen, first_day, last_day, snapshot_id, as_of, adjust), chosen)
        deps.capped(rows.num_rows, MAX_ROWS, "daily rows")
        return formats.answer(request, rows)

    return cached(request, engine, WITH_ACTIONS, answer)


def _last(request: Request, engine: QueryEngine, dataset: Dataset, at: dt.datetime, symbols: str | None,
          as_of: dt.datetime | None, snapshot_id: int | None) -> Any:
    def answer() -> Response:
        chosen = deps.symbol_list(symbols)
        moment = deps.window(at, None).start
        assert moment is not None
        rows = engine.last(dataset, chosen, moment, snapshot_id, as_of)
        if rows.num_rows == 0 and chosen:
            engine.check_symbols(dataset, chosen)
        return formats.answer(request, rows)

    return cached(request, engine, (dataset,), answer)


At = Annotated[deps.Moment, Query(description="The moment, ISO-8601; no zone = UTC.")]


@router.get("/trades/last", response_model=models.page_model("LastTrade", arrow_schema(Dataset.TRADES)))
def last_trades(request: Request, engine: Engine, at: At, symbols: Symbols = None, as_of: AsOf = None,
                snapshot_id: Snapshot = None) -> Any:
    """The last trade at or before `at` per symbol (every symbol when none is given): the market at a moment."""
    return _last(request, engine, Dataset.TRADES, at, symbols, as_of, snapshot_id)


@router.get("/quotes/last", response_model=models.page_model("LastQuote", arrow_schema(Dataset.QUOTES)))
def last_quotes(request: Request, engine: Engine, at: At, symbols: Symbols = None, as_of: AsOf = None,
                snapshot_id: Snapshot = None) -> Any:
    """The last quote at or before `at` per symbol."""
    return _last(request, engine, Dataset.QUOTES, at, symbols, as_of, snapshot_id)


@router.get("/asof", response_model=models.page_model("TradeWithQuote", ASOF_SCHEMA))
def asof(request: Request, engine: Engine, symbols: Symbols = None, start: Start = None, end: End = None,
         as_of: AsOf = None, snapshot_id: Snapshot = None) -> Any:
    """Every trade with the quote prevailing when it printed (transaction-cost analysis)."""
    settings = deps.settings(request)
    chosen = deps.symbol_list(symbols)
    rows = _checked(engine, engine.asof(chosen, deps.window(start, end, settings.api_max_range_days), snapshot_id,
                                        as_of), chosen)
    deps.capped(rows.num_rows, MAX_ROWS, "trades")
    return formats.answer(request, rows)
