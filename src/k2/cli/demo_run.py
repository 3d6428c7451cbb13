"""What `k2 demo` runs (imported only when it runs: the CLI starts without the ingest stack)."""

from __future__ import annotations

import datetime as dt
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow.compute as pc
from rich.console import Console

from k2.cli.output import OutputFormat, render
from k2.cli.progress import load_with_progress, produce_with_progress
from k2.data import asx_sample_dir
from k2.ingest import pipeline
from k2.kafka.admin import ensure_topics
from k2.kafka.broker import ManagedBroker
from k2.query.engine import QueryEngine, TimeRange
from k2.schemas import Dataset
from k2.schemas.lineage import generator_source
from k2.settings import Settings
from k2.sources.generator import DEFAULT_SYMBOLS, SYNTHETIC_EXCHANGE, generate_trades

FIRST_DEMO_DAY = dt.date(2026, 1, 5)
out = Console() if sys.stdout.isatty() else Console(width=160)


def next_demo_day(engine: QueryEngine) -> dt.date:
    """The business day after the last synthetic day in the lake, so each run adds a new day."""
    counts = engine.counts()
    synthetic = counts.filter(pc.equal(counts["exchange"], SYNTHETIC_EXCHANGE)) if counts.num_rows else counts
    if not synthetic.num_rows:
        return FIRST_DEMO_DAY
    last: dt.datetime = pc.max(synthetic["last_ts"]).as_py()
    day = last.date() + dt.timedelta(days=1)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day


def run_demo(settings: Settings, asx: bool, trades: int, seed: int) -> None:
    engine = QueryEngine(settings)
    out.rule("[bold]K2 demo")
    out.print(f"K2_HOME: {settings.home_dir}   broker: {settings.broker} (local, loopback)")
    with ManagedBroker(settings.broker, settings.broker_dir / f"demo-{settings.broker}", settings=settings) as broker:
        out.print(f"broker up on {broker.bootstrap}")
        ensure_topics(settings, broker.bootstrap)
        started = time.monotonic()
        # consumers join their groups while the producer runs, as a live deployment would
        datasets = list(Dataset) if asx else [Dataset.TRADES]
        with ThreadPoolExecutor(1) as pool:
            consuming = pool.submit(pipeline.ingest_many, settings, broker.bootstrap, datasets, 2.0)
            if asx:
                symbols, span = _produce_asx(settings, broker.bootstrap)
            else:
                day = next_demo_day(engine)
                table = generate_trades(day, DEFAULT_SYMBOLS, trades, seed)
                out.print(f"generated {table.num_rows:,} trades for {day} ({', '.join(DEFAULT_SYMBOLS)}), seed {seed}")
                produce_with_progress(settings, broker.bootstrap, table, source=generator_source(
                    "generate_trades", day=str(day), symbols=list(DEFAULT_SYMBOLS), count=trades, seed=seed))
                symbols = list(DEFAULT_SYMBOLS)
                start = dt.datetime.combine(day, dt.time(), dt.UTC)
                span = TimeRange(start, start + dt.timedelta(days=1))
            with out.status("consuming → Iceberg …"):
                reports = consuming.result()
        report = reports[Dataset.TRADES]
        elapsed = (report.last_commit_at or time.monotonic()) - started
        for dataset, other in reports.items():
            if dataset is not Dataset.TRADES:
                out.print(f"{dataset}: landed {other.rows_landed:,} rows")
    _summarise(engine, symbols, span, report.rows_landed, report.snapshot_id, elapsed)


def _produce_asx(settings: Settings, bootstrap: str) -> tuple[list[str], TimeRange]:
    sample = asx_sample_dir()
    for path in sorted((sample / "trades").glob("*.csv")):
        stats, report = load_with_progress(
            settings, bootstrap, path, "asx", None, "ASX", sample / "reference-data" / "company_info.csv"
        )
        out.print(f"{path.name}: read {stats.rows_read:,}, sent {report.delivered:,}, rejected {stats.rows_rejected}")
    for path in sorted((sample / "quotes").glob("*.csv")):
        info = sample / "reference-data" / "company_info.csv"
        load_with_progress(settings, bootstrap, path, "asx", None, "ASX", info, Dataset.QUOTES)
    for path in sorted((sample / "reference-data").glob("*.csv")):
        pipeline.load_reference(settings, bootstrap, path)
    return ["DVN", "MWR"], TimeRange()


def _summarise(
    engine: QueryEngine, symbols: list[str], span: TimeRange, landed: int, snapshot: int | None, elapsed: float
) -> None:
    counts = engine.counts()
    out.rule("[bold]summary")
    rate = f": {landed / max(elapsed, 1e-9):,.0f} rows/s" if landed >= 10_000 else ""
    out.print(f"landed {landed:,} trades end to end in {elapsed:.2f} s{rate} "
              "(first record produced → last Iceberg commit, consumer group join included)")
    out.print(f"Iceberg snapshot id: {snapshot}")
    render(engine.counts(symbols, span), OutputFormat.TABLE, "this run: rows per symbol")
    bars = engine.bars([symbols[0]], "1m", span).drop_columns(["symbol"])
    render(bars.slice(0, 5), OutputFormat.TABLE, f"first 1-minute OHLCV bars of {symbols[0]} (UTC)")
    summary = engine.summary(symbols).drop_columns(["first_ts", "last_ts"])
    render(summary, OutputFormat.TABLE, "daily summary by session date (exchange time zone)")
    render(counts, OutputFormat.TABLE, "whole lake: trades per symbol")
    total = pc.sum(counts["trades"]).as_py() if counts.num_rows else 0
    home = engine.settings.home
    out.print(f"lake now holds {total:,} trades; explore with `k2 query symbols|trades|bars|vwap|last|asof|summary|"
              f"sql --home {home}`")
