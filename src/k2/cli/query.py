"""`k2 query …` and `k2 quality`: the read side, on the DuckDB engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from k2.cli.common import (
    EndOption,
    FormatOption,
    HomeOption,
    LimitOption,
    SnapshotOption,
    StartOption,
    SymbolOption,
    choice,
    parse_time,
    settings_for,
    split_symbols,
)
from k2.cli.output import TABLE_ROWS, OutputFormat, render

app = typer.Typer(help="Query the lake with DuckDB.", no_args_is_help=True)


def _engine(home: Path | None):  # type: ignore[no-untyped-def]
    from k2.query.engine import QueryEngine

    settings = settings_for(home)
    settings.existing_home()
    return QueryEngine(settings)


def _query_ticks(
    dataset: str, home: Path | None, symbol: str | None, start: str | None, end: str | None, limit: int | None,
    fmt: OutputFormat, snapshot: int | None,
) -> None:
    """Every matching row for csv/json (unless --limit); the table view shows the first rows and says of how many."""
    from k2.query.engine import TimeRange
    from k2.schemas import Dataset

    span = TimeRange(parse_time(start, "--start"), parse_time(end, "--end"))
    engine = _engine(home)
    symbols, chosen = split_symbols(symbol), Dataset(dataset)
    if fmt is OutputFormat.TABLE and limit is None:
        rows = engine.ticks(chosen, symbols, span, TABLE_ROWS, snapshot)
        total = rows.num_rows if rows.num_rows < TABLE_ROWS else engine.count(chosen, symbols, span, snapshot)
        render(rows, fmt, dataset, total=total)
        return
    render(engine.ticks(chosen, symbols, span, limit, snapshot), fmt, dataset, max_rows=limit or TABLE_ROWS)


@app.command("trades")
def query_trades(
    home: HomeOption = None, symbol: SymbolOption = None, start: StartOption = None, end: EndOption = None,
    limit: LimitOption = None, fmt: FormatOption = OutputFormat.TABLE, snapshot: SnapshotOption = None,
) -> None:
    """Trades in time order."""
    _query_ticks("trades", home, symbol, start, end, limit, fmt, snapshot)


@app.command("quotes")
def query_quotes(
    home: HomeOption = None, symbol: SymbolOption = None, start: StartOption = None, end: EndOption = None,
    limit: LimitOption = None, fmt: FormatOption = OutputFormat.TABLE, snapshot: SnapshotOption = None,
) -> None:
    """L1 quotes (bid/ask price and size; an empty side is blank) in time order."""
    _query_ticks("quotes", home, symbol, start, end, limit, fmt, snapshot)


@app.command("reference")
def query_reference(
    home: HomeOption = None, symbol: SymbolOption = None, fmt: FormatOption = OutputFormat.TABLE,
    actions: Annotated[bool, typer.Option("--actions", help="Corporate actions instead of instruments.")] = False,
) -> None:
    """Instrument reference data (or, with --actions, dividends, splits and mergers)."""
    from k2.schemas import Dataset

    dataset = Dataset.CORPORATE_ACTIONS if actions else Dataset.REFERENCE
    render(_engine(home).reference(dataset, split_symbols(symbol)), fmt, dataset.value)


@app.command("bars")
def query_bars(
    home: HomeOption = None, symbol: SymbolOption = None, start: StartOption = None, end: EndOption = None,
    interval: Annotated[str, typer.Option("--interval", "-i", help="Bar size: 1m, 5m, 1h, 1d …")] = "1m",
    fmt: FormatOption = OutputFormat.TABLE, snapshot: SnapshotOption = None,
) -> None:
    """OHLCV bars (open, high, low, close, volume, trade count, VWAP)."""
    from k2.query.engine import TimeRange

    span = TimeRange(parse_time(start, "--start"), parse_time(end, "--end"))
    render(_engine(home).bars(split_symbols(symbol), interval, span, snapshot), fmt, f"{interval} bars")


@app.command("symbols")
def query_symbols(home: HomeOption = None, fmt: FormatOption = OutputFormat.TABLE) -> None:
    """Trade count and time span per symbol."""
    render(_engine(home).counts(), fmt, "symbols")


@app.command("snapshots")
def query_snapshots(
    home: HomeOption = None, fmt: FormatOption = OutputFormat.TABLE,
    dataset: Annotated[str, typer.Option(help="trades | quotes | reference | corporate_actions")] = "trades",
) -> None:
    """The table's history, newest first: snapshot ids (for --snapshot and `k2 rollback`), when, rows added and
    the Kafka offsets each one had landed up to."""
    from k2.schemas import Dataset

    choice(dataset, [d.value for d in Dataset], "--dataset")
    render(_engine(home).snapshots(Dataset(dataset)), fmt, f"{dataset} snapshots")


def quality(home: HomeOption = None, symbol: SymbolOption = None, fmt: FormatOption = OutputFormat.TABLE) -> None:
    """Data quality per symbol-day: received, landed, duplicates dropped, late arrivals, sequence gaps."""
    render(_engine(home).quality(split_symbols(symbol)), fmt, "data quality")
