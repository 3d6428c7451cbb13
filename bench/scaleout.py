"""Scale-out ingest: N `k2 ingest` processes in one consumer group share a topic's partitions. How the landing rate
moves from 1 to 2 consumers and from 4 to 16 partitions, on a real broker (Apache Kafka by default) and a real lake.

    .venv/bin/python bench/scaleout.py [--trades 4000000] [--broker kafka|tansu|noida] [--partitions 4 16]
                                       [--consumers 1 2]

Prints one row per (partitions, consumers): rows landed per second from the launch of the consumers to the last
Iceberg commit (group joins included, the same for every row), each consumer's peak RSS, commits and commits
retried after a conflict, and the ratio to the first row. On a 2-core machine two consumers compete for the same
cores: the point is to measure that, not to hope.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pyarrow as pa

from k2.ingest import pipeline
from k2.kafka import distribution
from k2.kafka.broker import ManagedBroker
from k2.lake.catalog import ensure_table, open_catalog
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_trades

SYMBOLS = [f"S{i:03d}" for i in range(64)]


def trades(total: int) -> pa.Table:
    days = -(-total // 1_000_000)
    return pa.concat_tables([
        generate_trades(dt.date(2026, 1, 5) + dt.timedelta(days=d), SYMBOLS, min(1_000_000, total - d * 1_000_000),
                        seed=d) for d in range(days)])


def run(root: Path, bootstrap: str, rows: pa.Table, partitions: int, consumers: int) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(home=root / tag, kafka_bootstrap=bootstrap, topic_trades=f"scale-{tag}",
                        topic_dlq=f"dlq-{tag}", consumer_group=f"scale-{tag}", topic_partitions=partitions)
    report = pipeline.produce_table(settings, bootstrap, rows)
    assert report.failed == 0
    ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    env = {**os.environ, "K2_HOME": str(settings.home), "K2_KAFKA_BOOTSTRAP": bootstrap,
           "K2_TOPIC_TRADES": settings.topic_trades, "K2_TOPIC_DLQ": settings.topic_dlq,
           "K2_CONSUMER_GROUP": settings.consumer_group, "K2_TOPIC_PARTITIONS": str(partitions)}
    started = time.time()
    processes = [subprocess.Popen([sys.executable, "-m", "k2.cli", "ingest", "--dataset", "trades",
                                   "--idle-seconds", "6"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True) for _ in range(consumers)]
    peaks, outputs = [], []
    for process in processes:
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        assert process.stdout is not None
        outputs.append(process.stdout.read())
        assert process.returncode == 0, outputs[-1]
        peaks.append(usage.ru_maxrss / 1024)  # KiB → MiB
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    snapshot = table.current_snapshot()
    assert snapshot is not None
    landed = sum(int(s.summary["added-records"]) for s in table.metadata.snapshots
                 if s.summary and "added-records" in s.summary)
    assert landed == rows.num_rows, (landed, outputs)
    seconds = snapshot.timestamp_ms / 1000 - started
    retried = sum(int(o.split(" commit(s) retried")[0].rsplit("; ", 1)[-1]) for o in outputs
                  if "commit(s) retried" in o)
    return {"rate": rows.num_rows / seconds, "seconds": seconds, "rss": max(peaks),
            "commits": len(table.metadata.snapshots), "retried": retried}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trades", type=int, default=4_000_000)
    parser.add_argument("--broker", choices=["kafka", "tansu", "noida"], default="kafka")
    parser.add_argument("--partitions", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--consumers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    settings = Settings()
    if args.broker == "kafka":
        distribution.fetch(settings.resolved_kafka_dist, settings.kafka_version)
    root = Path(tempfile.mkdtemp(prefix="k2-bench-scaleout-"))
    rows = trades(args.trades)
    print(f"{args.trades:,} trades, {len(SYMBOLS)} symbols, broker {args.broker}, {os.cpu_count()} cores, "
          f"commits of {settings.ingest_commit_rows:,} rows; lake in {root}")
    print(f"{'partitions':>10}{'consumers':>10}{'rows/s':>12}{'seconds':>9}{'peak RSS MiB':>14}{'commits':>9}"
          f"{'retried':>9}{'ratio':>7}")
    baseline = None
    with ManagedBroker(args.broker, root / "broker", settings=settings) as broker:
        for partitions in args.partitions:
            for consumers in args.consumers:
                result = run(root, broker.bootstrap, rows, partitions, consumers)
                baseline = baseline or result["rate"]
                print(f"{partitions:>10}{consumers:>10}{result['rate']:>12,.0f}{result['seconds']:>9.1f}"
                      f"{result['rss']:>14,.0f}{result['commits']:>9.0f}{result['retried']:>9.0f}"
                      f"{result['rate'] / baseline:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
