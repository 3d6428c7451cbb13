"""Query latency: K2's engine against ArcticDB (LMDB), polars and DuckDB over hive Parquet, on the same ticks.

Builds N trades and N quotes (20 symbols x 5 days by default), lands them in a K2 lake through K2's own writer in
commit-sized appends (as `k2 ingest` leaves them), writes the same rows as hive Parquet (day/symbol) and into an
ArcticDB LMDB library, then runs each query with the same random picks on every engine. It checks the engines
agree, and prints p50/p99 in ms with K2's ratio to the best peer (below 1.0: K2 is faster).

    .venv/bin/pip install -e ".[bench]"
    .venv/bin/python bench/query.py --ticks 5000000 --runs 30

K2 runs as a long-lived process would (one QueryEngine, its plan cache and hot tier warm after the first pick);
"K2 cold" is a fresh engine per query with the hot tier off, i.e. what a one-shot CLI call pays for the read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import duckdb
import polars as pl
import pyarrow as pa

from k2.lake import bars, writer
from k2.lake.catalog import ensure_table, open_catalog
from k2.lake.maintenance import maintain as lake_maintain
from k2.query.engine import QueryEngine, TimeRange
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_quotes, generate_trades

FIRST_DAY = dt.date(2026, 1, 5)
DAY = dt.timedelta(days=1)


def p50_ms(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of `fn` in ms, after one warm-up call (shared with the other benches)."""
    return timings(fn, runs)[0]


def timings(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.99 * len(samples)))]


# ----------------------------------------------------------------------------------------------------- data


@dataclass
class Data:
    trades: pa.Table
    quotes: pa.Table
    symbols: list[str]
    days: list[dt.date]


