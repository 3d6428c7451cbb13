"""CSV → validated Arrow batches of trades, streamed in chunks, every bad row reported with its line and reason.

Two layouts:
- `asx`: the ASX tick files (no header; MM/DD/YYYY, HH:MM:SS.mmm Australia/Sydney local time, price, volume,
  qualifier, venue, buyer). The symbol comes from `company_info.csv` (file name = company id) or `--symbol`.
  There are no sequence numbers: file order is exchange order, so sequence = line number in the file.
- `generic`: a header naming at least symbol, ts, price, size; optional exchange, sequence, trade_id, side,
  conditions. `ts` is ISO-8601 (`2024-01-02T14:30:00.123456Z`, an offset, or no zone = UTC).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from k2.errors import InputError
from k2.schemas import Dataset, max_lengths
from k2.sources.lines import RecordBlock, first_record, read_records
from k2.sources.report import LoadStats, RejectedRow

Layout = Literal["asx", "generic"]

ASX_TRADE_COLUMNS = ["date", "time", "price", "volume", "qualifier", "venue", "buyer"]
ASX_TIMEZONE = "Australia/Sydney"
GENERIC_REQUIRED = ("symbol", "ts", "price", "size")
GENERIC_OPTIONAL = ("exchange", "sequence", "trade_id", "side", "conditions", "venue")
TRADE_COLUMNS = ["exchange", "symbol", "ts", "sequence", "trade_id", "price", "size", "side", "conditions", "venue"]
_SIDES = {"": "UNKNOWN", "UNKNOWN": "UNKNOWN", "BUY": "BUY", "B": "BUY", "SELL": "SELL", "S": "SELL"}
_BYTES_PER_ROW_GUESS = 64


def detect_layout(path: Path, required: tuple[str, ...] = GENERIC_REQUIRED) -> Layout:
    """generic if the first line is a header naming the required columns, else the ASX layout."""
    names = set(_header(path))
    return "generic" if set(required) <= names else "asx"


def asx_symbol(path: Path, company_info: Path | None = None) -> str:
    """Symbol of an ASX file named <company id>.csv, looked up in company_info.csv."""
    info = company_info or path.parent.parent / "reference-data" / "company_info.csv"
    if not info.exists():
        raise InputError(f"no symbol for {path.name}: pass --symbol or --company-info (looked for {info})")
    table = pl.read_csv(info, infer_schema=False)
    match = table.filter(pl.col("company_id") == path.stem)
    if match.height != 1:
        raise InputError(f"company id {path.stem!r} (from the file name) is not in {info}")
    return str(match["symbol"][0])


def _parse_block(
    block: RecordBlock, names: list[str], rejected: list[RejectedRow], ignore: Callable[[str], bool] | None = None
) -> pl.DataFrame:
    """Parse a block of good records; a record with the wrong number of fields is rejected with its line, unless
    `ignore` says it is not a row at all (like an exchange's "no records" marker)."""
    skipped: list[int] = []

    def invalid(row: pacsv.InvalidRow) -> str:
        index = (row.number or 0) - 1  # pyarrow counts records, 1-based, within this block
        skipped.append(index)
        if ignore is not None and ignore(row.text):
            return "skip"
        line = int(block.lines[index]) if 0 <= index < len(block.lines) else -1
        rejected.append(RejectedRow(
            line, f"expected {row.expected_columns} columns, got {row.actual_columns}: {row.text[:80]!r}"))
        return "skip"

    table = pacsv.read_csv(
        io.BytesIO(block.data),
        read_options=pacsv.ReadOptions(use_threads=False, column_names=names, block_size=max(1 << 20, len(block.data))),
        parse_options=pacsv.ParseOptions(invalid_row_handler=invalid, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, strings_can_be_null=False, quoted_strings_can_be_null=False
        ),
    )
    lines = np.delete(block.lines, skipped) if skipped else block.lines
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.with_columns(_line=pl.Series(lines, dtype=pl.Int64))


def string_frames(
    path: Path, names: list[str], header: bool, chunk_rows: int, stats: LoadStats,
    ignore: Callable[[str], bool] | None = None,
) -> Iterator[pl.DataFrame]:
    """The file's rows as string columns plus `_line` (physical line numbers); rows no parser can read go to
    `stats` with the reason."""
    for block in read_records(path, max(1 << 10, chunk_rows * _BYTES_PER_ROW_GUESS), skip_first=header):
        rejected = list(block.rejected)
        frame = _parse_block(block, names, rejected, ignore) if len(block) else None
        stats.rows_read += len(rejected) + (frame.height if frame is not None else 0)
        stats.rejected.extend(rejected)
        if frame is not None and frame.height:
            yield frame


def _header(path: Path) -> list[str]:
    """The first line's column names, lower case (a BOM dropped, a bad byte replaced)."""
    return [c.strip().lower() for c in next(csv.reader([first_record(path)]), [])]


def _reason(checks: list[tuple[pl.Expr, pl.Expr]]) -> pl.Expr:
    """The first failing check's message per row, or null when the row is valid."""
    expr: Any = pl.when(checks[0][0]).then(checks[0][1])  # polars' When/Then chain types differ per step
    for condition, message in checks[1:]:
        expr = expr.when(condition).then(message)
    result: pl.Expr = expr.otherwise(None)
    return result


def _quoted(column: str) -> pl.Expr:
    return pl.lit("'") + pl.col(column).str.slice(0, 40) + pl.lit("'")


def _price_checks(price: str) -> list[tuple[pl.Expr, pl.Expr]]:
    return [
        (pl.col("_price").is_null(), pl.lit("price ") + _quoted(price) + pl.lit(" is not a decimal number")),
        (pl.col("_price") <= 0, pl.lit("price ") + _quoted(price) + pl.lit(" must be > 0")),
    ]


def _size_checks(size: str) -> list[tuple[pl.Expr, pl.Expr]]:
    return [
        (pl.col("_size").is_null(), pl.lit("size ") + _quoted(size) + pl.lit(" is not an integer")),
        (pl.col("_size") <= 0, pl.lit("size ") + _quoted(size) + pl.lit(" must be > 0")),
    ]


def _asx_ts() -> pl.Expr:
    local = pl.concat_str("date", pl.lit(" "), "time").str.strptime(
        pl.Datetime("us"), "%m/%d/%Y %H:%M:%S%.f", strict=False
    )
    utc = local.dt.replace_time_zone(ASX_TIMEZONE, ambiguous="earliest", non_existent="null")
    return utc.dt.convert_time_zone("UTC")


def _asx_ts_check() -> tuple[pl.Expr, pl.Expr]:
    return (pl.col("_ts").is_null(), pl.lit("date/time ") + _quoted("date") + pl.lit(" ") + _quoted("time")
            + pl.lit(" is not MM/DD/YYYY HH:MM:SS.mmm (Australia/Sydney)"))


def _asx_frame(raw: pl.DataFrame, symbol: str, exchange: str, _: _Sequencer | None = None) -> pl.DataFrame:
    frame = raw.with_columns(
        _ts=_asx_ts(),
        _price=pl.col("price").str.strip_chars().cast(pl.Decimal(18, 8), strict=False),
        _size=pl.col("volume").str.strip_chars().cast(pl.Int64, strict=False),
    )
    checks = [_asx_ts_check(), *_price_checks("price"), *_size_checks("volume")]
    frame = frame.with_columns(_reason=_reason(checks))
    return frame.with_columns(
        exchange=pl.lit(exchange),
        symbol=pl.lit(symbol),
        ts=pl.col("_ts"),
        sequence=pl.col("_line"),
        trade_id=pl.col("_ts").dt.convert_time_zone(ASX_TIMEZONE).dt.strftime("%Y%m%d")
        + pl.lit("-")
        + pl.col("_line").cast(pl.String).str.zfill(7),
        price=pl.col("_price"),
        size=pl.col("_size"),
        side=pl.lit("UNKNOWN"),
        conditions=_blank_as_null("qualifier"),
        venue=_blank_as_null("venue"),
    )


def _parse_iso_utc(column: str) -> pl.Expr:
    text = pl.col(column).str.strip_chars().str.replace("T", " ").str.replace(r"Z$", "+00:00")
    with_zone = pl.when(text.str.contains(r"[+-]\d\d:?\d\d$")).then(text).otherwise(text + pl.lit("+00:00"))
    return with_zone.str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%d %H:%M:%S%.f%z", strict=False)


class _Sequencer:
    """Per-symbol running count for files without a sequence column, carried across chunks."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def assign(self, frame: pl.DataFrame) -> pl.Series:
        offsets = pl.DataFrame({"symbol": list(self.last), "_base": list(self.last.values())}, schema={
            "symbol": pl.String, "_base": pl.Int64})
        numbered = frame.select("symbol").with_columns(_n=pl.int_range(1, pl.len() + 1).over("symbol"))
        numbered = numbered.join(offsets, on="symbol", how="left", maintain_order="left")
        sequence = numbered["_n"].cast(pl.Int64) + numbered["_base"].fill_null(0)
        for symbol, value in numbered.with_columns(_s=sequence).group_by("symbol").agg(pl.col("_s").max()).iter_rows():
            self.last[symbol] = value
        return sequence


def _blank_as_null(column: str) -> pl.Expr:
    value = pl.col(column).str.strip_chars()
    return pl.when(value.fill_null("") == "").then(None).otherwise(value)


def _with_optional(raw: pl.DataFrame, names: tuple[str, ...]) -> pl.DataFrame:
    return raw.with_columns(pl.lit(None, pl.String).alias(n) for n in names if n not in raw.columns)


def _sequenced(frame: pl.DataFrame, sequencer: _Sequencer) -> pl.DataFrame:
    """Fill `_seq` of valid rows that have none with per-symbol running numbers; keeps file order."""
    good = frame.filter(pl.col("_reason").is_null())
    if good["_seq"].null_count():
        good = good.with_columns(_seq=pl.coalesce("_seq", sequencer.assign(good)))
    return pl.concat([good, frame.filter(pl.col("_reason").is_not_null())], how="vertical_relaxed").sort("_line")


def _generic_frame(raw: pl.DataFrame, exchange: str, sequencer: _Sequencer) -> pl.DataFrame:
    raw = _with_optional(raw, GENERIC_OPTIONAL)
    side = pl.col("side").fill_null("").str.strip_chars().str.to_uppercase()
    frame = raw.with_columns(
        _ts=_parse_iso_utc("ts"),
        _price=pl.col("price").str.strip_chars().cast(pl.Decimal(18, 8), strict=False),
        _size=pl.col("size").str.strip_chars().cast(pl.Int64, strict=False),
        _side=side.replace_strict(_SIDES, default=None),
        _seq=pl.col("sequence").str.strip_chars().cast(pl.Int64, strict=False),
        symbol=pl.col("symbol").str.strip_chars(),
    )
    checks = [
        (pl.col("symbol").fill_null("") == "", pl.lit("symbol is empty")),
        (pl.col("_ts").is_null(), pl.lit("ts ") + _quoted("ts") + pl.lit(" is not an ISO-8601 timestamp")),
        *_price_checks("price"),
        *_size_checks("size"),
        (pl.col("_side").is_null(), pl.lit("side ") + _quoted("side") + pl.lit(" is not BUY/SELL/B/S/UNKNOWN")),
        (pl.col("sequence").is_not_null() & (pl.col("sequence") != "") & pl.col("_seq").is_null(),
         pl.lit("sequence ") + _quoted("sequence") + pl.lit(" is not an integer")),
    ]
    frame = _sequenced(frame.with_columns(_reason=_reason(checks)), sequencer)
    return frame.with_columns(
        exchange=pl.col("exchange").fill_null(exchange).replace("", exchange),
        ts=pl.col("_ts"),
        sequence=pl.col("_seq"),
        trade_id=pl.when(pl.col("trade_id").fill_null("") == "")
        .then(pl.col("symbol") + pl.lit("-") + pl.col("_seq").cast(pl.String))
        .otherwise(pl.col("trade_id")),
        price=pl.col("_price"),
        size=pl.col("_size"),
        side=pl.col("_side"),
        conditions=_blank_as_null("conditions"),
        venue=_blank_as_null("venue"),
    )


# ------------------------------------------------------------------------------------------------------- quotes

ASX_QUOTE_COLUMNS = ["date", "time", "bid", "ask", "bid_size", "ask_size"]
GENERIC_QUOTE_REQUIRED = ("symbol", "ts", "bid_price", "ask_price", "bid_size", "ask_size")
QUOTE_COLUMNS = ["exchange", "symbol", "ts", "sequence", "bid_price", "ask_price", "bid_size", "ask_size"]


def _side_checks(side: str, price: str, size: str) -> list[tuple[pl.Expr, pl.Expr]]:
    """An empty side is price 0 (or blank) with size 0 (or blank); a zero price with a size is an error."""
    p, q = pl.col(f"_{side}_price"), pl.col(f"_{side}_size")
    blank_price = pl.col(price).fill_null("").str.strip_chars() == ""
    blank_size = pl.col(size).fill_null("").str.strip_chars() == ""
    return [
        (p.is_null() & ~blank_price, pl.lit(f"{side} price ") + _quoted(price) + pl.lit(" is not a decimal number")),
        (q.is_null() & ~blank_size, pl.lit(f"{side} size ") + _quoted(size) + pl.lit(" is not an integer")),
        (p < 0, pl.lit(f"{side} price ") + _quoted(price) + pl.lit(" is negative")),
        (q < 0, pl.lit(f"{side} size ") + _quoted(size) + pl.lit(" is negative")),
        ((p.fill_null(0) == 0) & (q.fill_null(0) != 0),
         pl.lit(f"{side} price is 0 with size ") + _quoted(size) + pl.lit(": an empty side has size 0")),
    ]


def _empty_side_as_null(frame: pl.DataFrame) -> pl.DataFrame:
    exprs = []
    for side in ("bid", "ask"):
        empty = pl.col(f"_{side}_price").fill_null(0) == 0
        exprs += [pl.when(empty).then(None).otherwise(pl.col(f"_{side}_price")).alias(f"{side}_price"),
                  pl.when(empty).then(None).otherwise(pl.col(f"_{side}_size")).alias(f"{side}_size")]
    return frame.with_columns(exprs)


def _quote_values(frame: pl.DataFrame, names: dict[str, str]) -> pl.DataFrame:
    return frame.with_columns(
        **{f"_{side}_price": pl.col(names[f"{side}_price"]).str.strip_chars().cast(pl.Decimal(18, 8), strict=False)
           for side in ("bid", "ask")},
        **{f"_{side}_size": pl.col(names[f"{side}_size"]).str.strip_chars().cast(pl.Int64, strict=False)
           for side in ("bid", "ask")},
    )


def _asx_quote_frame(raw: pl.DataFrame, symbol: str, exchange: str, _: _Sequencer) -> pl.DataFrame:
    names = {"bid_price": "bid", "ask_price": "ask", "bid_size": "bid_size", "ask_size": "ask_size"}
    frame = _quote_values(raw.with_columns(_ts=_asx_ts()), names)
    checks = [_asx_ts_check(), *_side_checks("bid", "bid", "bid_size"), *_side_checks("ask", "ask", "ask_size")]
    frame = _empty_side_as_null(frame.with_columns(_reason=_reason(checks)))
    return frame.with_columns(exchange=pl.lit(exchange), symbol=pl.lit(symbol), ts=pl.col("_ts"),
                              sequence=pl.col("_line"))


def _generic_quote_frame(raw: pl.DataFrame, exchange: str, sequencer: _Sequencer) -> pl.DataFrame:
    raw = _with_optional(raw, ("exchange", "sequence"))
    names = {c: c for c in ("bid_price", "ask_price", "bid_size", "ask_size")}
    frame = _quote_values(raw.with_columns(_ts=_parse_iso_utc("ts"), symbol=pl.col("symbol").str.strip_chars(),
                                           _seq=pl.col("sequence").str.strip_chars().cast(pl.Int64, strict=False)),
                          names)
    checks = [
        (pl.col("symbol").fill_null("") == "", pl.lit("symbol is empty")),
        (pl.col("_ts").is_null(), pl.lit("ts ") + _quoted("ts") + pl.lit(" is not an ISO-8601 timestamp")),
        *_side_checks("bid", "bid_price", "bid_size"), *_side_checks("ask", "ask_price", "ask_size"),
    ]
    frame = _empty_side_as_null(_sequenced(frame.with_columns(_reason=_reason(checks)), sequencer))
    return frame.with_columns(exchange=pl.col("exchange").fill_null(exchange).replace("", exchange),
                              ts=pl.col("_ts"), sequence=pl.col("_seq"))


# ----------------------------------------------------------------------------------------------- dispatching


@dataclass(frozen=True)
class _Spec:
    asx_columns: list[str]
    generic_required: tuple[str, ...]
    output: list[str]
    asx_frame: Callable[[pl.DataFrame, str, str, _Sequencer], pl.DataFrame]
    generic_frame: Callable[[pl.DataFrame, str, _Sequencer], pl.DataFrame]


_SPECS = {
    "trades": _Spec(ASX_TRADE_COLUMNS, GENERIC_REQUIRED, TRADE_COLUMNS, _asx_frame, _generic_frame),
    "quotes": _Spec(ASX_QUOTE_COLUMNS, GENERIC_QUOTE_REQUIRED, QUOTE_COLUMNS, _asx_quote_frame,
                    _generic_quote_frame),
}


def read_ticks(
    dataset: Literal["trades", "quotes"],
    path: Path,
    layout: Layout | None = None,
    symbol: str | None = None,
    exchange: str | None = None,
    company_info: Path | None = None,
    chunk_rows: int = 100_000,
    stats: LoadStats | None = None,
) -> Iterator[pa.Table]:
    """Stream `path` as Arrow tables of valid trades or quotes; bad rows go to `stats.rejected` with their line
    number and reason, and never stop the good rows around them."""
    spec = _SPECS[dataset]
    stats = stats if stats is not None else LoadStats()
    layout = layout or detect_layout(path, spec.generic_required)
    if layout == "asx":
        symbol = symbol or asx_symbol(path, company_info)
        frames = string_frames(path, spec.asx_columns, False, chunk_rows, stats)
    else:
        header = _header(path)
        missing = [c for c in spec.generic_required if c not in header]
        if missing:
            raise InputError(f"{path}: header lacks required column(s) {missing} (has {header})")
        frames = string_frames(path, header, True, chunk_rows, stats)
    sequencer = _Sequencer()
    for raw in frames:
        if layout == "asx":
            frame = spec.asx_frame(raw, symbol or "", exchange or "ASX", sequencer)
        else:
            frame = spec.generic_frame(raw, exchange or "UNKNOWN", sequencer)
        frame = _bounded(frame, dataset)
        bad = frame.filter(pl.col("_reason").is_not_null()).select("_line", "_reason")
        stats.rejected.extend(RejectedRow(int(line), str(reason)) for line, reason in bad.iter_rows())
        good = frame.filter(pl.col("_reason").is_null()).select(*spec.output, source_line=pl.col("_line"))
        stats.rows_valid += good.height
        if good.height:
            yield good.to_arrow()
    stats.rejected.sort(key=lambda r: r.line)


def _bounded(frame: pl.DataFrame, dataset: str) -> pl.DataFrame:
    """A valid row whose text field is longer than the schema allows is rejected (per row, naming the field).
    Lengths are UTF-8 bytes, what the lake stores (the same as characters for ASCII symbols and codes)."""
    limits = {name: limit for name, limit in max_lengths(Dataset(dataset)).items() if name in frame.columns}
    too_long = [(pl.col(name).str.len_bytes() > limit).fill_null(False) for name, limit in limits.items()]
    if not too_long or not frame.select(pl.any_horizontal(too_long).any()).item():
        return frame  # the common case: one cheap pass, no rewrite of the reasons
    reason = pl.col("_reason")
    for (name, limit), long in zip(limits.items(), too_long, strict=True):
        message = pl.lit(f"{name} is longer than {limit} bytes (") + pl.col(name).str.len_bytes().cast(
            pl.String) + pl.lit(")")
        reason = pl.when(reason.is_null() & long).then(message).otherwise(reason)
    return frame.with_columns(_reason=reason)
