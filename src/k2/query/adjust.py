"""Back-adjustment of bars for splits and cash dividends (corporate actions from the reference data).

Method: multiplicative back-adjustment (as CRSP and most vendors do). Each action with ex-date E gives a factor
for every price before E, and history is multiplied by the product of the factors of all later actions, so that
the latest prices are the traded ones and returns across an ex-date are not broken by it:
- split "a:b" (a new shares for every b old): price factor b/a, volume factor a/b;
- cash dividend D per share: price factor 1 - D / C, where C is the last trade price before E (volume unchanged);
- mergers are not adjusted (they end a series rather than rescale it).
An action takes effect at 00:00 of its ex-date in the exchange's time zone; a bar is adjusted for it when the bar
ends at or before that instant (a bar that straddles it, such as a UTC day for a far-east exchange, stays as
traded: use `k2 query summary` for session-aligned days). Adjusted prices are rounded to 8 decimals (half to even).
Raw prices are the default everywhere.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from enum import StrEnum
from fractions import Fraction
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.arrow_util import decimal_from_unscaled, micros, numpy_of, unscaled_from_decimal
from k2.errors import QueryError
from k2.query.plan import to_micros

PRICE_COLUMNS = ("open", "high", "low", "close", "vwap")


class Adjust(StrEnum):
    NONE = "none"
    SPLITS = "splits"
    ALL = "all"  # splits and cash dividends


def ratio_factor(ratio: str) -> Fraction:
    """'a:b' → the price factor b/a."""
    try:
        new, old = (Fraction(part.strip()) for part in ratio.split(":"))
    except (ValueError, ZeroDivisionError):
        raise QueryError(f"split ratio {ratio!r} is not like 2:1") from None
    if new <= 0 or old <= 0:
        raise QueryError(f"split ratio {ratio!r} is not like 2:1")
    return old / new


def adjust_bars(
    bars: pa.Table, actions: pa.Table, mode: Adjust, zone_of: Callable[[str], str],
    close_before: Callable[[str, dt.datetime], Decimal | None], time_column: str = "bar_start",
    step_us: int = 0, price_columns: tuple[str, ...] = PRICE_COLUMNS, volume_columns: tuple[str, ...] = ("volume",),
) -> pa.Table:
    """`bars` (symbol, a start time of bars of `step_us`, or a session date; prices, volume) back-adjusted. Ticks
    are bars of one µs: a tick is adjusted for an action when its ts is before the action's instant."""
    if mode is Adjust.NONE or bars.num_rows == 0 or actions.num_rows == 0:
        return bars
    price_factor = np.ones(bars.num_rows)
    volume_factor = np.ones(bars.num_rows)
    symbols = np.array(bars.column("symbol").to_pylist(), object)
    ends = _ends(bars.column(time_column), zone_of, symbols, step_us)
    for symbol in sorted(set(symbols.tolist())):
        events = _events(actions, symbol, mode, zone_of(symbol), close_before)
        rows = symbols == symbol
        for instant, price, volume in events:
            before = rows & (ends <= instant)
            price_factor[before] *= price
            volume_factor[before] *= volume
    columns = {name: bars.column(name) for name in bars.column_names}
    for name in price_columns:
        if name in columns:
            prices = columns[name].combine_chunks()
            unscaled = unscaled_from_decimal(prices)
            valid = numpy_of(prices.is_valid())
            columns[name] = decimal_from_unscaled(np.rint(unscaled * price_factor).astype(np.int64), 18, 8, valid)
    for name in volume_columns:
        if name not in columns:
            continue
        volumes = columns[name].combine_chunks()
        valid = volumes.is_valid()
        scaled = np.rint(numpy_of(volumes.fill_null(0)) * volume_factor).astype(np.int64)
        columns[name] = pa.array(scaled, pa.int64(), mask=numpy_of(pc.invert(valid)))
    return pa.table(columns, schema=bars.schema)


def _ends(column: pa.ChunkedArray, zone_of: Callable[[str], str], symbols: np.ndarray, step_us: int) -> np.ndarray:
    """µs since the epoch where each bar ends; a session date ends at 00:00 of the next day in its zone."""
    if pa.types.is_date(column.type):
        days = column.to_pylist()
        return np.array([_local_midnight(day + dt.timedelta(days=1), zone_of(s))
                         for day, s in zip(days, symbols, strict=True)], np.int64)
    return micros(column) + step_us


def _local_midnight(day: dt.date, zone: str) -> int:
    return to_micros(dt.datetime.combine(day, dt.time(), ZoneInfo(zone)))


def action_instant(ex_date: dt.date, zone: str) -> int:
    """When an action takes effect (µs since the epoch): 00:00 of its ex-date in the exchange's zone; a tick
    before it is adjusted for it."""
    return _local_midnight(ex_date, zone)


def _events(actions: pa.Table, symbol: str, mode: Adjust, zone: str,
            close_before: Callable[[str, dt.datetime], Decimal | None]) -> list[tuple[int, float, float]]:
    """(effective instant, price factor, volume factor) of the symbol's actions."""
    events = []
    for row in actions.to_pylist():
        if row["symbol"] != symbol:
            continue
        instant = _local_midnight(row["ex_date"], zone)
        if row["action"] == "SPLIT" and row.get("ratio"):
            factor = ratio_factor(row["ratio"])
            events.append((instant, float(factor), float(1 / factor)))
        elif row["action"] == "DIVIDEND" and mode is Adjust.ALL and row.get("amount") is not None:
            when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=instant)
            close = close_before(symbol, when)
            if close is not None and close > row["amount"]:
                events.append((instant, float(1 - row["amount"] / close), 1.0))
    return events
