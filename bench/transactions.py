"""Should K2's producer use Kafka transactions? What they cost on real Apache Kafka (KRaft, local): the same
Confluent-framed Avro trades produced idempotently (K2 today) and transactionally with a commit every N records,
then read back with read_uncommitted and read_committed consumers.

    .venv/bin/python bench/transactions.py [--trades 1000000] [--every 10000 100000]

Prints records/s per mode and the ratio to the idempotent producer of the same run (decision 0018).
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from k2.codec.encoder import encode_batch
from k2.kafka import distribution
from k2.kafka.broker import ManagedBroker
from k2.kafka.config import producer_config
from k2.kafka.producer import with_ingest_ts
from k2.schemas import Dataset, avro_schema
from k2.settings import Settings
from k2.sources.generator import generate_trades

PARTITIONS = 4


def records(total: int) -> tuple[list[bytes], list[bytes]]:
    table = with_ingest_ts(generate_trades(dt.date(2026, 1, 5), [f"S{i:02d}" for i in range(40)], total, seed=1))
    values = list(encode_batch(table, avro_schema(Dataset.TRADES), 1).values())
    return values, table.column("symbol").cast("binary").to_pylist()


def produce(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes], every: int | None,
            settings: Settings) -> float:
    config = producer_config(settings, bootstrap)
    if every:
        config["transactional.id"] = f"bench-{uuid.uuid4().hex[:8]}"
    producer = Producer(config)
    started = time.perf_counter()
    if every:
        producer.init_transactions(30)
        producer.begin_transaction()
    for index, (value, key) in enumerate(zip(values, keys, strict=True), start=1):
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.01)
        if every and index % every == 0:
            producer.commit_transaction(60)
            producer.begin_transaction()
    if every:
        producer.commit_transaction(60)
    assert producer.flush(60) == 0
    return len(values) / (time.perf_counter() - started)


def consume(bootstrap: str, topic: str, total: int, isolation: str) -> float:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                         "isolation.level": isolation, "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen, started = 0, None
    deadline = time.monotonic() + 300
    while seen < total and time.monotonic() < deadline:
        batch = consumer.consume(10_000, timeout=1.0)
        if batch and started is None:
            started = time.perf_counter()
        seen += sum(1 for m in batch if m.error() is None)
    consumer.close()
    assert seen == total and started is not None, (seen, total)
    return total / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    settings = Settings()
    distribution.fetch(settings.resolved_kafka_dist, settings.kafka_version)
    values, keys = records(args.trades)
    root = Path(tempfile.mkdtemp(prefix="k2-bench-tx-"))
    print(f"{args.trades:,} Avro trades ({sum(map(len, values)) / len(values):.0f} B), {PARTITIONS} partitions, "
          f"Apache Kafka {settings.kafka_version} (local KRaft node)")
    print(f"{'producer':<32}{'produce/s':>12}{'ratio':>7}{'read_committed/s':>18}{'read_uncommitted/s':>20}")
    with ManagedBroker("kafka", root / "broker", settings=settings) as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        baseline = None
        for every in [None, *args.every]:
            topic = f"tx-{uuid.uuid4().hex[:8]}"
            admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
            rate = produce(broker.bootstrap, topic, values, keys, every, settings)
            baseline = baseline or rate
            committed = consume(broker.bootstrap, topic, args.trades, "read_committed")
            uncommitted = consume(broker.bootstrap, topic, args.trades, "read_uncommitted")
            name = f"transactional, commit every {every:,}" if every else "idempotent (K2 today)"
            print(f"{name:<32}{rate:>12,.0f}{rate / baseline:>7.2f}{committed:>18,.0f}{uncommitted:>20,.0f}",
                  flush=True)


if __name__ == "__main__":
    main()
