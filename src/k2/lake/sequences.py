"""Rebuilding landed sequence ranges per (exchange, symbol, day) from a table's rows."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa
from pyiceberg.expressions import And, GreaterThanOrEqual, In, LessThan
from pyiceberg.table import Table

from k2.schemas import Dataset

Key = tuple[str, str, dt.date]  # (exchange, symbol, UTC day)
Ranges = npt.NDArray[np.int64]  # shape (n, 2): inclusive [start, end], sorted, disjoint, non-adjacent

EMPTY_RANGES = np.empty((0, 2), dtype=np.int64)


def runs(sequences: npt.NDArray[np.int64]) -> Ranges:
    """Sorted unique sequences → inclusive ranges of consecutive values."""
    if not len(sequences):
        return EMPTY_RANGES
    values = np.unique(sequences)
    breaks = np.flatnonzero(np.diff(values) != 1)
    starts = np.concatenate(([values[0]], values[breaks + 1]))
    ends = np.concatenate((values[breaks], [values[-1]]))
    return np.stack([starts, ends], axis=1)


def merge(a: Ranges, b: Ranges) -> Ranges:
    """Union of two range sets, coalescing overlapping and adjacent ranges."""
    if not len(a):
        return b
    if not len(b):
        return a
    both = np.concatenate([a, b])
    both = both[np.argsort(both[:, 0], kind="stable")]
    reach = np.maximum.accumulate(both[:, 1])
    new_group = np.concatenate(([True], both[1:, 0] > reach[:-1] + 1))
    starts_at = np.flatnonzero(new_group)
    return np.stack([both[starts_at, 0], np.maximum.reduceat(both[:, 1], starts_at)], axis=1)


def contains(ranges: Ranges, sequences: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    if not len(ranges):
        return np.zeros(len(sequences), dtype=bool)
    position = np.searchsorted(ranges[:, 0], sequences, side="right") - 1
    inside: npt.NDArray[np.bool_] = (position >= 0) & (sequences <= ranges[np.maximum(position, 0), 1])
    return inside


def landed_ranges(table: Table, keys: list[Key]) -> dict[Key, Ranges]:
    """Landed sequence ranges of `keys`, read from the table (one scan per day, pruned to those symbols)."""
    table.refresh()
    if table.current_snapshot() is None or not keys:
        return {}
    by_day: dict[dt.date, set[str]] = defaultdict(set)
    for _, symbol, day in keys:
        by_day[day].add(symbol)
    result: dict[Key, Ranges] = {}
    for day, symbols in by_day.items():
        start = dt.datetime.combine(day, dt.time(), dt.UTC)
        row_filter = And(
            And(GreaterThanOrEqual("ts", start.isoformat()),  # type: ignore[call-arg,arg-type]
                LessThan("ts", (start + dt.timedelta(days=1)).isoformat())),  # type: ignore[call-arg,arg-type]
            In("symbol", sorted(symbols)),  # type: ignore[call-arg,arg-type]
        )
        rows = table.scan(row_filter=row_filter, selected_fields=("exchange", "symbol", "sequence")).to_arrow()
        frame = pl.from_arrow(rows)
        assert isinstance(frame, pl.DataFrame)
        for (exchange, symbol), group in frame.group_by(["exchange", "symbol"]):
            result[(str(exchange), str(symbol), day)] = runs(group["sequence"].to_numpy().astype(np.int64))
    return result


# Identity of rows that carry no sequence number.
NATURAL_KEYS: dict[Dataset, tuple[str, ...]] = {
    Dataset.REFERENCE: ("exchange", "symbol", "valid_from"),
    Dataset.CORPORATE_ACTIONS: ("exchange", "symbol", "action", "ex_date"),
}


def landed_keys(table: Table, columns: tuple[str, ...]) -> pa.Table:
    table.refresh()
    if table.current_snapshot() is None:
        return table.schema().as_arrow().empty_table().select(list(columns))
    return table.scan(selected_fields=columns).to_arrow()
