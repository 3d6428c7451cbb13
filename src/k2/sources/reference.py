"""Reference data files → instrument rows and corporate actions.

Recognised by their header:
- ASX `company_info.csv` (company_id,symbol,company_name,ISIN,start_date,end_date) → instruments;
- ASX `dividends.csv` (company id,declared date,ex_date,record_date,pay_date,net amount,gross amount,currency type)
  → DIVIDEND actions; `stock_splits.csv` / `mergers.csv` (company id,effective date,ratio) → SPLIT / MERGER;
- generic instruments: symbol,name,currency[,exchange,isin,lot_size,tick_size,listing_status,valid_from].
ASX dates are MM/DD/YYYY; an instrument is valid from 00:00 Australia/Sydney of its start date. ASX files give no
lot or tick size: lot size 1, tick size unknown (null). A `--- NO RECORDS TO REPORT ---` line means an empty file.
"""

from __future__ import annotations

import csv
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from k2.errors import InputError
from k2.schemas import Dataset
from k2.sources.csv_ticks import ASX_TIMEZONE, string_frames
from k2.sources.lines import first_record
from k2.sources.report import LoadStats, RejectedRow

NO_RECORDS = "--- NO RECORDS TO REPORT ---"
INSTRUMENT_COLUMNS = ["exchange", "symbol", "name", "isin", "currency", "lot_size", "tick_size", "listing_status",
                      "valid_from"]
ACTION_COLUMNS = ["exchange", "symbol", "action", "ex_date", "declared_date", "record_date", "pay_date", "amount",
                  "gross_amount", "currency", "ratio"]
_STATUSES = ("LISTED", "SUSPENDED", "DELISTED")


@dataclass
class ReferenceBatch:
    dataset: Dataset
    table: pa.Table
    stats: LoadStats


_ZONES = zoneinfo.available_timezones()


def _read(path: Path, stats: LoadStats) -> pl.DataFrame:
    """The file's rows as strings with their physical line numbers; unreadable rows go to `stats`."""
    names = [c.strip().lower().replace(" ", "_") for c in next(csv.reader([first_record(path)]), [])]
    frames = list(string_frames(path, names, True, 1_000_000, stats, ignore=lambda text: text.strip() == NO_RECORDS))
    if not frames:
        return pl.DataFrame(schema={**dict.fromkeys(names, pl.String), "_line": pl.Int64})
    return pl.concat(frames)


def _date(column: str) -> pl.Expr:
    return pl.col(column).str.strip_chars().str.strptime(pl.Date, "%m/%d/%Y", strict=False)


def _symbols(company_info: Path | None) -> dict[str, str]:
    if company_info is None or not company_info.exists():
        return {}
    info = _read(company_info, LoadStats())
    return dict(zip(info["company_id"].str.strip_chars().to_list(), info["symbol"].to_list(), strict=True))


def _split(frame: pl.DataFrame, checks: list[tuple[pl.Expr, str]], stats: LoadStats) -> pl.DataFrame:
    reason: pl.Expr = pl.lit(None, pl.String)
    for condition, message in reversed(checks):
        reason = pl.when(condition.fill_null(True)).then(pl.lit(message)).otherwise(reason)
    frame = frame.with_columns(_reason=reason)
    bad = frame.filter(pl.col("_reason").is_not_null())
    stats.rejected.extend(RejectedRow(int(line), str(why)) for line, why in bad.select("_line", "_reason").iter_rows())
    good = frame.filter(pl.col("_reason").is_null())
    stats.rows_valid += good.height
    return good


def _asx_instruments(frame: pl.DataFrame, exchange: str, stats: LoadStats) -> pa.Table:
    frame = frame.with_columns(_from=_date("start_date"))
    good = _split(frame, [
        (pl.col("symbol").str.strip_chars() == "", "symbol is empty"),
        (pl.col("_from").is_null(), "start_date is not MM/DD/YYYY"),
    ], stats)
    valid_from = pl.col("_from").cast(pl.Datetime("us")).dt.replace_time_zone(ASX_TIMEZONE).dt.convert_time_zone("UTC")
    return good.select(
        exchange=pl.lit(exchange), symbol=pl.col("symbol").str.strip_chars(), name=pl.col("company_name"),
        isin=pl.col("isin"), currency=pl.lit("AUD"), lot_size=pl.lit(1, pl.Int64),
        tick_size=pl.lit(None, pl.Decimal(18, 8)), listing_status=pl.lit("LISTED"), valid_from=valid_from,
        timezone=pl.lit(ASX_TIMEZONE),
        source_line=pl.col("_line"),
    ).to_arrow()


