"""Minute partials from the materialized bar table (lake/bars.py), for the trades state a query reads.

Used when the hot tier does not already hold the planned trade files (one-shot processes, the first query on a
symbol-day, the tier off): a symbol-day's bars are then ~400 stored rows instead of every tick. Only a bars
snapshot that covers exactly the queried trades snapshot is used (lake/metadata.bars_snapshot_for); otherwise
the caller falls back to ticks.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from k2.lake.metadata import BARS_TABLE, bars_snapshot_for
from k2.lake.partials import Partials, from_arrow
from k2.query.plan import Plan, Planner
from k2.query.reader import where


def stored_partials(
    planner: Planner, con: duckdb.DuckDBPyConnection, trades: Plan, symbols: list[str] | None,
    start: dt.datetime | None, end: dt.datetime | None,
) -> Partials | None:
    """Minute partials of `symbols` in [start, end) (on minute boundaries) as of the plan's trades snapshot;
    None when the bar table does not cover that snapshot."""
    if trades.table is None or trades.snapshot_id is None:
        return None
    bars = planner.table(BARS_TABLE)
    if bars is None:
        return None
    covering = bars_snapshot_for(bars, trades.table, trades.snapshot_id)
    if covering is None:
        return None
    plan = planner.plan(BARS_TABLE, symbols, start, end, snapshot_id=covering)
    if not plan.paths:
        return Partials.empty()
    clauses, params = where(symbols, start, end, time_column="minute")
    rows = con.execute(
        f"SELECT * FROM read_parquet(?, hive_partitioning = false) WHERE {clauses}",
        [[p.removeprefix("file://") for p in plan.paths], *params],
    ).to_arrow_table()
    return from_arrow(rows)
