"""Query latency: K2's engine (pyiceberg-planned read_parquet) vs DuckDB's iceberg_scan() on the same lake.

Builds a lake of N synthetic trades (days, symbols) by appending batches the way the consumer does, optionally
compacted, then times typical queries (p50 over R runs). Prints a table with the ratio to iceberg_scan.

    .venv/bin/pip install -e ".[bench]"   # DuckDB's iceberg extension, for the iceberg_scan() baseline
    .venv/bin/python bench/query.py --trades 1000000 --days 5 --batch 50000 --runs 15
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa

from k2.lake import writer
from k2.lake.catalog import ensure_table, open_catalog
from k2.query.engine import QueryEngine, TimeRange
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_trades

SYMBOLS = [f"S{i:03d}" for i in range(20)]


def _extension(package: str, name: str) -> str:
    module = __import__(package)
    return str(next(Path(module.__file__).parent.rglob(f"{name}.duckdb_extension")))


def build_lake(home: Path, trades: int, days: int, batch: int) -> Settings:
    settings = Settings(home=home)
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    for d in range(days):
        day = dt.date(2026, 1, 5) + dt.timedelta(days=d)
        data = generate_trades(day, SYMBOLS, trades // days, seed=d)
        now = pa.repeat(pa.scalar(0, pa.timestamp("us", tz="UTC")), data.num_rows)
        data = data.append_column("ingest_ts", now)
        for offset in range(0, data.num_rows, batch):
            writer.append(table, data.slice(offset, batch))
    return settings


def p50_ms(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--batch", type=int, default=50_000, help="rows per Iceberg append (= consumer commit)")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="k2-bench-query-"))
    started = time.perf_counter()
    settings = build_lake(home, args.trades, args.days, args.batch)
    engine = QueryEngine(settings)
    table = engine.table(Dataset.TRADES)
    assert table is not None
    snapshots = len(table.metadata.snapshots)
    files = len(engine.files(Dataset.TRADES))
    print(f"lake: {args.trades:,} trades, {args.days} days, {len(SYMBOLS)} symbols, {snapshots} snapshots, "
          f"{files} files (built in {time.perf_counter() - started:.1f}s)")

    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute(f"LOAD '{_extension('duckdb_extension_avro', 'avro')}'")
    con.execute(f"LOAD '{_extension('duckdb_extension_iceberg', 'iceberg')}'")
    meta = table.metadata_location

    day = dt.datetime(2026, 1, 7, tzinfo=dt.UTC)
    span = TimeRange(day, day + dt.timedelta(days=1))
    symbol = SYMBOLS[3]
    end = day + dt.timedelta(days=1)
    t_filter = f"symbol = '{symbol}' AND ts >= '{day.isoformat()}' AND ts < '{end.isoformat()}'"
    cases: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
        ("symbol-day trades", lambda: engine.trades([symbol], span, limit=None),
         lambda: con.execute(f"SELECT * FROM iceberg_scan('{meta}') WHERE {t_filter} ORDER BY ts, sequence")
         .to_arrow_table()),
        ("symbol-day 1-min bars", lambda: engine.bars([symbol], "1m", span),
         lambda: con.execute(
             f"SELECT time_bucket(INTERVAL 1 minute, ts) b, first(price ORDER BY ts) o, max(price), min(price), "
             f"last(price ORDER BY ts), sum(size) FROM iceberg_scan('{meta}') WHERE {t_filter} GROUP BY b")
         .to_arrow_table()),
        ("count all", lambda: engine.counts(),
         lambda: con.execute(f"SELECT exchange, symbol, count(*), min(ts), max(ts) FROM iceberg_scan('{meta}') "
                             "GROUP BY ALL ORDER BY ALL").to_arrow_table()),
    ]
    print(f"\n{'query':<24}{'k2 p50 ms':>12}{'iceberg_scan p50 ms':>22}{'ratio':>8}")
    for name, ours, baseline in cases:
        k2_ms, base_ms = p50_ms(ours, args.runs), p50_ms(baseline, args.runs)
        print(f"{name:<24}{k2_ms:>12.1f}{base_ms:>22.1f}{k2_ms / base_ms:>8.2f}")


if __name__ == "__main__":
    main()
