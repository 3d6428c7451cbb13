"""Minute partial bars: the exact, mergeable summary of trades that bars, VWAP and daily figures are built from.

A partial covers one (symbol, minute) of some trades: open and close with their (ts, sequence), high, low,
volume, trade count and the exact value sum(price x size), all as unscaled integers. Partials of the same key
merge (coarsen) without reading a tick again, whichever files or batches they came from. The query engine keeps
them per data file in its hot tier (query/tier.py), and the materialized 1-minute bar table (lake/bars.py) stores
them at ingest, so that one-shot processes get bars without reading ticks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from k2.arrow_util import decimal_from_unscaled, micros, numpy_of, symbol_runs, unscaled_from_decimal

MINUTE_US = 60_000_000
SAFE = 2**62  # sums below this fit int64 with room for the rounding arithmetic

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
    def empty() -> Partials:
        names, numbers = np.empty(0, object), np.empty(0, np.int64)
        return Partials(names, names, *([numbers] * (len(_FIELDS) - 2)))

    @staticmethod
    def concat(parts: list[Partials]) -> Partials:
        return Partials(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = tuple(Partials.__dataclass_fields__)


def minute_partials(table: pa.Table, ts: I64, symbols: dict[str, tuple[int, int]]) -> Partials | None:
    """The partials of one file sorted by (symbol, ts, sequence); None when the value sums could overflow."""
    n = table.num_rows
    price = unscaled_from_decimal(table.column("price").combine_chunks())
    size = np.asarray(numpy_of(table.column("size")), np.int64)
    sequence = np.asarray(numpy_of(table.column("sequence")), np.int64)
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
    if int(np.abs(price).max()) * int(np.abs(size).max()) * int(trades.max()) >= SAFE:
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
    if int(np.add.reduceat(np.abs(partials.value[by_open]), starts).max()) >= SAFE:
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


def raw_partials(rows: pa.Table) -> Partials | None:
    """Minute partials of trades read as raw ticks in (symbol, ts, sequence) order (the path without the hot
    tier); None when empty or not exact."""
    if rows.num_rows == 0:
        return None
    rows = rows.combine_chunks()
    return minute_partials(rows, micros(rows.column("ts")), symbol_runs(rows))


_TS = pa.timestamp("us", tz="UTC")
_PRICE = pa.decimal128(18, 8)
# the stored form (lake/bars.py): prices as decimals, the value sum as DECIMAL(38, 8) (exact for any engine)
ARROW_SCHEMA = pa.schema([
    pa.field("exchange", pa.large_string(), nullable=False), pa.field("symbol", pa.large_string(), nullable=False),
    pa.field("minute", _TS, nullable=False), pa.field("open_ts", _TS, nullable=False),
    pa.field("open_seq", pa.int64(), nullable=False), pa.field("open", _PRICE, nullable=False),
    pa.field("close_ts", _TS, nullable=False), pa.field("close_seq", pa.int64(), nullable=False),
    pa.field("close", _PRICE, nullable=False), pa.field("high", _PRICE, nullable=False),
    pa.field("low", _PRICE, nullable=False), pa.field("volume", pa.int64(), nullable=False),
    pa.field("trades", pa.int64(), nullable=False), pa.field("value", pa.decimal128(38, 8), nullable=False),
])
_TIMES = ("minute", "open_ts", "close_ts")
_PRICES = ("open", "close", "high", "low")


def to_arrow(partials: Partials) -> pa.Table:
    columns: dict[str, pa.Array] = {
        "exchange": pa.array(partials.exchange, pa.large_string()),
        "symbol": pa.array(partials.symbol, pa.large_string()),
    }
    for name in ARROW_SCHEMA.names[2:]:
        values = getattr(partials, name)
        if name in _TIMES:
            columns[name] = pa.array(values, pa.int64()).cast(_TS)
        elif name in _PRICES:
            columns[name] = decimal_from_unscaled(values, 18, 8)
        elif name == "value":
            columns[name] = decimal_from_unscaled(values, 38, 8)
        else:
            columns[name] = pa.array(values, pa.int64())
    return pa.table(columns, schema=ARROW_SCHEMA)


def from_arrow(table: pa.Table) -> Partials:
    """Stored partials back as numpy (the rows in any order: sorted here by symbol and minute)."""
    table = table.combine_chunks()
    values: dict[str, np.ndarray] = {
        "symbol": np.array(table.column("symbol").to_pylist(), object),
        "exchange": np.array(table.column("exchange").to_pylist(), object),
    }
    for name in ARROW_SCHEMA.names[2:]:
        column = table.column(name).combine_chunks()
        values[name] = micros(column) if name in _TIMES else (
            unscaled_from_decimal(column) if name in (*_PRICES, "value") else np.asarray(numpy_of(column), np.int64)
        )
    partials = Partials(**values)
    if len(partials) < 2:
        return partials
    _, codes = np.unique(partials.symbol, return_inverse=True)
    return partials.take(np.lexsort((partials.minute, codes)))
