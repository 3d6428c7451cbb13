"""Replay throughput, memory and pacing: K2's replay against what a user would write by hand.

Builds N trades + N quotes (20 symbols x 5 days by default) in a K2 lake through K2's writer in 250k-row commits
(as `k2 ingest` leaves them), then runs each mode in its own process (so that peak RSS is that mode's own):
- k2 batches: `Replay(...).batches()` at maximum speed, merged and in order, every batch touched;
- k2 first day: the same, over one day of the five (peak RSS must not grow with the range);
- k2 events: `Replay(...).events()`, one Python dict per event (the callback API), on the first 2M events;
- polars: read every data file of both tables, concatenate, sort on the same key, iterate in slices;
- pyiceberg: `table.scan().to_arrow()` for both tables, concatenate, sort, iterate in batches;
and K2's pacing at 1x (30 s of event time) and 100x (30 min of event time): lateness percentiles.

    .venv/bin/python bench/replay.py --ticks 10000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

ORDER = ["ts", "sequence", "rank", "exchange", "symbol"]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_k2_batches(home: Path) -> dict[str, float]:
    from k2.replay.engine import Replay
    from k2.settings import Settings

    started = time.perf_counter()
    events = 0
    for batch in Replay(Settings(home=home)).batches():
        events += batch.num_rows
    return {"events": events, "seconds": time.perf_counter() - started}


def run_k2_first_day(home: Path) -> dict[str, float]:
    """The same replay over one day of the five: peak RSS must not depend on the range's length."""
    from k2.replay.cursor import ReplayRequest
    from k2.replay.engine import Replay
    from k2.settings import Settings

    day = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    started = time.perf_counter()
    events = 0
    for batch in Replay(Settings(home=home), ReplayRequest(start=day, end=day + dt.timedelta(days=1))).batches():
        events += batch.num_rows
    return {"events": events, "seconds": time.perf_counter() - started}


def run_k2_events(home: Path, limit: int = 2_000_000) -> dict[str, float]:
    from k2.replay.engine import Replay
    from k2.settings import Settings

    started = time.perf_counter()
    events = 0
    for _ in Replay(Settings(home=home), limit=limit).events():
        events += 1
    return {"events": events, "seconds": time.perf_counter() - started}


def _files(home: Path) -> dict[str, list[str]]:
    from k2.lake.catalog import load_table, open_catalog
    from k2.schemas import Dataset
    from k2.settings import Settings

    settings = Settings(home=home)
    catalog = open_catalog(settings)
    found = {}
    for dataset in (Dataset.TRADES, Dataset.QUOTES):
        table = load_table(catalog, settings, dataset)
        assert table is not None
        found[dataset.value] = [t.file.file_path.removeprefix("file://") for t in table.scan().plan_files()]
    return found


def run_polars(home: Path) -> dict[str, float]:
    import polars as pl

    files = _files(home)
    started = time.perf_counter()
    trades = pl.read_parquet(files["trades"]).drop("ingest_ts").with_columns(pl.lit(1, pl.Int8).alias("rank"))
    quotes = pl.read_parquet(files["quotes"]).drop("ingest_ts").with_columns(pl.lit(0, pl.Int8).alias("rank"))
    merged = pl.concat([trades, quotes], how="diagonal_relaxed").sort(ORDER)
    events = 0
    for piece in merged.iter_slices(65_536):
        events += piece.height
    return {"events": events, "seconds": time.perf_counter() - started}


def run_pyiceberg(home: Path) -> dict[str, float]:
    import pyarrow as pa

    from k2.lake.catalog import load_table, open_catalog
    from k2.schemas import Dataset
    from k2.settings import Settings

    settings = Settings(home=home)
    catalog = open_catalog(settings)
    started = time.perf_counter()
    parts = []
    for dataset, rank in ((Dataset.TRADES, 1), (Dataset.QUOTES, 0)):
        table = load_table(catalog, settings, dataset)
        assert table is not None
        rows = table.scan().to_arrow().drop_columns(["ingest_ts"])
        parts.append(rows.append_column("rank", pa.repeat(pa.scalar(rank, pa.int8()), rows.num_rows)))
    merged = pa.concat_tables(parts, promote_options="default").sort_by([(c, "ascending") for c in ORDER])
    events = 0
    for batch in merged.to_batches(65_536):
        events += batch.num_rows
    return {"events": events, "seconds": time.perf_counter() - started}


