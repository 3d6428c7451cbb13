"""`k2 query …` and `k2 quality`: the read side, on the DuckDB engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from k2.cli.common import (
    AsOfOption,
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
from k2.cli.output import TABLE_ROWS, OutputFormat, console, render

app = typer.Typer(help="Query the lake with DuckDB.", no_args_is_help=True)


def _engine(home: Path | None):  # type: ignore[no-untyped-def]
    from k2.query import timing
    from k2.query.engine import QueryEngine

    timing.without_metrics()
    settings = settings_for(home)
    settings.existing_home()
    return QueryEngine(settings)


def _query_ticks(
    dataset: str, home: Path | None, symbol: str | None, start: str | None, end: str | None, limit: int | None,
    fmt: OutputFormat, snapshot: int | None, as_of: str | None,
) -> None:
    """Every matching row for csv/json (unless --limit); the table view shows the first rows and says of how many."""
    from k2.schemas import Dataset

    span = _span(start, end)
    engine = _engine(home)
    symbols, chosen, when = split_symbols(symbol), Dataset(dataset), parse_time(as_of, "--as-of")
    if fmt is OutputFormat.TABLE and limit is None:
        rows = engine.ticks(chosen, symbols, span, TABLE_ROWS, snapshot, when)
        total = (rows.num_rows if rows.num_rows < TABLE_ROWS
                 else engine.count(chosen, symbols, span, snapshot, when))
        _check_empty(engine, chosen, symbols, rows)
        render(rows, fmt, dataset, total=total)
        return
    rows = engine.ticks(chosen, symbols, span, limit, snapshot, when)
    _check_empty(engine, chosen, symbols, rows)
    render(rows, fmt, dataset, max_rows=limit or TABLE_ROWS)


def _check_empty(engine, dataset, symbols: list[str] | None, rows) -> None:  # type: ignore[no-untyped-def]
    """An empty answer for symbols the table never held is an error with suggestions, not a silent nothing."""
    if rows.num_rows == 0 and symbols:
        engine.check_symbols(dataset, symbols)


def _span(start: str | None, end: str | None):  # type: ignore[no-untyped-def]
    from k2.query.engine import TimeRange

    return TimeRange(parse_time(start, "--start"), parse_time(end, "--end"))


@app.command("trades")
def query_trades(
    home: HomeOption = None, symbol: SymbolOption = None, start: StartOption = None, end: EndOption = None,
    limit: LimitOption = None, fmt: FormatOption = OutputFormat.TABLE, snapshot: SnapshotOption = None,
    as_of: AsOfOption = None,
) -> None:
    """Trades in time order."""
    _query_ticks("trades", home, symbol, start, end, limit, fmt, snapshot, as_of)


@app.command("quotes")
def query_quotes(
    home: HomeOption = None, symbol: SymbolOption = None, start: StartOption = None, end: EndOption = None,
    limit: LimitOption = None, fmt: FormatOption = OutputFormat.TABLE, snapshot: SnapshotOption = None,
    as_of: AsOfOption = None,
) -> None:
    """L1 quotes (bid/ask price and size; an empty side is blank) in time order."""
    _query_ticks("quotes", home, symbol, start, end, limit, fmt, snapshot, as_of)


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
    fmt: FormatOption = OutputFormat.TABLE, snapshot: SnapshotOption = None, as_of: AsOfOption = None,
    adjust: Annotated[str, typer.Option(help="none | splits | all (splits and cash dividends): back-adjusted "
                                        "prices from corporate actions.")] = "none",
) -> None:
    """OHLCV bars on UTC boundaries (open, high, low, close, volume, trade count, VWAP), 1s to 366d."""
    from k2.query.adjust import Adjust
    from k2.schemas import Dataset

    engine, symbols = _engine(home), split_symbols(symbol)
    choice(adjust, [a.value for a in Adjust], "--adjust")
    rows = engine.bars(symbols, interval, _span(start, end), snapshot, parse_time(as_of, "--as-of"), Adjust(adjust))
    _check_empty(engine, Dataset.TRADES, symbols, rows)
    render(rows, fmt, f"{interval} bars")


@app.command("vwap")
def query_vwap(
    home: HomeOption = None, symbol: SymbolOption = None, start: StartOption = None, end: EndOption = None,
    interval: Annotated[str | None, typer.Option("--interval", "-i", help="Per bucket (1h, 1d …); default: one "
                                                 "figure for the whole window.")] = None,
    fmt: FormatOption = OutputFormat.TABLE, snapshot: SnapshotOption = None, as_of: AsOfOption = None,
) -> None:
    """Volume-weighted average price per symbol over the window (exact decimal arithmetic)."""
    from k2.schemas import Dataset

    engine, symbols = _engine(home), split_symbols(symbol)
    rows = engine.vwap(symbols, _span(start, end), interval, snapshot, parse_time(as_of, "--as-of"))
    _check_empty(engine, Dataset.TRADES, symbols, rows)
    render(rows, fmt, "VWAP")


@app.command("summary")
def query_summary(
    home: HomeOption = None, symbol: SymbolOption = None,
    first_day: Annotated[str | None, typer.Option("--from", help="First session date (YYYY-MM-DD).")] = None,
    last_day: Annotated[str | None, typer.Option("--to", help="Last session date (YYYY-MM-DD), inclusive.")] = None,
    fmt: FormatOption = OutputFormat.TABLE, snapshot: SnapshotOption = None, as_of: AsOfOption = None,
    adjust: Annotated[str, typer.Option(help="none | splits | all: back-adjusted prices.")] = "none",
) -> None:
    """Daily summary per symbol and session date, in the exchange's own time zone (from reference data): open,
    high, low, close, volume, trades, VWAP."""
    from k2.query.adjust import Adjust
    from k2.schemas import Dataset

    choice(adjust, [a.value for a in Adjust], "--adjust")
    engine, symbols = _engine(home), split_symbols(symbol)
    rows = engine.summary(symbols, _day(first_day, "--from"), _day(last_day, "--to"), snapshot,
                          parse_time(as_of, "--as-of"), Adjust(adjust))
    _check_empty(engine, Dataset.TRADES, symbols, rows)
    render(rows, fmt, "daily summary (session dates)")


def _day(value: str | None, name: str):  # type: ignore[no-untyped-def]
    import datetime as dt

    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date like 2024-01-02", param_hint=name) from None


@app.command("last")
def query_last(
    at: Annotated[str, typer.Option("--at", help="The moment: ISO date/time, now, or -15m.")] = "now",
    home: HomeOption = None, symbol: SymbolOption = None, fmt: FormatOption = OutputFormat.TABLE,
    quotes: Annotated[bool, typer.Option("--quotes", help="The last quote instead of the last trade.")] = False,
    snapshot: SnapshotOption = None, as_of: AsOfOption = None,
) -> None:
    """The last trade (or quote) at or before --at for each symbol: a point-in-time view of the market."""
    from k2.schemas import Dataset

    moment = parse_time(at, "--at")
    assert moment is not None
    dataset = Dataset.QUOTES if quotes else Dataset.TRADES
    engine, symbols = _engine(home), split_symbols(symbol)
    rows = engine.last(dataset, symbols, moment, snapshot, parse_time(as_of, "--as-of"))
    _check_empty(engine, dataset, symbols, rows)
    render(rows, fmt, f"last {dataset.value} at or before {moment.isoformat()}")


@app.command("asof")
def query_asof(
    home: HomeOption = None, symbol: SymbolOption = None, start: StartOption = None, end: EndOption = None,
    limit: LimitOption = None, fmt: FormatOption = OutputFormat.TABLE, snapshot: SnapshotOption = None,
    as_of: AsOfOption = None,
) -> None:
    """Each trade with the quote prevailing when it printed (bid, ask, sizes, quote time): the input of
    transaction-cost analysis."""
    from k2.schemas import Dataset

    engine, symbols = _engine(home), split_symbols(symbol)
    rows = engine.asof(symbols, _span(start, end), snapshot, parse_time(as_of, "--as-of"))
    _check_empty(engine, Dataset.TRADES, symbols, rows)
    render(rows.slice(0, limit) if limit else rows, fmt, "trades with the prevailing quote",
           max_rows=limit or TABLE_ROWS)


@app.command("sql")
def query_sql(
    statement: Annotated[str, typer.Argument(help="One SELECT over the views trades, quotes, reference, "
                                             "corporate_actions.")],
    home: HomeOption = None, fmt: FormatOption = OutputFormat.TABLE,
    max_rows: Annotated[int | None, typer.Option(min=1, help="Row cap (default K2_QUERY_SQL_MAX_ROWS).")] = None,
    timeout: Annotated[float | None, typer.Option(min=0.1, help="Seconds before the query is stopped.")] = None,
) -> None:
    """Ad-hoc SQL, read-only: a single SELECT, no table functions or other files, with a row cap and a time
    limit. Example: k2 query sql "SELECT symbol, count(*) FROM trades GROUP BY symbol"."""
    result = _engine(home).sql(statement, max_rows, timeout)
    render(result.table, fmt, "SQL", max_rows=result.table.num_rows if fmt is not OutputFormat.TABLE else TABLE_ROWS)
    if result.truncated:
        console.print(f"stopped at the row cap of {result.table.num_rows:,} rows (--max-rows)")


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
