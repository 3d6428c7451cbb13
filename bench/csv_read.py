"""CSV reading: K2's reader (physical lines, UTF-8 and quote checks, pyarrow parse, per-row validation to Arrow
trades) against the ceiling of pyarrow parsing the same file into string columns, in the same run.

    .venv/bin/python bench/csv_read.py --rows 1500000

Prints rows/s for a generic-layout file and an ASX-layout file, and K2 / ceiling.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from k2.sources.csv_ticks import ASX_TRADE_COLUMNS, read_ticks
from k2.sources.generator import generate_trades, write_generic_csv


def best_seconds(function: Callable[[], int], runs: int = 3) -> tuple[float, int]:
    timings, rows = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        rows = function()
        timings.append(time.perf_counter() - started)
    return min(timings), rows


def asx_file(trades: pa.Table, path: Path) -> None:
    """The same trades in the ASX layout (no header, Sydney local time), as the exchange files are."""
    frame = pl.from_arrow(trades)
    assert isinstance(frame, pl.DataFrame)
    local = pl.col("ts").dt.convert_time_zone("Australia/Sydney")
    frame.select(
        local.dt.strftime("%m/%d/%Y"), local.dt.strftime("%H:%M:%S%.3f").alias("time"), pl.col("price"),
        pl.col("size"), pl.lit("XT").alias("qualifier"), pl.lit("").alias("venue"), pl.lit("").alias("buyer"),
    ).write_csv(path, include_header=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_500_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="k2-bench-csv-"))
    trades = generate_trades(dt.date(2026, 1, 5), ["ALPHA", "BRAVO", "CHARL", "DELTA", "ECHO"], args.rows, seed=1)
    generic, asx = root / "generic.csv", root / "7181.csv"
    write_generic_csv(trades, str(generic))
    asx_file(trades, asx)
    print(f"{args.rows:,} trades; files in {root}")
    print(f"{'layout':>8}{'MB':>8}{'k2 rows/s':>13}{'pyarrow rows/s':>16}{'k2/pyarrow':>12}")
    for layout, path, names, symbol in (("generic", generic, None, None), ("asx", asx, ASX_TRADE_COLUMNS, "DVN")):
        k2_s, rows = best_seconds(lambda p=path, s=symbol: sum(
            t.num_rows for t in read_ticks("trades", p, symbol=s)))
        options = pacsv.ReadOptions(column_names=names) if names else pacsv.ReadOptions()
        columns = names or path.open().readline().strip().split(",")
        types = pacsv.ConvertOptions(column_types=dict.fromkeys(columns, pa.string()))
        ceiling_s, ceiling_rows = best_seconds(lambda p=path, o=options, t=types: pacsv.read_csv(
            p, read_options=o, convert_options=t).num_rows)
        assert rows == ceiling_rows == args.rows, (rows, ceiling_rows)
        size = path.stat().st_size / 1e6
        print(f"{layout:>8}{size:>8.0f}{rows / k2_s:>13,.0f}{rows / ceiling_s:>16,.0f}{ceiling_s / k2_s:>12.2f}",
              flush=True)


if __name__ == "__main__":
    main()
