"""Minute partials from the materialized bar table (lake/bars.py), for the trades state a query reads.

Used when the hot tier does not already hold the planned trade files (one-shot processes, the first query on a
symbol-day, the tier off): a symbol-day's bars are then ~400 stored rows instead of every tick. Only a bars
snapshot that covers exactly the queried trades snapshot is used (lake/metadata.bars_snapshot_for); otherwise
the caller falls back to ticks.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq

from k2.lake.fileio import open_input
from k2.lake.metadata import BARS_TABLE, bars_snapshot_for
from k2.lake.partials import Partials, from_arrow
from k2.query.plan import Plan, Planner, to_micros


def stored_partials(
    planner: Planner, trades: Plan, symbols: list[str] | None, start: dt.datetime | None, end: dt.datetime | None,
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
    tables = []
    for path in plan.paths:  # small files (a few hundred rows per symbol-day): read whole, selected in numpy
        with open_input(path) as stream:
            tables.append(pq.ParquetFile(stream).read())
    partials = from_arrow(pa.concat_tables(tables))
    return partials.select(symbols, to_micros(start) if start else None, to_micros(end) if end else None)
