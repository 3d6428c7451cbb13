"""Trades and quotes, paged by cursor."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from k2.api import deps, formats, models, paging
from k2.query.engine import QueryEngine, TimeRange
from k2.schemas import Dataset, arrow_schema

router = APIRouter(tags=["ticks"],
                   responses={**models.ERROR_RESPONSES, **formats.table_responses(paged=True)})
Symbols = Annotated[str | None, Query(description="Symbols, comma-separated (all when absent).")]
Start = Annotated[deps.Moment | None, Query(description="From (inclusive), ISO-8601; no zone = UTC.")]
End = Annotated[deps.Moment | None, Query(description="To (exclusive), ISO-8601; no zone = UTC.")]
Limit = Annotated[int, Query(ge=1, le=10_000, description="Rows per page (at most 10,000).")]
Token = Annotated[str | None, Query(description="next_cursor of the previous page.")]
AsOf = Annotated[deps.Moment | None,
                 Query(description="Time travel: what the lake held at this wall time.")]
Snapshot = Annotated[int | None, Query(description="Time travel: read this Iceberg snapshot.")]


def _page(request: Request, engine: QueryEngine, dataset: Dataset, symbols: str | None, start: dt.datetime | None,
          end: dt.datetime | None, limit: int, page_token: str | None, as_of: dt.datetime | None,
          snapshot_id: int | None) -> Response | dict[str, Any]:
    settings = deps.settings(request)
    chosen = deps.symbol_list(symbols)
    span = deps.window(start, end, settings.api_max_range_days)
    digest = paging.query_digest(dataset, chosen, span.start, span.end, as_of, snapshot_id)
    token = paging.PageToken.decode(page_token, digest) if page_token else None
    if token is not None:
        pinned = token.snapshot_id
    else:
        pinned = engine.planner.plan(dataset, chosen, span.start, span.end, snapshot_id, as_of).snapshot_id
    begin = span.start
    if token is not None:
        resume_at = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=token.ts)
        begin = max(begin, resume_at) if begin else resume_at
    rows = engine.ticks(dataset, chosen, TimeRange(begin, span.end), snapshot_id=pinned) if pinned else \
        arrow_schema(dataset).empty_table()
    rows = paging.after(rows, token)
    if rows.num_rows == 0 and chosen and token is None:
        engine.check_symbols(dataset, chosen)
    page = rows.slice(0, limit)
    more = rows.num_rows > limit
    return formats.answer(request, page, paging.next_token(page, digest, pinned) if more else None)


@router.get("/trades", response_model=models.page_model("Trade", arrow_schema(Dataset.TRADES)))
def trades(request: Request, engine: Annotated[QueryEngine, Depends(deps.engine)], symbols: Symbols = None,
           start: Start = None, end: End = None, limit: Limit = 1_000, page_token: Token = None,
           as_of: AsOf = None, snapshot_id: Snapshot = None) -> Any:
    """Trades in (ts, symbol, sequence) order, a page at a time: pass `next_cursor` back as `page_token`."""
    return _page(request, engine, Dataset.TRADES, symbols, start, end, limit, page_token, as_of, snapshot_id)


@router.get("/quotes", response_model=models.page_model("Quote", arrow_schema(Dataset.QUOTES)))
def quotes(request: Request, engine: Annotated[QueryEngine, Depends(deps.engine)], symbols: Symbols = None,
           start: Start = None, end: End = None, limit: Limit = 1_000, page_token: Token = None,
           as_of: AsOf = None, snapshot_id: Snapshot = None) -> Any:
    """L1 quotes in (ts, symbol, sequence) order, a page at a time."""
    return _page(request, engine, Dataset.QUOTES, symbols, start, end, limit, page_token, as_of, snapshot_id)
