"""Ingest throughput: produce, consume → Iceberg, and end to end, against the ceiling of appending the same
Arrow data straight to Iceberg. Real local broker (Tansu by default), real lake in a temp dir.

    .venv/bin/python bench/ingest.py --sizes 1000000 5000000 20000000 [--broker tansu|noida]

Prints one row per size with rows/s per stage and the ratio to the ceiling (direct Arrow → Iceberg append), then
the CPU each stage used per row (the produce and consume stages in this process; end to end, each process's). The
CPU of the two stages is the steadiest measure of what a change costs: rates vary ±15 % from run to run here, and
the end-to-end CPU with them (a consumer that keeps up reads smaller batches than one that lags).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from k2.ingest import pipeline
from k2.kafka.broker import ManagedBroker
from k2.kafka.producer import TickProducer, with_ingest_ts
from k2.lake import writer
from k2.lake.catalog import ensure_table, open_catalog
from k2.registry import registry_for
from k2.runtime import tune_gc_for_streaming
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_trades

SYMBOLS = [f"S{i:03d}" for i in range(50)]
DAY_ROWS = 1_000_000


def days(total: int) -> Iterator[pa.Table]:
    """`total` trades as successive synthetic days of up to 1M trades."""
    start = dt.date(2026, 1, 5)
    for index, offset in enumerate(range(0, total, DAY_ROWS)):
        yield generate_trades(start + dt.timedelta(days=index), SYMBOLS, min(DAY_ROWS, total - offset), seed=index)


def source(total: int) -> list[pa.Table]:
    """The trades in memory before any clock starts: the benchmark times K2, not the synthetic data generator."""
    return list(days(total))


def fresh_settings(root: Path, bootstrap: str) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(home=root / tag, kafka_bootstrap=bootstrap, topic_trades=f"bench-{tag}", topic_dlq=f"dlq-{tag}",
                    consumer_group=f"bench-{tag}", ingest_idle_seconds=2.0)


def produce(settings: Settings, trades: list[pa.Table]) -> float:
    """Seconds to encode, produce and get every record acknowledged."""
    from k2.kafka.admin import ensure_topics

    ensure_topics(settings, settings.kafka_bootstrap or "")
    producer = TickProducer(settings, settings.kafka_bootstrap or "", registry_for(settings))
    started = time.perf_counter()
    for day in trades:
        for offset in range(0, day.num_rows, 100_000):
            producer.send(Dataset.TRADES, day.slice(offset, 100_000))
    report = producer.close()
    assert report.failed == 0 and report.queued == sum(day.num_rows for day in trades), report
    return time.perf_counter() - started


def consume(settings: Settings, total: int) -> float:
    """Seconds from the first consumed record to the last Iceberg commit (group join excluded)."""
    report = pipeline.ingest(settings, settings.kafka_bootstrap or "")
    assert report.rows_landed == total, report
    assert report.first_message_at is not None and report.last_commit_at is not None
    return report.last_commit_at - report.first_message_at


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far (every thread)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def end_to_end(settings: Settings, trades: list[pa.Table], broker_pid: int) -> tuple[float, tuple[float, ...]]:
    """Seconds from the first record produced to the last Iceberg commit, with the consumer in its own process
    (`k2 ingest`, as deployed; in one process the two would share the GIL), group join done beforehand; and the
    CPU seconds the producer, the consumer and the broker spent on it. On two cores the three compete for the CPU,
    so the CPU they use is the steadier measure of what a change costs: the wall-clock rate varies ±15 % here."""
    from k2.kafka.admin import ensure_topics

    ensure_topics(settings, settings.kafka_bootstrap or "")
    env = {**os.environ, "K2_HOME": str(settings.home), "K2_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
           "K2_TOPIC_TRADES": settings.topic_trades, "K2_TOPIC_DLQ": settings.topic_dlq,
           "K2_CONSUMER_GROUP": settings.consumer_group}
    consumer = subprocess.Popen([sys.executable, "-m", "k2.cli", "ingest", "--idle-seconds", "15"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    time.sleep(settings.session_timeout_ms / 1000 + 2)  # let the group join finish: measure the pipeline, not it
    consumer_before, broker_before = process_cpu_seconds(consumer.pid), process_cpu_seconds(broker_pid)
    children_before = children_cpu_seconds()
    started, producer_before = time.time(), time.process_time()
    produce(settings, trades)
    producer_cpu = time.process_time() - producer_before
    broker_cpu = process_cpu_seconds(broker_pid) - broker_before  # the idle wait below costs the broker ~nothing
    out, _ = consumer.communicate(timeout=3600)
    # the consumer's whole CPU (it is the only child waited for here) less what it used before the clock started;
    # its idle tail (--idle-seconds) is a blocked poll
    consumer_cpu = children_cpu_seconds() - children_before - consumer_before
    total = sum(day.num_rows for day in trades)
    assert consumer.returncode == 0 and f"landed {total:,} rows" in out, out
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    snapshot = table.current_snapshot()
    assert snapshot is not None
    return snapshot.timestamp_ms / 1000 - started, (producer_cpu, consumer_cpu, broker_cpu)


def ceiling(root: Path, trades: list[pa.Table], batch: int) -> float:
    """Seconds to append the same rows straight to Iceberg in consumer-sized commits."""
    settings = Settings(home=root / f"ceiling-{uuid.uuid4().hex[:8]}")
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    stamped = [with_ingest_ts(day) for day in trades]
    started = time.perf_counter()
    for day in stamped:
        for offset in range(0, day.num_rows, batch):
            writer.append(table, day.slice(offset, batch))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000, 20_000_000])
    parser.add_argument("--broker", choices=["tansu", "noida"], default="tansu")
    args = parser.parse_args()
    tune_gc_for_streaming()  # as `k2 ingest` does: this process runs the in-process consumer
    root = Path(tempfile.mkdtemp(prefix="k2-bench-ingest-"))
    batch = Settings().ingest_commit_rows
    print(f"broker {args.broker}, {len(SYMBOLS)} symbols, Iceberg commits of {batch:,} rows, lake in {root}")
    header = f"{'trades':>12}{'produce/s':>12}{'consume→ice/s':>15}{'e2e/s':>10}{'ceiling/s':>11}{'e2e/ceiling':>13}"
    cpu_header = (f"{'CPU µs/row:':>12}{'produce':>12}{'consume→ice':>15}{'e2e:':>10}{'producer':>10}{'consumer':>10}"
                  f"{'broker':>8}{'total':>8}")
    print(header)
    for total in args.sizes:
        trades = source(total)
        with ManagedBroker(args.broker, root / f"broker-{total}") as broker:
            staged = fresh_settings(root, broker.bootstrap)
            cpu_before = time.process_time()
            produce_s = produce(staged, trades)
            cpu_produced = time.process_time()
            consume_s = consume(staged, total)
            stage_cpu = (cpu_produced - cpu_before, time.process_time() - cpu_produced)
        with ManagedBroker(args.broker, root / f"broker-e2e-{total}") as broker:
            e2e_s, cpu = end_to_end(fresh_settings(root, broker.bootstrap), trades, broker.pid)
        ceiling_s = ceiling(root, trades, batch)
        del trades
        rates = [total / s for s in (produce_s, consume_s, e2e_s, ceiling_s)]
        print(f"{total:>12,}{rates[0]:>12,.0f}{rates[1]:>15,.0f}{rates[2]:>10,.0f}{rates[3]:>11,.0f}"
              f"{rates[2] / rates[3]:>13.2f}", flush=True)
        per_row = [seconds / total * 1e6 for seconds in (*stage_cpu, *cpu, sum(cpu))]
        print(cpu_header)
        print(f"{'':>12}" + "".join(f"{v:>{w}.2f}" for v, w in zip(per_row, (12, 15, 20, 10, 8, 8), strict=True)),
              flush=True)


if __name__ == "__main__":
    main()