def make_data(ticks: int, symbols: int, days: int) -> Data:
    names = [f"S{i:03d}" for i in range(symbols)]
    dates = [FIRST_DAY + i * DAY for i in range(days)]
    trades = pa.concat_tables([generate_trades(d, names, ticks // days, seed=11) for d in dates])
    quotes = pa.concat_tables([generate_quotes(d, names, ticks // days, seed=97) for d in dates])
    return Data(trades, quotes, names, dates)


def build_k2(home: Path, data: Data, commit_rows: int) -> Settings:
    """The lake as `k2 ingest` leaves it: time-ordered appends of `commit_rows` rows each, the materialized
    1-minute bars refreshed after each trades commit (as the ingest committer does)."""
    settings = Settings(home=home)
    catalog = open_catalog(settings)
    bars_table = bars.ensure_bars_table(catalog, settings)
    for dataset, rows in ((Dataset.TRADES, data.trades), (Dataset.QUOTES, data.quotes)):
        table = ensure_table(catalog, settings, dataset)
        stamped = rows.append_column("ingest_ts", pa.repeat(pa.scalar(0, pa.timestamp("us", tz="UTC")), len(rows)))
        for offset in range(0, stamped.num_rows, commit_rows):
            writer.append(table, stamped.slice(offset, commit_rows))
            if dataset is Dataset.TRADES:
                bars.refresh(table, bars_table)
    return settings


def build_hive(root: Path, data: Data) -> Path:
    """day=/symbol= Parquet, float prices (what a hand-rolled Parquet store usually holds)."""
    for name, rows in (("trades", data.trades), ("quotes", data.quotes)):
        frame = _float_prices(pl.from_arrow(rows)).with_columns(day=pl.col("ts").dt.date())
        for (day, symbol), part in frame.partition_by(["day", "symbol"], as_dict=True).items():
            folder = root / name / f"day={day}" / f"symbol={symbol}"
            folder.mkdir(parents=True)
            part.drop("day", "symbol").sort("ts", "sequence").write_parquet(folder / "data.parquet")
    return root


def _float_prices(frame: pl.DataFrame | pl.Series) -> pl.DataFrame:
    assert isinstance(frame, pl.DataFrame)
    decimals = [c for c, t in frame.schema.items() if isinstance(t, pl.Decimal)]
    return frame.with_columns(pl.col(c).cast(pl.Float64) for c in decimals)


def build_arctic(root: Path, data: Data) -> object | None:
    try:
        import arcticdb
    except ImportError:
        return None
    library = arcticdb.Arctic(f"lmdb://{root}?map_size=8GB").get_library("ticks", create_if_missing=True)
    for name, rows in (("trades", data.trades), ("quotes", data.quotes)):
        frame = _float_prices(pl.from_arrow(rows)).to_pandas()
        frame["ts"] = frame["ts"].dt.tz_localize(None)
        for symbol, part in frame.groupby("symbol"):
            library.write(f"{name}/{symbol}", part.drop(columns=["symbol"]).set_index("ts"))
    return library


# -------------------------------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class Pick:
    symbol: str
    day: dt.date
    at: dt.datetime  # for "last trade at or before"

    @property
    def span(self) -> tuple[dt.datetime, dt.datetime]:
        start = dt.datetime.combine(self.day, dt.time(), dt.UTC)
        return start, start + DAY


def picks(data: Data, count: int, seed: int) -> list[Pick]:
    rng = random.Random(seed)
    chosen = []
    for _ in range(count):
        day = rng.choice(data.days)
        at = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(seconds=rng.randrange(1, 86_400))
        chosen.append(Pick(rng.choice(data.symbols), day, at))
    return chosen


class K2:
    name = "K2"

    def __init__(self, settings: Settings) -> None:
        self.engine = QueryEngine(settings)

    def symbol_day(self, p: Pick) -> int:
        return self.engine.trades([p.symbol], TimeRange(*p.span)).num_rows

    def bars(self, p: Pick) -> pa.Table:
        return self.engine.bars([p.symbol], "1m", TimeRange(*p.span))

    def vwap(self, p: Pick) -> float:
        return float(self.engine.vwap([p.symbol], TimeRange(*p.span)).column("vwap")[0].as_py())

    def last(self, p: Pick) -> int:
        found = self.engine.last(Dataset.TRADES, [p.symbol], p.at)
        return int(found.column("sequence")[0].as_py()) if found.num_rows else -1

    def asof(self, p: Pick) -> int:
        return self.engine.asof([p.symbol], TimeRange(*p.span)).num_rows

    def lake_vwap(self) -> int:
        return self.engine.vwap(None, None, "1d").num_rows


class K2Cold(K2):
    """The same engine without the hot tier: every query reads its files with DuckDB (a one-shot CLI call)."""

    name = "K2 no hot tier"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.model_copy(update={"query_cache_mb": 0}))


class Polars:
    name = "polars"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _scan(self, name: str) -> pl.LazyFrame:
        return pl.scan_parquet(self.root / name / "**/*.parquet", hive_partitioning=True)

    def _day(self, name: str, p: Pick) -> pl.LazyFrame:
        return self._scan(name).filter((pl.col("day") == p.day) & (pl.col("symbol") == p.symbol))

    def symbol_day(self, p: Pick) -> int:
        return self._day("trades", p).collect().height

    def bars(self, p: Pick) -> pl.DataFrame:
        return (self._day("trades", p).sort("ts", "sequence").group_by_dynamic("ts", every="1m")
                .agg(pl.col("price").first().alias("open"), pl.col("price").max().alias("high"),
                     pl.col("price").min().alias("low"), pl.col("price").last().alias("close"),
                     pl.col("size").sum().alias("volume"), pl.len().alias("trades"),
                     ((pl.col("price") * pl.col("size")).sum() / pl.col("size").sum()).alias("vwap"))
                .collect())

    def vwap(self, p: Pick) -> float:
        frame = self._day("trades", p).select((pl.col("price") * pl.col("size")).sum() / pl.col("size").sum())
        return float(frame.collect().item())

    def last(self, p: Pick) -> int:
        at = p.at.replace(tzinfo=None)
        found = (self._scan("trades").filter((pl.col("symbol") == p.symbol) & (pl.col("day") <= p.day)
                                             & (pl.col("ts").dt.replace_time_zone(None) <= at))
                 .sort("ts", "sequence").tail(1).collect())
        return int(found["sequence"][0]) if found.height else -1

    def asof(self, p: Pick) -> int:
        trades = self._day("trades", p).sort("ts")
        quotes = self._day("quotes", p).sort("ts")
        return trades.join_asof(quotes, on="ts", strategy="backward", suffix="_q").collect().height

    def lake_vwap(self) -> int:
        return (self._scan("trades").group_by("symbol", "day")
                .agg((pl.col("price") * pl.col("size")).sum() / pl.col("size").sum()).collect().height)


class DuckDBParquet:
    name = "DuckDB/Parquet"

    def __init__(self, root: Path) -> None:
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        for name in ("trades", "quotes"):
            self.con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{root}/{name}/**/*.parquet', "
                             "hive_partitioning = true)")

    def _params(self, p: Pick) -> list[object]:
        return [p.day, p.symbol]

    def symbol_day(self, p: Pick) -> int:
        return len(self.con.execute("SELECT * FROM trades WHERE day = ? AND symbol = ?", self._params(p))
                   .to_arrow_table())

    def bars(self, p: Pick) -> pa.Table:
        return self.con.execute(
            "SELECT epoch_us(ts) // 60000000 AS m, arg_min(price, ts) AS open, max(price) AS high, "
            "min(price) AS low, arg_max(price, ts) AS close, sum(size) AS volume, count(*) AS trades, "
            "sum(price * size) / sum(size) AS vwap FROM trades WHERE day = ? AND symbol = ? GROUP BY m ORDER BY m",
            self._params(p)).to_arrow_table()

    def vwap(self, p: Pick) -> float:
        row = self.con.execute("SELECT sum(price * size) / sum(size) FROM trades WHERE day = ? AND symbol = ?",
                               self._params(p)).fetchone()
        return float(row[0]) if row else float("nan")

    def last(self, p: Pick) -> int:
        row = self.con.execute(
            "SELECT sequence FROM trades WHERE symbol = ? AND day <= ? AND ts <= ? ORDER BY ts DESC, sequence DESC "
            "LIMIT 1", [p.symbol, p.day, p.at]).fetchone()
        return int(row[0]) if row else -1

    def asof(self, p: Pick) -> int:
        return len(self.con.execute(
            "SELECT t.*, q.bid_price, q.ask_price FROM (SELECT * FROM trades WHERE day = ? AND symbol = ?) t "
            "ASOF LEFT JOIN (SELECT * FROM quotes WHERE day = ? AND symbol = ?) q ON t.ts >= q.ts",
            [*self._params(p), *self._params(p)]).to_arrow_table())

    def lake_vwap(self) -> int:
        return len(self.con.execute(
            "SELECT symbol, day, sum(price * size) / sum(size) FROM trades GROUP BY ALL").to_arrow_table())


class Arctic:
    name = "ArcticDB"

    def __init__(self, library: object) -> None:
        self.lib = library

    def _read(self, name: str, p: Pick, **kwargs: object) -> object:
        start, end = p.span
        return self.lib.read(f"{name}/{p.symbol}",  # type: ignore[attr-defined]
                             date_range=(start.replace(tzinfo=None), end.replace(tzinfo=None) - dt.timedelta(
                                 microseconds=1)), **kwargs).data

    def symbol_day(self, p: Pick) -> int:
        return len(self._read("trades", p))  # type: ignore[arg-type]

    def bars(self, p: Pick) -> object:
        import arcticdb

        q = arcticdb.QueryBuilder()
        q = q.apply("pv", q["price"] * q["size"]).resample("1min").agg({
            "open": ("price", "first"), "high": ("price", "max"), "low": ("price", "min"),
            "close": ("price", "last"), "volume": ("size", "sum"), "trades": ("size", "count"), "pv": "sum"})
        frame = self._read("trades", p, query_builder=q)
        frame["vwap"] = frame["pv"] / frame["volume"]  # type: ignore[index]
        return frame

    def vwap(self, p: Pick) -> float:
        frame = self._read("trades", p, columns=["price", "size"])
        return float((frame["price"] * frame["size"]).sum() / frame["size"].sum())  # type: ignore[index]

    def last(self, p: Pick) -> int:
        start = p.at.replace(tzinfo=None) - 7 * DAY
        frame = self.lib.read(f"trades/{p.symbol}", date_range=(start, p.at.replace(tzinfo=None)),  # type: ignore
                              columns=["sequence"]).data
        return int(frame["sequence"].iloc[-1]) if len(frame) else -1

    def asof(self, p: Pick) -> int:
        import pandas as pd

        trades = self._read("trades", p)
        quotes = self._read("quotes", p, columns=["bid_price", "ask_price"])
        return len(pd.merge_asof(trades, quotes, left_index=True, right_index=True))  # type: ignore[arg-type]

    def lake_vwap(self) -> int:
        import arcticdb

        rows = 0
        for symbol in self.symbols:
            q = arcticdb.QueryBuilder()
            q = q.apply("pv", q["price"] * q["size"]).resample("1D").agg({"pv": "sum", "size": "sum"})
            frame = self.lib.read(f"trades/{symbol}", query_builder=q).data  # type: ignore[attr-defined]
            rows += int(((frame["size"]) > 0).sum())
        return rows

    symbols: ClassVar[list[str]] = []


def maintain(settings: Settings) -> tuple[int, int]:
    """`k2 maintain` with no retention: compaction, the bars brought up to date, expiry of superseded snapshots."""
    lake_maintain(settings.model_copy(update={"maintain_retain_hours": 0, "maintain_keep_snapshots": 1}))
    catalog = open_catalog(settings)
    files = snapshots = 0
    for dataset in (Dataset.TRADES, Dataset.QUOTES):
        table = ensure_table(catalog, settings, dataset)
        files += len(table.inspect.files())
        snapshots += len(table.metadata.snapshots)
    return files, snapshots


# ----------------------------------------------------------------------------------------------------- main

QUERIES = [
    ("symbol-day trades", "symbol_day"),
    ("1-min bars, symbol-day", "bars"),
    ("VWAP, symbol-day", "vwap"),
    ("last trade ≤ T", "last"),
    ("as-of join trades→quotes", "asof"),
    ("VWAP per symbol-day, whole lake", "lake_vwap"),
]


def _agree(engines: list[object], chosen: list[Pick]) -> None:
    """Same answers everywhere (row counts, VWAP to 1e-9 relative, last sequence) on a few picks."""
    for pick in chosen[:5]:
        for method in ("symbol_day", "last", "asof"):
            answers = {e.name: getattr(e, method)(pick) for e in engines}  # type: ignore[attr-defined]
            if len(set(answers.values())) != 1:
                sys.exit(f"engines disagree on {method} {pick}: {answers}")
        vwaps = {e.name: e.vwap(pick) for e in engines}  # type: ignore[attr-defined]
        if max(vwaps.values()) - min(vwaps.values()) > 1e-9 * max(vwaps.values()):
            sys.exit(f"engines disagree on vwap {pick}: {vwaps}")
        bars = {e.name: len(e.bars(pick)) for e in engines}  # type: ignore[attr-defined]
        if len(set(bars.values())) != 1:
            sys.exit(f"engines disagree on the number of 1-min bars {pick}: {bars}")
    lake = {e.name: e.lake_vwap() for e in engines}  # type: ignore[attr-defined]
    if len(set(lake.values())) != 1:
        sys.exit(f"engines disagree on whole-lake VWAP rows: {lake}")


def run(engines: list[object], chosen: list[Pick], runs: int, label: str) -> None:
    _agree(engines, chosen)
    names = [e.name for e in engines]  # type: ignore[attr-defined]
    print(f"\n{label}: p50 / p99 ms over {runs} runs (same random symbol-days for every engine)")
    print(f"{'query':<34}" + "".join(f"{n:>20}" for n in names) + f"{'K2 ÷ best peer':>16}")
    for title, method in QUERIES:
        cells, p50s = [], {}
        for engine in engines:
            fn = getattr(engine, method)
            if method == "lake_vwap":
                p50, p99 = timings(fn, max(3, runs // 5))
            else:
                calls = iter(chosen * (runs + 1))
                p50, p99 = timings(lambda f=fn, c=calls: f(next(c)), runs)
            p50s[engine.name] = p50  # type: ignore[attr-defined]
            cells.append(f"{p50:>10.2f} / {p99:>7.2f}")
        peers = [v for k, v in p50s.items() if not k.startswith("K2")]
        ratio = p50s["K2"] / min(peers) if peers else float("nan")
        print(f"{title:<34}" + "".join(f"{c:>20}" for c in cells) + f"{ratio:>16.2f}", flush=True)


def drop_page_cache() -> None:
    """Empty the OS page cache (root only): every engine then reads its bytes from disk."""
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError as exc:
        sys.exit(f"--drop-caches needs root (writing /proc/sys/vm/drop_caches: {exc.strerror})")


def run_cold(engines: list[object], fresh_k2: Callable[[], object], chosen: list[Pick], label: str) -> None:
    """First touch on equal terms: the page cache dropped before every call of every engine, each symbol-day
    asked once per query, and a new K2 engine per query (its hot tier empty; plans warmed on a spare pick). The
    warm passes of `run` are not first touches for everyone: `_agree` and the whole-lake query before them leave
    some engines' files in the page cache and not others'."""
    spare = chosen[0]
    distinct = [p for key, p in {(p.symbol, p.day): p for p in chosen}.items() if key != (spare.symbol, spare.day)]
    names = [e.name for e in engines]  # type: ignore[attr-defined]
    print(f"\n{label}: p50 / p99 ms over {len(distinct)} symbol-days, page cache dropped before every call")
    print(f"{'query':<34}" + "".join(f"{n:>20}" for n in names) + f"{'K2 ÷ best peer':>16}")
    for title, method in QUERIES[:-1]:
        engines = [fresh_k2() if e.name == "K2" else e for e in engines]  # type: ignore[attr-defined]
        for engine in engines:
            getattr(engine, method)(spare)  # plans, libraries, connections: everything but this data warm
        samples: dict[str, list[float]] = {n: [] for n in names}
        for pick in distinct:
            for engine in engines:
                drop_page_cache()
                started = time.perf_counter()
                getattr(engine, method)(pick)
                samples[engine.name].append((time.perf_counter() - started) * 1000)  # type: ignore[attr-defined]
        p50s = {n: statistics.median(v) for n, v in samples.items()}
        cells = [f"{p50s[n]:>10.2f} / {statistics.quantiles(samples[n], n=100)[98]:>7.2f}" for n in names]
        peers = [v for k, v in p50s.items() if not k.startswith("K2")]
        ratio = p50s["K2"] / min(peers) if peers else float("nan")
        print(f"{title:<34}" + "".join(f"{c:>20}" for c in cells) + f"{ratio:>16.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=5_000_000, help="trades, and as many quotes")
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--commit-rows", type=int, default=250_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--drop-caches", action="store_true",
                        help="also time first touches with the page cache dropped before every call (root only)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="k2-bench-query-"))
    try:
        started = time.perf_counter()
        data = make_data(args.ticks, args.symbols, args.days)
        settings = build_k2(root / "k2", data, args.commit_rows)
        hive = build_hive(root / "hive", data)
        library = build_arctic(root / "arctic", data)
        print(f"built {args.ticks:,} trades + {args.ticks:,} quotes in {time.perf_counter() - started:.0f}s "
              f"({args.symbols} symbols x {args.days} days, K2 commits of {args.commit_rows:,} rows)")
        engines: list[object] = [K2(settings), K2Cold(settings), Polars(hive), DuckDBParquet(hive)]
        if library is None:
            print("ArcticDB not installed (pip install -e '.[bench]'): left out")
        else:
            Arctic.symbols = data.symbols
            engines.insert(2, Arctic(library))
        chosen = picks(data, max(args.runs, 10), args.seed)
        run(engines, chosen, args.runs, "lake as ingest leaves it, first pass (K2's hot tier fills as it goes)")
        run(engines, chosen, args.runs, "lake as ingest leaves it, the same picks again")
        files, snapshots = maintain(settings)
        print(f"\nk2 maintain: compacted to {files} files, {snapshots} snapshots")
        engines[:2] = [K2(settings), K2Cold(settings)]
        run(engines, chosen, args.runs, "lake after k2 maintain, first pass")
        run(engines, chosen, args.runs, "lake after k2 maintain, the same picks again")
        if args.drop_caches:
            run_cold(engines, lambda: K2(settings), chosen, "lake after k2 maintain, first touch")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
