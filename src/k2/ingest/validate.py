"""Semantic checks on decoded ticks; rows that fail go to the dead-letter topic with the reason."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pyarrow as pa

from k2.codec.records import MESSAGE_INDEX
from k2.schemas import Dataset, max_lengths


def _length_checks(dataset: Dataset) -> list[tuple[pl.Expr, str]]:
    return [(pl.col(name).str.len_bytes() > limit, f"{name} is longer than {limit} bytes")
            for name, limit in max_lengths(dataset).items()]


def _checks(dataset: Dataset, latest: dt.datetime) -> list[tuple[pl.Expr, str]]:
    return [*_length_checks(dataset), *_value_checks(dataset, latest)]


def _value_checks(dataset: Dataset, latest: dt.datetime) -> list[tuple[pl.Expr, str]]:
    future = (pl.col("ts") > pl.lit(latest), f"timestamp is in the future (beyond {latest.isoformat()})")
    empty_symbol = (pl.col("symbol").str.strip_chars() == "", "symbol is empty")
    if dataset is Dataset.TRADES:
        return [
            empty_symbol,
            (pl.col("size") <= 0, "size must be > 0"),
            (pl.col("price") <= 0, "price must be > 0"),
            future,
        ]
    if dataset is Dataset.QUOTES:
        return [
            empty_symbol,
            ((pl.col("bid_size") < 0) | (pl.col("ask_size") < 0), "quote size must be >= 0"),
            ((pl.col("bid_price") <= 0) | (pl.col("ask_price") <= 0), "quote price must be > 0 (empty side = null)"),
            future,
        ]
    return [empty_symbol]


def validate(
    dataset: Dataset, table: pa.Table, max_future_skew: dt.timedelta
) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Split decoded rows into valid rows and (message index, reason) failures."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    latest = dt.datetime.now(dt.UTC) + max_future_skew
    checks = _checks(dataset, latest)
    reason: pl.Expr = pl.lit(None, pl.String)
    for condition, message in reversed(checks):  # the first failing check wins
        reason = pl.when(condition.fill_null(False)).then(pl.lit(message)).otherwise(reason)
    frame = frame.with_columns(_reason=reason)
    bad = frame.filter(pl.col("_reason").is_not_null())
    failures = [(int(i), str(r)) for i, r in bad.select(MESSAGE_INDEX, "_reason").iter_rows()]
    if not failures:
        return table, []
    good = table.filter(pa.array(frame["_reason"].is_null().to_numpy()))
    return good, failures