def run_pacing(home: Path, speed: float, seconds: float) -> dict[str, float]:
    from k2.replay.cursor import ReplayRequest
    from k2.replay.engine import Replay
    from k2.settings import Settings

    start = dt.datetime(2026, 1, 6, 15, tzinfo=dt.UTC)
    request = ReplayRequest(start=start, end=start + dt.timedelta(seconds=seconds))
    replay = Replay(Settings(home=home), request, speed=speed)
    began = time.perf_counter()
    events = sum(b.num_rows for b in replay.batches())
    return {"events": events, "seconds": time.perf_counter() - began, "p50": replay.pacing.percentile_ms(50) or 0,
            "p99": replay.pacing.percentile_ms(99) or 0, "p999": replay.pacing.percentile_ms(99.9) or 0,
            "target": seconds / speed}


MODES = {
    "k2-batches": run_k2_batches, "k2-first-day": run_k2_first_day, "k2-events": run_k2_events,
    "polars": run_polars, "pyiceberg": run_pyiceberg,
    "pace-1x": lambda home: run_pacing(home, 1, 30), "pace-100x": lambda home: run_pacing(home, 100, 1800),
}


def child(mode: str, home: Path) -> None:
    result = MODES[mode](home)
    result["peak_mb"] = _peak_mb()
    print(json.dumps(result))


def measure(mode: str, home: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--child", mode, "--home", str(home)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=10_000_000, help="trades, and as many quotes")
    parser.add_argument("--home", type=Path, help="reuse a lake built by an earlier run")
    parser.add_argument("--child", choices=sorted(MODES))
    options = parser.parse_args()
    if options.child:
        child(options.child, options.home)
        return
    home = options.home
    if home is None or not home.exists():
        from query import build_k2, make_data

        home = home or Path(tempfile.mkdtemp(prefix="k2-replay-")) / "home"
        started = time.perf_counter()
        build_k2(home, make_data(options.ticks, 20, 5), 250_000)
        print(f"built {options.ticks:,} trades + {options.ticks:,} quotes in {time.perf_counter() - started:.0f}s "
              f"at {home}")
    # pacing first: the baselines below allocate 7-10 GB, and the kernel's reclaim after them stalls a sleeping
    # process for tens of ms (measured: 1x p99 25-160 ms right after them, 1.5 ms before)
    pacing = {mode: measure(mode, home) for mode in ("pace-1x", "pace-100x")}
    results = {mode: measure(mode, home) for mode in ("k2-batches", "k2-first-day", "k2-events", "polars",
                                                      "pyiceberg")}
    baseline = results["polars"]["events"] / results["polars"]["seconds"]
    print(f"\n{'mode':<44} {'events':>12} {'seconds':>8} {'events/s':>12} {'÷ polars':>9} {'peak RSS MB':>12}")
    names = {"k2-batches": "K2 replay, Arrow batches (max speed)", "k2-first-day": "K2 replay, the first day only",
             "k2-events": "K2 replay, one dict per event (first 2M)",
             "polars": "polars: read all, concat, sort, iterate", "pyiceberg": "pyiceberg: scan, concat, sort, iterate"}
    for mode, result in results.items():
        rate = result["events"] / result["seconds"]
        print(f"{names[mode]:<44} {int(result['events']):>12,} {result['seconds']:>8.2f} {rate:>12,.0f} "
              f"{rate / baseline:>9.2f} {result['peak_mb']:>12,.0f}")
    print(f"\n{'pacing':<12} {'events':>8} {'wall s':>8} {'ideal s':>8} {'late p50 ms':>12} {'p99 ms':>8} "
          f"{'p99.9 ms':>9}")
    for mode, result in pacing.items():
        print(f"{mode:<12} {int(result['events']):>8,} {result['seconds']:>8.2f} {result['target']:>8.2f} "
              f"{result['p50']:>12.2f} {result['p99']:>8.2f} {result['p999']:>9.2f}")


if __name__ == "__main__":
    main()
