"""MirrorMaker 2 between two local Apache Kafka brokers (regions A and B), as K2 runs it (k2.kafka.mirror): what it
costs and how far B trails A. The multi-region drill (tests/multiregion/test_mirror.py) prints the figures of a
failover; this measures the mirror alone.

    .venv/bin/python bench/mirror.py [--burst 5000] [--rate 1000] [--bulk 200000]

Prints: MirrorMaker's start (to its first mirrored topic), CPU and RSS; whether B's copy of a topic is A's record for
record (offsets, keys, values, headers, timestamps, per partition); the replication lag (producer timestamp →
readable on A, → readable on B) during a `k2 load` burst and at a steady rate; the catch-up after a bulk load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from k2.kafka import distribution, mirror
from k2.kafka.admin import ensure_topics
from k2.kafka.broker import ManagedBroker
from k2.settings import Settings

PARTITIONS = 4
SYMBOLS = "AAA,BBB,CCC,DDD,EEE,FFF,GGG,HHH"


def usage(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if line.startswith("VmRSS"))
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), rss_kb / 1024


def ends(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-mirror"})
    try:
        found = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if found is None or found.error is not None:
            return {}
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in found.partitions}
    except Exception:  # a topic just created answers NOT_LEADER for a moment
        return {}
    finally:
        consumer.close()


def records(bootstrap: str, topic: str) -> dict[int, list[tuple[object, ...]]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-mirror", "enable.auto.commit": False})
    found: dict[int, list[tuple[object, ...]]] = {}
    for partition, end in ends(bootstrap, topic).items():
        found[partition] = []
        consumer.assign([TopicPartition(topic, partition, 0)])
        while len(found[partition]) < end:
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                found[partition].append((message.offset(), message.key(), message.value(), message.headers(),
                                         message.timestamp()))
    consumer.close()
    return found


class Lag(threading.Thread):
    """Producer timestamp → consumed here, per record of `topic`, while running."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.lags = bootstrap, topic, list[float]()
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"bench-lag-{time.monotonic_ns()}",
                             "auto.offset.reset": "latest", "enable.auto.commit": False})
        consumer.subscribe([self.topic])
        while not self.done.is_set():
            for message in consumer.consume(1000, 0.005):
                if message.error() is None:
                    self.lags.append(time.time() - message.timestamp()[1] / 1000)
        consumer.close()

    def stop(self) -> str:
        self.done.set()
        self.join()
        lags = sorted(self.lags)
        if not lags:
            return "no records"
        at = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))] * 1000  # noqa: E731
        return f"p50 {at(0.5):6.1f} ms  p99 {at(0.99):6.1f} ms  ({len(lags):,} records)"


def watch(a: str, b: str, topic: str) -> tuple[Lag, Lag]:
    pair = Lag(a, topic), Lag(b, f"A.{topic}")
    time.sleep(3)  # both subscribed and assigned before the first record
    return pair


