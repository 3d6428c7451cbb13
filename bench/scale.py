"""1000x the seed's volume, end to end: N trades and N quotes generated day by day, produced to Apache Kafka,
landed by `k2 ingest` (its own process), compacted by `k2 maintain`, queried with bench/query.py's queries against
the same peers (ArcticDB, polars and DuckDB over hive Parquet, built day by day beside the load), and replayed.
Reports every rate, each process's peak RSS and the disk each store takes.

    .venv/bin/python bench/scale.py --ticks 50000000 [--symbols 50] [--days 25] [--runs 20] [--root DIR]

Memory stays bounded by one day of data in this process (the generator, the producer, the peers' builders), by the
commit size in `k2 ingest`, by a partition in `k2 maintain`, by one day in the replay.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
import query as qb
from k2.kafka import distribution
from k2.kafka.broker import ManagedBroker
from k2.kafka.producer import TickProducer
from k2.registry import registry_for
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_quotes, generate_trades


def own_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def high_water_mib(pid: int) -> float:
    """A live process's peak RSS so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def du(path: Path) -> int:
    """Bytes on disk (allocated blocks: Kafka's index files are sparse, 10 MB apparent each)."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def child(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run `command`; its wall seconds, its own peak RSS (MiB) and stdout."""
    started = time.perf_counter()
    out, rss = finish(spawn(command, env))
    return time.perf_counter() - started, rss, out


def spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """Start `command` under GNU time: a child's ru_maxrss counts the pages of the (large) process that spawned it,
    time's child is forked from time itself, so its figure is the command's own."""
    peak = tempfile.NamedTemporaryFile(suffix=".rss", delete=False)  # noqa: SIM115 (closed at once, read by finish)
    peak.close()
    # stderr to a file: a pipe nobody reads while stdout is being read could fill and stall the child
    process = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", peak.name, *command], env=env,
                               stdout=subprocess.PIPE, stderr=tempfile.TemporaryFile(), text=True)  # noqa: SIM115
    process.peak_file = peak.name  # type: ignore[attr-defined]
    return process


def finish(process: subprocess.Popen[str]) -> tuple[str, float]:
    """Wait for `process`: its stdout and its own peak RSS in MiB."""
    assert process.stdout is not None
    out = process.stdout.read()
    assert process.wait() == 0, f"{process.args} failed with {process.returncode}"
    peak = Path(process.peak_file)  # type: ignore[attr-defined]
    kib = int(peak.read_text().split()[-1])
    peak.unlink()
    return out, kib / 1024


def append_arctic(library: object, day: qb.Data, first: bool) -> None:
    for name, rows in (("trades", day.trades), ("quotes", day.quotes)):
        frame = qb._float_prices(pl.from_arrow(rows)).to_pandas()
        frame["ts"] = frame["ts"].dt.tz_localize(None)
        for symbol, part in frame.groupby("symbol"):
            body = part.drop(columns=["symbol"]).set_index("ts").sort_index()
            (library.write if first else library.append)(f"{name}/{symbol}", body)  # type: ignore[attr-defined]


