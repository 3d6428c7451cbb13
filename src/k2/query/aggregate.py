"""Bars and VWAP from minute partials (lake/partials.py), in numpy integers.

Partials come from the hot tier (once per data file: files never change, so they stay valid as long as the file
does) or from the materialized 1-minute bar table (lake/bars.py). A bar of any whole number of minutes (1m to 1d),
for a window on minute boundaries, is then a merge of partials: no tick is read again, and the whole lake's daily
VWAP costs a sort of ~100k partial rows instead of a pass over millions of ticks. See
docs/decisions/0011-query-engine.md; anything else (second bars, a window cut
mid-minute, a value that could overflow 64 bits) takes the raw-tick path in DuckDB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from k2.arrow_util import decimal_from_unscaled
from k2.lake.partials import I64, MINUTE_US, Partials, coarsen


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


def price_array(unscaled: I64) -> pa.Array:
    return decimal_from_unscaled(unscaled, 18, 8)


def micros_array(values: I64) -> pa.Array:
    return pa.array(values, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
