"""Synthetic but realistic trading days: U-shaped intraday activity, random-walk prices on a tick grid, round lots.

Reproducible: the same (seed, day, symbols, count) always gives the same ticks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from k2.arrow_util import decimal_from_unscaled, unscaled_from_decimal

DEFAULT_SYMBOLS = ("ALPHA", "BRAVO", "CHARL", "DELTA", "ECHO")
SYNTHETIC_EXCHANGE = "K2X"
SYNTHETIC_TIMEZONE = "America/New_York"  # its session, 14:30-21:00 UTC, is 09:30-16:00 there in winter
SESSION_OPEN_UTC = dt.time(14, 30)
SESSION_SECONDS = 6.5 * 3600
PRICE_SCALE = 10**8
TICK = 10**6  # 0.01 in units of 1e-8


def _symbol_seed(seed: int, day: dt.date, symbol: str) -> list[int]:
    return [seed, day.toordinal(), *symbol.encode()]


def _symbol_day(seed: int, day: dt.date, symbol: str, count: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(_symbol_seed(seed, day, symbol))
    open_us = int(dt.datetime.combine(day, SESSION_OPEN_UTC, dt.UTC).timestamp() * 1_000_000)
    # U-shaped intensity: busy at the open and the close, quiet at lunch
    offsets = np.sort(rng.beta(0.55, 0.55, count)) * SESSION_SECONDS * 1_000_000
    ts = open_us + offsets.astype(np.int64)
    base_rng = np.random.default_rng([seed, *symbol.encode()])  # a symbol keeps its price level across days
    start_price = float(base_rng.uniform(10, 400))
    drift = rng.normal(0, 0.02)
    steps = rng.normal(drift / count, 0.015 / np.sqrt(count), count)
    prices = start_price * np.exp(np.cumsum(steps))
    unscaled = np.maximum(1, np.round(prices * PRICE_SCALE / TICK)).astype(np.int64) * TICK
    lots = rng.geometric(0.35, count)
    odd = rng.random(count) < 0.08
    sizes = np.where(odd, rng.integers(1, 100, count), lots * 100).astype(np.int64)
    sides = rng.choice(np.array(["BUY", "SELL"]), count)
    flagged = rng.random(count) < 0.03  # a few trades carry a condition code
    return {"ts": ts, "price": unscaled, "size": sizes, "side": sides, "flagged": flagged}


def generate_trades(
    day: dt.date,
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    trades: int = 100_000,
    seed: int = 42,
    exchange: str = SYNTHETIC_EXCHANGE,
) -> pa.Table:
    """About `trades` trades for `day`, split unevenly across `symbols`, sorted by time."""
    weights = np.random.default_rng([seed, day.toordinal()]).dirichlet(np.full(len(symbols), 4.0))
    counts = np.maximum(1, np.round(weights * trades)).astype(int)
    counts[-1] = max(1, trades - int(counts[:-1].sum()))
    parts = []
    for symbol, count in zip(symbols, counts, strict=True):
        cols = _symbol_day(seed, day, symbol, int(count))
        parts.append(
            pl.DataFrame(
                {
                    "exchange": exchange,
                    "symbol": symbol,
                    "ts": pl.Series(cols["ts"]).cast(pl.Datetime("us", "UTC")),
                    "sequence": np.arange(1, count + 1, dtype=np.int64),
                    "price_unscaled": cols["price"],
                    "size": cols["size"],
                    "side": cols["side"],
                    "flagged": cols["flagged"],
                }
            ).with_columns(conditions=pl.when("flagged").then(pl.lit("I"))).drop("flagged")
        )
    frame = (
        pl.concat(parts)
        .with_columns(
            trade_id=pl.col("symbol") + pl.lit(f"-{day:%Y%m%d}-") + pl.col("sequence").cast(pl.String).str.zfill(7)
        )
        .sort("ts", "symbol", "sequence")
    )
    table = frame.drop("price_unscaled").to_arrow()
    price = decimal_from_unscaled(frame["price_unscaled"].to_numpy(), 18, 8)
    table = table.append_column("price", price)
    order = ["exchange", "symbol", "ts", "sequence", "trade_id", "price", "size", "side", "conditions"]
    return table.select(order)


def write_generic_csv(table: pa.Table, path: str) -> None:
    """Write trades or quotes in K2's generic headered CSV layouts (ISO-8601 UTC timestamps)."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    frame = frame.with_columns(
        pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%S%.6fZ") for c in ("ts", "valid_from") if c in frame.columns
    )
    frame.drop([c for c in ("ingest_ts", "source_line") if c in frame.columns]).write_csv(path)


def generate_quotes(
    day: dt.date,
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    quotes: int = 100_000,
    seed: int = 42,
    exchange: str = SYNTHETIC_EXCHANGE,
) -> pa.Table:
    """About `quotes` L1 quote updates for `day` around the same price paths as `generate_trades`: a spread of a
    few ticks, round-lot sizes, and an empty ask side for the first update of each symbol (pre-open book)."""
    trades = generate_trades(day, symbols, quotes, seed, exchange)
    rng = np.random.default_rng([seed, day.toordinal(), 7])
    mid_unscaled = unscaled_from_decimal(trades["price"].combine_chunks())
    half_spread = rng.integers(1, 4, trades.num_rows) * TICK
    bid = mid_unscaled - half_spread
    ask = mid_unscaled + half_spread
    ask_valid = trades["sequence"].to_numpy() != 1
    bid_size = rng.geometric(0.3, trades.num_rows).astype(np.int64) * 100
    ask_size = rng.geometric(0.3, trades.num_rows).astype(np.int64) * 100
    return pa.table({
        "exchange": trades["exchange"],
        "symbol": trades["symbol"],
        "ts": trades["ts"],
        "sequence": trades["sequence"],
        "bid_price": decimal_from_unscaled(np.maximum(bid, TICK), 18, 8),
        "ask_price": decimal_from_unscaled(ask, 18, 8, valid=ask_valid),
        "bid_size": pa.array(bid_size),
        "ask_size": pa.array(np.where(ask_valid, ask_size, 0), mask=~ask_valid),
    })


def generate_reference(
    symbols: Sequence[str] = DEFAULT_SYMBOLS, valid_from: dt.date = dt.date(2026, 1, 1),
    exchange: str = SYNTHETIC_EXCHANGE,
) -> pa.Table:
    """Instrument reference rows for the synthetic symbols (USD, lots of 100, 0.01 tick, listed)."""
    count = len(symbols)
    start = dt.datetime.combine(valid_from, dt.time(), dt.UTC)
    return pa.table({
        "exchange": [exchange] * count,
        "symbol": list(symbols),
        "name": [f"{symbol.title()} Synthetic Corp" for symbol in symbols],
        "isin": pa.nulls(count, pa.string()),
        "currency": ["USD"] * count,
        "lot_size": pa.array([100] * count, pa.int64()),
        "tick_size": decimal_from_unscaled(np.full(count, TICK, dtype=np.int64), 18, 8),
        "listing_status": ["LISTED"] * count,
        "valid_from": pa.array([start] * count, pa.timestamp("us", tz="UTC")),
        "timezone": [SYNTHETIC_TIMEZONE] * count,
    })