def load_and_maintain(args: argparse.Namespace, root: Path, base: Settings, names: list[str], days: list,
                      library: object | None) -> Settings:
    """Generate, produce, ingest and compact; the settings of the lake it leaves."""
    per_day = args.ticks // args.days
    with ManagedBroker("kafka", root / "kafka", settings=base) as broker:
        settings = Settings(home=root / "k2", kafka_bootstrap=broker.bootstrap, topic_partitions=8,
                            kafka_dist=base.resolved_kafka_dist)
        env = {**os.environ, "K2_HOME": str(settings.home), "K2_KAFKA_BOOTSTRAP": broker.bootstrap,
               "K2_TOPIC_PARTITIONS": "8"}
        from k2.kafka.admin import ensure_topics

        ensure_topics(settings, broker.bootstrap)
        ingest = spawn([sys.executable, "-m", "k2.cli", "ingest", "--dataset", "all", "--idle-seconds", "60"], env)
        producer = TickProducer(settings, broker.bootstrap, registry_for(settings))
        produce_seconds = peers_seconds = 0.0
        started = time.time()
        for index, day in enumerate(days):
            trades = generate_trades(day, names, per_day, seed=11 + index)
            quotes = generate_quotes(day, names, per_day, seed=97 + index)
            clock = time.perf_counter()
            for dataset, rows in ((Dataset.TRADES, trades), (Dataset.QUOTES, quotes)):
                for offset in range(0, rows.num_rows, 200_000):
                    producer.send(dataset, rows.slice(offset, 200_000))
            produce_seconds += time.perf_counter() - clock
            if not args.no_peers:
                clock = time.perf_counter()
                qb.build_hive(root / "hive", qb.Data(trades, quotes, names, [day]))
                if library is not None:
                    append_arctic(library, qb.Data(trades, quotes, names, [day]), first=index == 0)
                peers_seconds += time.perf_counter() - clock
            print(f"  day {index + 1}/{args.days} produced ({time.time() - started:.0f}s)", flush=True)
        report = producer.close()
        assert report.failed == 0, report
        produced_at = time.time()
        out, ingest_rss = finish(ingest)
        from k2.lake.catalog import ensure_table, open_catalog

        catalog = open_catalog(settings)
        last_commit = max(ensure_table(catalog, settings, d).metadata.snapshots[-1].timestamp_ms
                          for d in (Dataset.TRADES, Dataset.QUOTES)) / 1000
        total = 2 * per_day * args.days
        kafka_bytes = du(root / "kafka")
        broker_rss = high_water_mib(broker.pid)
        lake_before = du(settings.home / "warehouse")
        print(f"\nproduced {total:,} records in {produce_seconds:.0f}s of producing ({total / produce_seconds:,.0f}/s; "
              f"generation and peer builds excluded); all landed {last_commit - started:.0f}s after the first "
              f"record ({total / (last_commit - started):,.0f} rows/s end to end), {last_commit - produced_at:.0f}s "
              f"after the last; producer process peak RSS {own_rss():,.0f} MiB, `k2 ingest` peak RSS "
              f"{ingest_rss:,.0f} MiB, Kafka broker (JVM, {base.kafka_jvm_options}) peak RSS {broker_rss:,.0f} MiB")
        print(out.strip())
        seconds, rss, _ = child([sys.executable, "-m", "k2.cli", "maintain", "--retain-hours", "0", "--keep", "1",
                                 "--orphan-age-hours", "0"],
                                env)
        print(f"k2 maintain: {seconds:.0f}s ({total / seconds:,.0f} rows/s), peak RSS {rss:,.0f} MiB; lake "
              f"{lake_before / 1e9:.2f} GB as ingested → {du(settings.home / 'warehouse') / 1e9:.2f} GB compacted; "
              f"Kafka log {kafka_bytes / 1e9:.2f} GB; hive Parquet {du(root / 'hive') / 1e9:.2f} GB; ArcticDB "
              f"{du(root / 'arctic') / 1e9:.2f} GB; peers built in {peers_seconds:.0f}s", flush=True)
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticks", type=int, default=50_000_000, help="trades, and as many quotes")
    parser.add_argument("--symbols", type=int, default=50)
    parser.add_argument("--days", type=int, default=25)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--root", type=Path, help="where the lake, the log and the peers go (default: a temp dir)")
    parser.add_argument("--no-peers", action="store_true", help="K2 only (no ArcticDB/hive builds)")
    parser.add_argument("--queries-only", action="store_true",
                        help="query and replay the lake and peers a previous run left under --root")
    parser.add_argument("--drop-caches", action="store_true",
                        help="also time first touches with the page cache dropped before every call (root only)")
    args = parser.parse_args()
    root = args.root or Path(tempfile.mkdtemp(prefix="k2-bench-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    base = Settings()
    distribution.fetch(base.resolved_kafka_dist, base.kafka_version)
    names = [f"S{i:03d}" for i in range(args.symbols)]
    days = [qb.FIRST_DAY + i * qb.DAY for i in range(args.days)]
    print(f"{args.ticks:,} trades + {args.ticks:,} quotes, {args.symbols} symbols x {args.days} days, Apache Kafka "
          f"{base.kafka_version}, {os.cpu_count()} cores; everything under {root}", flush=True)

    library = None
    if not args.no_peers:
        try:
            import arcticdb

            library = arcticdb.Arctic(f"lmdb://{root / 'arctic'}?map_size=60GB").get_library(
                "ticks", create_if_missing=True)
        except ImportError:
            print("ArcticDB not installed (pip install -e '.[bench]'): left out")
    if args.queries_only:
        settings = Settings(home=root / "k2")
    else:
        settings = load_and_maintain(args, root, base, names, days, library)

    query_settings = Settings(home=settings.home)
    engines: list[object] = [qb.K2(query_settings), qb.K2Cold(query_settings)]
    if not args.no_peers:
        engines += [qb.Polars(root / "hive"), qb.DuckDBParquet(root / "hive")]
        if library is not None:
            qb.Arctic.symbols = names
            engines.insert(2, qb.Arctic(library))
    chosen = qb.picks(qb.Data(pa.table({}), pa.table({}), names, days), max(args.runs, 10), 7)
    qb.run(engines, chosen, args.runs, "compacted lake, first pass")
    qb.run(engines, chosen, args.runs, "compacted lake, the same picks again")
    if args.drop_caches:
        qb.run_cold(engines, lambda: qb.K2(query_settings), chosen, "compacted lake, first touch")
    print(f"query process peak RSS {own_rss():,.0f} MiB")

    replay = ("import time; from k2.replay.engine import Replay; from k2.settings import Settings; "
              "t = time.perf_counter(); n = sum(b.num_rows for b in Replay(Settings()).batches()); "
              "print(n, time.perf_counter() - t)")
    _, rss, out = child([sys.executable, "-c", replay], {**os.environ, "K2_HOME": str(settings.home)})
    events, seconds = out.split()
    print(f"replay of everything, merged and in order, max speed: {int(events):,} events in {float(seconds):.0f}s "
          f"({int(events) / float(seconds):,.0f} events/s), peak RSS {rss:,.0f} MiB")
    if args.root is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
