"""`k2 generate` and `k2 load`: synthetic days and CSV files → Kafka."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from k2.cli.common import HomeOption, choice, split_symbols, writer_settings
from k2.sources.report import LoadStats


def generate(
    home: HomeOption = None,
    date: Annotated[str, typer.Option(help="Trading day (YYYY-MM-DD).")] = "2026-01-05",
    trades: Annotated[int, typer.Option(min=1, help="Number of trades (or quote updates) in the day.")] = 100_000,
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols.")] = "ALPHA,BRAVO,CHARL,DELTA,ECHO",
    seed: Annotated[int, typer.Option(help="Random seed (same seed + day = same ticks).")] = 42,
    out: Annotated[Path | None, typer.Option(help="Write a CSV (generic layout) instead of producing.")] = None,
    dataset: Annotated[str, typer.Option(help="trades | quotes | reference (instruments of the symbols)")] = "trades",
) -> None:
    """Generate a synthetic trading day of trades or L1 quotes (or the symbols' reference data) and produce it to
    Kafka (or write CSV with --out)."""
    from k2.schemas import Dataset
    from k2.schemas.lineage import generator_source
    from k2.sources.generator import generate_quotes, generate_reference, generate_trades, write_generic_csv

    choice(dataset, ["trades", "quotes", "reference"], "--dataset")
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise typer.BadParameter(f"{date!r} is not YYYY-MM-DD", param_hint="--date") from None
    names = split_symbols(symbols) or []
    if dataset == "reference":
        table = generate_reference(names, day)
        source = generator_source("generate_reference", day=str(day), symbols=names)
    else:
        make = generate_quotes if dataset == "quotes" else generate_trades
        table = make(day, names, trades, seed)
        source = generator_source(make.__name__, day=str(day), symbols=names, count=trades, seed=seed)
    if out is not None:
        write_generic_csv(table, str(out))
        typer.echo(f"wrote {table.num_rows:,} {dataset} for {day} to {out}")
        return
    from k2.cli.progress import produce_with_progress
    from k2.kafka.broker import resolve_bootstrap

    settings = writer_settings(home)
    produce_with_progress(settings, resolve_bootstrap(settings), table, Dataset(dataset), source)
    typer.echo(f"produced {table.num_rows:,} {dataset} for {day}")


def load(
    paths: Annotated[list[Path], typer.Argument(help="CSV file(s) of trades, quotes or reference data.",
                                                 show_default=False)],
    home: HomeOption = None,
    dataset: Annotated[str, typer.Option(
        help="auto | trades | quotes | reference. auto: ASX files by their column count (trades 7, quotes 6), "
        "generic files and reference data by their header."
    )] = "auto",
    layout: Annotated[str | None, typer.Option(help="asx | generic (default: detect from the header).")] = None,
    symbol: Annotated[str | None, typer.Option(help="Symbol for ASX files (default: from company_info.csv).")] = None,
    exchange: Annotated[str | None, typer.Option(help="Exchange code (ASX files default to ASX).")] = None,
    company_info: Annotated[Path | None, typer.Option(help="ASX company_info.csv for id → symbol.")] = None,
    show_rejects: Annotated[int, typer.Option(help="How many rejected rows to list.")] = 20,
) -> None:
    """Load CSV files into Kafka: streams in chunks, reports rows read / sent / rejected (line + reason). Exits
    non-zero if a file had rows and none of them was valid."""
    from k2.cli.progress import load_with_progress
    from k2.ingest.pipeline import load_reference
    from k2.kafka.broker import resolve_bootstrap
    from k2.schemas import Dataset
    from k2.sources.detect import detect

    choice(dataset, ["auto", "trades", "quotes", "reference"], "--dataset")
    if layout is not None:
        choice(layout, ["asx", "generic"], "--layout")
    settings = writer_settings(home)
    files = [detect(path, None if dataset == "auto" else dataset, layout) for path in paths]  # fail before sending
    bootstrap = resolve_bootstrap(settings)
    all_rejected = []
    for found in files:
        if found.dataset == "reference":
            kind, stats, report = load_reference(settings, bootstrap, found.path, exchange, company_info)
            typer.echo(f"{found.path} ({kind}): read {stats.rows_read:,} rows, sent {report.delivered:,}, "
                       f"rejected {stats.rows_rejected:,}")
        else:
            stats, report = load_with_progress(
                settings, bootstrap, found.path, found.layout, symbol, exchange, company_info,  # type: ignore[arg-type]
                Dataset(found.dataset),
            )
            typer.echo(f"{found.path} ({found.dataset}, {found.layout} layout): read {stats.rows_read:,} rows, "
                       f"sent {report.delivered:,}, rejected {stats.rows_rejected:,}")
        _print_rejects(stats, show_rejects)
        if stats.interrupted:
            typer.echo(f"{found.path}: interrupted — everything read so far was flushed; re-run to load the rest "
                       "(re-loading is idempotent: duplicates are dropped at ingest)")
            raise typer.Exit(130)
        if stats.rows_read and not stats.rows_valid:
            all_rejected.append(f"{found.path}: every row was rejected, read as {found.description}; "
                                "if that is the wrong layout, choose with --dataset trades|quotes|reference and "
                                "--layout asx|generic")
    _fail_if_all_rejected(all_rejected)


def _print_rejects(stats: LoadStats, show: int) -> None:
    for rejected in stats.rejected[:show]:
        typer.echo(f"  line {rejected.line}: {rejected.reason}")
    if stats.rows_rejected > show:
        typer.echo(f"  … {stats.rows_rejected - show} more rejected rows (--show-rejects N lists more)")


def _fail_if_all_rejected(messages: list[str]) -> None:
    if messages:
        from k2.cli.output import console

        for message in messages:
            console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
        raise typer.Exit(1)
