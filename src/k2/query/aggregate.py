"""Bars and VWAP from per-file minute partials, in numpy integers.

Each data file in the hot tier gets its (symbol, minute) partial bars once: open and close with their (ts,
sequence), high, low, volume, trade count and the exact value sum(price x size) in unscaled integers. Files never
change, so the partials stay valid as long as the file does. A bar of any whole number of minutes (1m to 1d),
for a window on minute boundaries, is then a merge of partials: no tick is read again, and the whole lake's daily
VWAP costs a sort of ~100k partial rows instead of a pass over millions of ticks. This is the in-memory form of
the materialized 1-minute bars (docs/decisions/0011-query-engine.md); anything else (second bars, a window cut
mid-minute, a value that could overflow 64 bits) takes the raw-tick path in DuckDB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from k2.arrow_util import decimal_from_unscaled, micros, symbol_runs, unscaled_from_decimal

MINUTE_US = 60_000_000
_SAFE = 2**62  # sums below this fit int64 with room for the rounding arithmetic

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Partials:
    """Partial bars sorted by (symbol, minute); symbols as names."""

    symbol: npt.NDArray[np.object_]
    exchange: npt.NDArray[np.object_]
    minute: I64
    open_ts: I64
    open_seq: I64
    open: I64
    close_ts: I64
    close_seq: I64
    close: I64
    high: I64
    low: I64
    volume: I64
    trades: I64
    value: I64

    def __len__(self) -> int:
        return len(self.minute)

    def take(self, rows: npt.NDArray[np.intp]) -> Partials:
        return Partials(*(getattr(self, f)[rows] for f in _FIELDS))

    def select(self, symbols: list[str] | None, start_us: int | None, end_us: int | None) -> Partials:
        """The partials of `symbols` (all when None) with start ≤ minute < end (binary searches: sorted)."""
        ranges = [(0, len(self))] if symbols is None else [
            (int(np.searchsorted(self.symbol, s, "left")), int(np.searchsorted(self.symbol, s, "right")))
            for s in sorted(set(symbols))
        ]
        pieces = []
        for first, stop in ranges:
            minutes = self.minute[first:stop]
            low = first + (int(np.searchsorted(minutes, start_us, "left")) if start_us is not None else 0)
            high = first + (int(np.searchsorted(minutes, end_us, "left")) if end_us is not None else stop - first)
            if high > low:
                pieces.append(np.arange(low, high))
        if len(pieces) == 1 and len(pieces[0]) == len(self):
            return self
        rows = np.concatenate(pieces) if pieces else np.empty(0, np.int64)
        return Partials(*(getattr(self, f)[rows] for f in _FIELDS))

    @staticmethod
    def concat(parts: list[Partials]) -> Partials:
        return Partials(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = tuple(Partials.__dataclass_fields__)


def minute_partials(table: pa.Table, ts: I64, symbols: dict[str, tuple[int, int]]) -> Partials | None:
    """The partials of one file sorted by (symbol, ts, sequence); None when the value sums could overflow."""
    n = table.num_rows
    price = unscaled_from_decimal(table.column("price").combine_chunks())
    size = np.asarray(table.column("size").combine_chunks().to_numpy(zero_copy_only=False), np.int64)
    sequence = np.asarray(table.column("sequence").combine_chunks().to_numpy(zero_copy_only=False), np.int64)
    if n == 0:
        return None
    minute = ts // MINUTE_US * MINUTE_US
    change = np.empty(n, bool)
    change[0] = True
    np.not_equal(minute[1:], minute[:-1], out=change[1:])
    names = sorted(symbols, key=lambda s: symbols[s][0])
    symbol_starts = np.array([symbols[s][0] for s in names], np.int64)
    change[symbol_starts] = True
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], n)
    trades = ends - starts
    if int(np.abs(price).max()) * int(np.abs(size).max()) * int(trades.max()) >= _SAFE:
        return None
    owner = np.searchsorted(symbol_starts, starts, "right") - 1
    exchanges = np.array(table.column("exchange").take(pa.array(symbol_starts)).to_pylist(), object)
    return Partials(
        symbol=np.array(names, object)[owner], exchange=exchanges[owner], minute=minute[starts],
        open_ts=ts[starts], open_seq=sequence[starts], open=price[starts],
        close_ts=ts[ends - 1], close_seq=sequence[ends - 1], close=price[ends - 1],
        high=np.maximum.reduceat(price, starts), low=np.minimum.reduceat(price, starts),
        volume=np.add.reduceat(size, starts), trades=trades, value=np.add.reduceat(price * size, starts),
    )


@dataclass(frozen=True)
class Rolled:
    """Bars of `step` (or one per symbol over everything when step is None), in (symbol, bar_start) order."""

    symbol: npt.NDArray[np.object_]
    exchange: npt.NDArray[np.object_]
    bar_start: I64
    open: I64
    high: I64
    low: I64
    close: I64
    volume: I64
    trades: I64
    vwap: I64  # unscaled, rounded half to even
    first_ts: I64
    last_ts: I64


def coarsen(partials: Partials, step_us: int | None, buckets: I64 | None = None) -> Partials | None:
    """Merge partials into buckets of `step_us` (a whole number of their own buckets; None: one per symbol), or
    into the given `buckets` (one number per partial, e.g. a session date), still as partials; None when a value
    sum could overflow."""
    if len(partials) == 0:
        return partials
    names, codes = np.unique(partials.symbol, return_inverse=True)  # names sorted: output in symbol order
    if buckets is not None:
        bucket = buckets
    elif step_us:
        bucket = partials.minute // step_us * step_us
    else:
        bucket = np.full(len(partials), partials.minute.min())
    by_open = np.lexsort((partials.open_seq, partials.open_ts, bucket, codes))
    by_close = np.lexsort((partials.close_seq, partials.close_ts, bucket, codes))
    key_codes, key_bucket = codes[by_open], bucket[by_open]
    change = np.empty(len(partials), bool)
    change[0] = True
    change[1:] = (key_codes[1:] != key_codes[:-1]) | (key_bucket[1:] != key_bucket[:-1])
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], len(partials))
    if int(np.add.reduceat(np.abs(partials.value[by_open]), starts).max()) >= _SAFE:
        return None
    first, last = by_open[starts], by_close[ends - 1]
    return Partials(
        symbol=names[key_codes[starts]], exchange=partials.exchange[first], minute=key_bucket[starts],
        open_ts=partials.open_ts[first], open_seq=partials.open_seq[first], open=partials.open[first],
        close_ts=partials.close_ts[last], close_seq=partials.close_seq[last], close=partials.close[last],
        high=np.maximum.reduceat(partials.high[by_open], starts),
        low=np.minimum.reduceat(partials.low[by_open], starts),
        volume=np.add.reduceat(partials.volume[by_open], starts),
        trades=np.add.reduceat(partials.trades[by_open], starts),
        value=np.add.reduceat(partials.value[by_open], starts),
    )


def roll_up(partials: Partials, step_us: int | None, buckets: I64 | None = None) -> Rolled | None:
    """Bars of `step_us` (or of the given per-partial `buckets`) from partials; None when a sum could overflow."""
    merged = coarsen(partials, step_us, buckets)
    if merged is None:
        return None
    return Rolled(
        symbol=merged.symbol, exchange=merged.exchange, bar_start=merged.minute, open=merged.open,
        high=merged.high, low=merged.low,
        close=merged.close, volume=merged.volume, trades=merged.trades,
        vwap=_divide_half_even(merged.value, merged.volume), first_ts=merged.open_ts, last_ts=merged.close_ts,
    )


# the bucket sizes each hot file keeps partials for, coarsest first: a query uses the coarsest that divides its
# interval and its window's bounds (a day's VWAP over the whole lake merges one partial per file and symbol-day)
PARTIAL_STEPS = (86_400_000_000, 3_600_000_000, MINUTE_US)


def partial_step(step_us: int | None, start_us: int | None, end_us: int | None) -> int | None:
    """The coarsest kept bucket size usable for bars of `step_us` over [start, end); None: raw ticks only."""
    for size in PARTIAL_STEPS:
        if (step_us is None or step_us % size == 0) and all(t is None or t % size == 0 for t in (start_us, end_us)):
            return size
    return None


def _divide_half_even(value: I64, volume: I64) -> I64:
    safe = np.where(volume == 0, 1, volume)
    quotient, remainder = np.divmod(value, safe)
    twice = 2 * remainder
    up = (twice > safe) | ((twice == safe) & (quotient % 2 == 1))
    rounded: I64 = quotient + up.astype(np.int64)
    return rounded


def raw_partials(rows: pa.Table) -> Partials | None:
    """Minute partials of trades read as raw ticks in (symbol, ts, sequence) order (the path without the hot
    tier); None when empty or not exact."""
    if rows.num_rows == 0:
        return None
    rows = rows.combine_chunks()
    return minute_partials(rows, micros(rows.column("ts")), symbol_runs(rows))


def price_array(unscaled: I64) -> pa.Array:
    return decimal_from_unscaled(unscaled, 18, 8)


def micros_array(values: I64) -> pa.Array:
    return pa.array(values, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