def _generic_instruments(frame: pl.DataFrame, exchange: str, stats: LoadStats) -> pa.Table:
    for name in ("exchange", "isin", "lot_size", "tick_size", "listing_status", "valid_from", "timezone"):
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.String).alias(name))
    frame = frame.with_columns(
        _lot=pl.col("lot_size").fill_null("1").str.strip_chars().cast(pl.Int64, strict=False),
        _tick=pl.col("tick_size").str.strip_chars().cast(pl.Decimal(18, 8), strict=False),
        _status=pl.col("listing_status").fill_null("LISTED").str.strip_chars().str.to_uppercase(),
        _zone=pl.when(pl.col("timezone").fill_null("").str.strip_chars() == "").then(None)
        .otherwise(pl.col("timezone").str.strip_chars()),
        _from=pl.col("valid_from").fill_null("1970-01-01").str.strip_chars().str.replace("Z$", "+00:00")
        .str.to_datetime(time_zone="UTC", strict=False),
    )
    good = _split(frame, [
        (pl.col("symbol").str.strip_chars() == "", "symbol is empty"),
        (pl.col("name").str.strip_chars() == "", "name is empty"),
        (pl.col("currency").str.strip_chars() == "", "currency is empty"),
        (pl.col("_lot").is_null() | (pl.col("_lot") <= 0), "lot_size must be a positive integer"),
        (pl.col("tick_size").is_not_null() & pl.col("_tick").is_null(), "tick_size is not a decimal number"),
        (~pl.col("_status").is_in(_STATUSES), f"listing_status is not one of {list(_STATUSES)}"),
        (pl.col("_from").is_null(), "valid_from is not an ISO-8601 date/time"),
        (pl.col("_zone").is_not_null() & ~pl.col("_zone").is_in(sorted(_ZONES)),
         "timezone is not an IANA time zone name (e.g. Australia/Sydney)"),
    ], stats)
    return good.select(
        exchange=pl.col("exchange").fill_null(exchange), symbol=pl.col("symbol").str.strip_chars(), name="name",
        isin=pl.when(pl.col("isin").fill_null("").str.strip_chars() == "").then(None).otherwise(pl.col("isin")),
        currency="currency", lot_size="_lot", tick_size="_tick", listing_status="_status",
        valid_from="_from", timezone="_zone",
        source_line=pl.col("_line"),
    ).to_arrow()


def _asx_actions(frame: pl.DataFrame, action: str, exchange: str, symbols: dict[str, str],
                 stats: LoadStats) -> pa.Table:
    frame = frame.with_columns(_symbol=pl.col("company_id").str.strip_chars().replace_strict(symbols, default=None))
    dividend = action == "DIVIDEND"
    ex_date = "ex_date" if dividend else "effective_date"
    frame = frame.with_columns(_ex=_date(ex_date))
    checks = [
        (pl.col("_symbol").is_null(), "company id is not in company_info.csv (pass --company-info)"),
        (pl.col("_ex").is_null(), f"{ex_date} is not MM/DD/YYYY"),
    ]
    if dividend:
        frame = frame.with_columns(
            _net=pl.col("net_amount").str.strip_chars().cast(pl.Decimal(18, 8), strict=False),
            _gross=pl.col("gross_amount").str.strip_chars().cast(pl.Decimal(18, 8), strict=False),
        )
        checks.append((pl.col("_net").is_null(), "net amount is not a decimal number"))
    good = _split(frame, checks, stats)
    none_date, none_money = pl.lit(None, pl.Date), pl.lit(None, pl.Decimal(18, 8))
    return good.select(
        exchange=pl.lit(exchange), symbol="_symbol", action=pl.lit(action), ex_date="_ex",
        declared_date=_date("declared_date") if dividend else none_date,
        record_date=_date("record_date") if dividend else none_date,
        pay_date=_date("pay_date") if dividend else none_date,
        amount=pl.col("_net") if dividend else none_money,
        gross_amount=pl.col("_gross") if dividend else none_money,
        currency=pl.col("currency_type") if dividend else pl.lit(None, pl.String),
        ratio=pl.lit(None, pl.String) if dividend else pl.col("ratio"),
        source_line=pl.col("_line"),
    ).to_arrow()


def read_reference(path: Path, exchange: str | None = None, company_info: Path | None = None) -> ReferenceBatch:
    """Parse one reference-data file; bad rows are in the stats with their line number and reason."""
    stats = LoadStats()
    frame = _read(path, stats)
    columns = set(frame.columns)
    exchange = exchange or "ASX"
    info = company_info or path.parent / "company_info.csv"
    if {"company_id", "symbol", "company_name", "start_date"} <= columns:
        return ReferenceBatch(Dataset.REFERENCE, _asx_instruments(frame, exchange, stats), stats)
    if {"company_id", "ex_date", "net_amount"} <= columns:
        return ReferenceBatch(Dataset.CORPORATE_ACTIONS,
                              _asx_actions(frame, "DIVIDEND", exchange, _symbols(info), stats), stats)
    if {"company_id", "effective_date", "ratio"} <= columns:
        action = "MERGER" if "merger" in path.name.lower() else "SPLIT"
        return ReferenceBatch(Dataset.CORPORATE_ACTIONS,
                              _asx_actions(frame, action, exchange, _symbols(info), stats), stats)
    if {"symbol", "name", "currency"} <= columns:
        return ReferenceBatch(Dataset.REFERENCE, _generic_instruments(frame, exchange, stats), stats)
    raise InputError(
        f"{path}: not a known reference layout (header {sorted(columns - {'_line'})}); expected ASX company_info, "
        "dividends, stock_splits or mergers, or a generic file with symbol,name,currency"
    )
