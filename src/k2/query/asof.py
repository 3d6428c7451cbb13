"""The as-of join of trades to the prevailing quote, the core of transaction-cost analysis, in numpy.

Both inputs are in (symbol, ts, sequence) order, so each symbol's rows are one range and the prevailing quote of
every trade is one binary search over that symbol's quote times (the last quote with ts ≤ the trade's).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from k2.arrow_util import micros, symbol_runs
from k2.schemas import Dataset, arrow_schema

QUOTE_COLUMNS = ("ts", "bid_price", "ask_price", "bid_size", "ask_size")
_RENAMED = {"ts": "quote_ts"}
# what asof_join returns: every trade column, then the prevailing quote's (null before the symbol's first quote)
ASOF_SCHEMA = pa.schema([
    *arrow_schema(Dataset.TRADES),
    *[arrow_schema(Dataset.QUOTES).field(name).with_name(_RENAMED.get(name, name)).with_nullable(True)
      for name in QUOTE_COLUMNS],
])


def quoted_late(trades: pa.Table, quotes: pa.Table) -> list[str]:
    """Symbols whose first trade in the window precedes their first quote in it (or that have no quote in it):
    only their prevailing quote at the window's start can matter. When a symbol's quotes start at or before its
    first trade, every trade finds its quote in the window, and looking before it (a read of older files, the
    costliest part of a first-touch as-of join) is skipped."""
    quote_ranges = symbol_runs(quotes)
    trade_ts = micros(trades.column("ts"))
    quote_ts = micros(quotes.column("ts"))
    late = []
    for symbol, (first, _) in symbol_runs(trades).items():
        q_first, q_stop = quote_ranges.get(symbol, (0, 0))
        if q_first == q_stop or quote_ts[q_first] > trade_ts[first]:
            late.append(symbol)
    return late


def asof_join(trades: pa.Table, quotes: pa.Table, prior: pa.Table | None = None) -> pa.Table:
    """`trades` with the columns of each one's prevailing quote (null before the symbol's first quote).
    `prior`: at most one quote per symbol from before the window (the one prevailing at its start), for trades
    that precede every quote in `quotes`."""
    prior = prior if prior is not None else quotes.schema.empty_table()
    matches = np.full(trades.num_rows, -1, np.int64)
    prior_rows = {s: i for i, s in enumerate(prior.column("symbol").to_pylist())}
    quote_ranges = symbol_runs(quotes)
    trade_ts = micros(trades.column("ts"))
    quote_ts = micros(quotes.column("ts"))
    offset = prior.num_rows  # rows of `quotes` come after those of `prior` in the combined columns
    for symbol, (first, stop) in symbol_runs(trades).items():
        q_first, q_stop = quote_ranges.get(symbol, (0, 0))
        found = np.searchsorted(quote_ts[q_first:q_stop], trade_ts[first:stop], "right") - 1
        before = prior_rows.get(symbol, -1)
        matches[first:stop] = np.where(found >= 0, found + q_first + offset, before)
    picked = pa.array(matches, pa.int64(), mask=matches < 0)
    joined = trades
    for name in QUOTE_COLUMNS:
        chunks = [*prior.column(name).chunks, *quotes.column(name).chunks]
        column = pa.concat_arrays(chunks) if chunks else pa.array([], quotes.schema.field(name).type)
        joined = joined.append_column(_RENAMED.get(name, name), column.take(picked))
    return joined