def load(settings: Settings, rows: int, root: Path) -> float:
    """`k2 generate` a CSV of `rows` trades, then `k2 load` it; seconds the load took."""
    env = {**os.environ, "K2_HOME": str(settings.home), "K2_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or ""}
    csv = root / f"trades-{rows}-{time.monotonic_ns()}.csv"
    subprocess.run([sys.executable, "-m", "k2.cli", "generate", "--date", "2026-03-02", "--trades", str(rows),
                    "--symbols", SYMBOLS, "--seed", str(time.monotonic_ns() % 1000), "--out", str(csv)], env=env,
                   check=True, capture_output=True)
    began = time.monotonic()
    subprocess.run([sys.executable, "-m", "k2.cli", "load", str(csv)], env=env, check=True, capture_output=True)
    return time.monotonic() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", type=int, default=5_000, help="trades in the `k2 load` whose lag is measured")
    parser.add_argument("--rate", type=int, default=1_000, help="records/s of the steady stream (5 s)")
    parser.add_argument("--bulk", type=int, default=200_000, help="trades of the catch-up load")
    args = parser.parse_args()
    settings = Settings()
    kafka = distribution.fetch(settings.resolved_kafka_dist, settings.kafka_version)
    jars = mirror.fetch(mirror.default_dist(kafka))
    root = Path(tempfile.mkdtemp(prefix="k2-bench-mirror-"))
    kafka_settings = settings.model_copy(update={"kafka_dist": kafka})
    with ManagedBroker("kafka", root / "a", settings=kafka_settings) as a, \
            ManagedBroker("kafka", root / "b", settings=kafka_settings) as b:
        region_a = Settings(home=root / "home", kafka_bootstrap=a.bootstrap)
        ensure_topics(region_a, a.bootstrap)
        admin = AdminClient({"bootstrap.servers": a.bootstrap})  # kept: a destroyed client fails its futures
        admin.create_topics([NewTopic("k2.probe.v1", PARTITIONS, 1)])["k2.probe.v1"].result(30)
        config = root / "mm2.properties"
        config.write_text(mirror.render({"A": a.bootstrap, "B": b.bootstrap}, [("A", "B")]))
        launched = time.monotonic()
        maker = mirror.start(jars, config, root / "mirrormaker.log", die_with_parent=True)
        try:
            logged = maker.wait_started()
            while not ends(b.bootstrap, "A.k2.trades.v1"):
                time.sleep(0.1)
            cpu, rss = usage(maker.process.pid)
            print(f"MirrorMaker {mirror.CONNECT_MIRROR_VERSION}: started (log) {logged:.1f} s, first mirrored topic "
                  f"{time.monotonic() - launched:.1f} s after launch; {cpu:.1f} CPU-s, RSS {rss:.0f} MB")

            producer = Producer({"bootstrap.servers": a.bootstrap, "enable.idempotence": True})
            for i in range(2_000):
                producer.produce("k2.probe.v1", key=f"key-{i % 7}".encode(), value=f"value-{i}".encode(),
                                 headers=[("trace", f"t{i}".encode()), ("bytes", b"\x00\x01\xff")])
            producer.flush()
            time.sleep(3)
            source, copy = records(a.bootstrap, "k2.probe.v1"), records(b.bootstrap, "A.k2.probe.v1")
            print(f"fidelity: {sum(map(len, source.values())):,} records with keys and headers on {len(source)} "
                  f"partitions; B's copy identical (offset, key, value, headers, timestamp): {source == copy}")

            lag_a, lag_b = watch(a.bootstrap, b.bootstrap, "k2.trades.v1")
            cpu0, _ = usage(maker.process.pid)
            took = load(region_a, args.burst, root)
            time.sleep(3)
            cpu1, _ = usage(maker.process.pid)
            print(f"`k2 load` of {args.burst:,} trades ({took:.1f} s): readable on A {lag_a.stop()}; "
                  f"on B {lag_b.stop()}; MirrorMaker {cpu1 - cpu0:.2f} CPU-s")

            lag_a, lag_b = watch(a.bootstrap, b.bootstrap, "k2.probe.v1")
            cpu0, _ = usage(maker.process.pid)
            began = time.monotonic()
            for i in range(args.rate * 5):
                producer.produce("k2.probe.v1", key=f"k{i % 13}".encode(), value=b"x" * 100)
                producer.poll(0)
                time.sleep(max(0.0, began + (i + 1) / args.rate - time.monotonic()))
            producer.flush()
            time.sleep(3)
            cpu1, _ = usage(maker.process.pid)
            print(f"steady {args.rate:,} records/s for 5 s: readable on A {lag_a.stop()}; on B {lag_b.stop()}; "
                  f"MirrorMaker {(cpu1 - cpu0) / (time.monotonic() - began):.0%} of a core")

            cpu0, _ = usage(maker.process.pid)
            took = load(region_a, args.bulk, root)
            loaded = time.monotonic()
            target = ends(a.bootstrap, "k2.trades.v1")
            while ends(b.bootstrap, "A.k2.trades.v1") != target:
                time.sleep(0.05)
            cpu1, rss = usage(maker.process.pid)
            caught_up = time.monotonic() - loaded
            print(f"bulk `k2 load` of {args.bulk:,} trades ({took:.1f} s): B complete {caught_up:.1f} s after the load "
                  f"ended; MirrorMaker {cpu1 - cpu0:.1f} CPU-s, RSS {rss:.0f} MB")
            cpu0, _ = usage(maker.process.pid)
            time.sleep(10)
            cpu1, rss = usage(maker.process.pid)
            print(f"idle: MirrorMaker {(cpu1 - cpu0) / 10:.1%} of a core, RSS {rss:.0f} MB")
        finally:
            maker.stop()


if __name__ == "__main__":
    main()
