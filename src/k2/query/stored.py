"""Minute partials from the materialized bar table (lake/bars.py), for the trades state a query reads.

Used when the hot tier does not already hold the planned trade files (one-shot processes, the first query on a
symbol-day, the tier off): a symbol-day's bars are then a few hundred stored rows instead of every tick. Only a
bars snapshot that covers exactly the queried trades snapshot is used (lake/metadata.bars_snapshot_for);
otherwise the caller falls back to ticks. Bar files never change either, so each one is decoded once per process
and kept with its hour and day partials (a few MB for millions of trades): the whole lake's daily VWAP merges a
partial per file and symbol-day.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict

import pyarrow.parquet as pq

from k2.lake.fileio import open_input
from k2.lake.metadata import BARS_TABLE, bars_snapshot_for
from k2.lake.partials import MINUTE_US, Partials, coarsen, from_arrow
from k2.query.aggregate import partial_step
from k2.query.plan import Plan, Planner, to_micros


class StoredBars:
    """Decoded bar files by path (bounded, least recently used out), each with partials per kept step."""

    def __init__(self, planner: Planner, max_files: int = 8192) -> None:
        self._planner = planner
        self._files: OrderedDict[str, dict[int, Partials | None]] = OrderedDict()
        self._max = max_files
        self._lock = threading.Lock()

    def partials(self, trades: Plan, symbols: list[str] | None, start: dt.datetime | None,
                 end: dt.datetime | None, step_us: int | None) -> Partials | None:
        """Partials of `symbols` in [start, end) for bars of `step_us` as of the plan's trades snapshot; None when
        the bar table does not cover that snapshot, or the window or interval is not on minute boundaries."""
        start_us = to_micros(start) if start is not None else None
        end_us = to_micros(end) if end is not None else None
        size = partial_step(step_us, start_us, end_us)
        if size is None or trades.table is None or trades.snapshot_id is None:
            return None
        bars = self._planner.table(BARS_TABLE)
        if bars is None:
            return None
        covering = bars_snapshot_for(bars, trades.table, trades.snapshot_id)
        if covering is None:
            return None
        plan = self._planner.plan(BARS_TABLE, symbols, start, end, snapshot_id=covering)
        parts = []
        for path in plan.paths:
            partials = self._of(path, size)
            if partials is None:
                return None
            parts.append(partials.select(symbols, start_us, end_us))
        return Partials.concat(parts) if parts else Partials.empty()

    def _of(self, path: str, size: int) -> Partials | None:
        with self._lock:
            kept = self._files.get(path)
            if kept is not None:
                self._files.move_to_end(path)
                if size in kept:
                    return kept[size]
        if kept is None:
            with open_input(path) as stream:
                kept = {MINUTE_US: from_arrow(pq.ParquetFile(stream).read())}
        minutes = kept[MINUTE_US]
        if size not in kept:
            kept[size] = coarsen(minutes, size) if minutes is not None else None
        with self._lock:
            self._files[path] = kept
            self._files.move_to_end(path)
            while len(self._files) > self._max:
                self._files.popitem(last=False)
        return kept[size]
