"""Multi-region drill (issue 20): two regions on loopback, each a real Apache Kafka broker and a K2 home (catalog +
warehouse) of its own. Region B follows region A through MirrorMaker 2 (`A.k2.trades.v1` on B); both directions run
in one dedicated MirrorMaker, B's local topics going to A as `B.<topic>`.

A live feed (one `k2 load` per file, as files arrive) goes to A; A lands its topic into lake A, B lands its mirror
into lake B. Broker A is SIGKILLed in the middle of a load. Then:
- B's lake holds exactly the ticks of B's mirror, which is a per-partition prefix of A's log (checked byte for byte
  once A is back), and the checkpoints B holds say where A's ingest group stood, in B's offsets;
- the feed fails over to B (the load that failed and the rest go to B's own `k2.trades.v1`), and B lands it;
- A comes back: MirrorMaker copies A's unreplicated tail to B and B's new records to A, each lake lands the other
  region's topic, and both lakes converge on every tick exactly once.

The lake may take one topic at a time (two `k2 ingest` processes on one table would each trust their own cached
sequence state and could land a tick twice), so each lake's ingest moves from one topic to the next when it has
caught up. `K2_DRILL_BREAK=no-b-to-a` runs MirrorMaker without the B->A flow: the convergence assertion must fail.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from k2.codec.records import decode_records
from k2.kafka import mirror
from k2.kafka.admin import ensure_topics
from k2.kafka.broker import BrokerState, free_port, start_broker, stop_process
from k2.kafka.config import ingest_group
from k2.lake.catalog import load_table, open_catalog
from k2.lake.offsets import landed_offsets
from k2.query.engine import QueryEngine
from k2.registry import registry_for
from k2.registry.base import subject_for
from k2.schemas import Dataset, avro_schema
from k2.settings import Settings
from k2.sources.generator import generate_trades, write_generic_csv
from tests.chaos.workload import assert_every_tick_once
from tests.services import brokers_under_test, settings_env

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif("kafka" not in brokers_under_test(), reason="MirrorMaker 2 runs between real Kafka")]

DAY = dt.date(2026, 3, 2)
SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF", "GGG", "HHH"]  # keys on all 4 partitions
CHUNKS, CHUNK_ROWS, KILL_AFTER = 24, 1_000, 10  # the feed: 24 files of 1,000 trades; A dies after the 10th
DOWN_SECONDS = 12.0
TOPIC = "k2.trades.v1"
BREAK = os.environ.get("K2_DRILL_BREAK", "")  # "no-b-to-a": MirrorMaker without its B->A flow
FIGURES = Path(__file__).resolve().parents[2] / "test-artifacts" / "multiregion.tsv"

Records = dict[int, list[tuple[bytes | None, bytes | None, object, int]]]
Ticks = set[tuple[str, int, object]]


# ------------------------------------------------------------------------------------------------ the regions


@dataclass
class Region:
    name: str
    root: Path
    kafka_dist: Path
    port: int = field(default_factory=free_port)
    state: BrokerState | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        began = time.monotonic()
        self.state, self.process = start_broker("kafka", self.root / "broker", self.port, die_with_parent=True,
                                                settings=Settings(kafka_dist=self.kafka_dist))
        return time.monotonic() - began

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)  # the whole broker, at once
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.state is not None and self.process is not None and self.process.poll() is None:
            stop_process(self.state, self.process)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def settings(self, topic: str = TOPIC) -> Settings:
        """This region's K2 consuming `topic` into its lake. Each region's ingest has a group of its own: MirrorMaker
        keeps the other region's group under its own name here (translated offsets), which must stay readable.
        A long connect timeout: region A's ingest waits for its broker through the outage, as a service would."""
        return Settings(home=self.root / "home", kafka_bootstrap=self.bootstrap, broker="kafka",
                        kafka_dist=self.kafka_dist, topic_trades=topic, consumer_group=f"k2-ingest-{self.name.lower()}",
                        kafka_connect_timeout_seconds=600, ingest_commit_rows=2_000, consume_batch=500)

    def load_settings(self) -> Settings:
        """The feed's producer: a dead region fails a load within seconds, and the feed moves on."""
        return self.settings().model_copy(update={"kafka_connect_timeout_seconds": 5.0,
                                                  "producer_message_timeout_ms": 5_000})


class Ingest:
    """`k2 ingest --follow` of one region's lake from one topic, under a supervisor as deploy/ runs it (compose
    `restart: unless-stopped`): a run that fails is started again a second later. Stopped with Ctrl-C (SIGINT: it
    lands what it has read, then exits 130). Output to files under `logs`, one pair per run."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings, self.topic = settings, settings.topic_trades
        self.logs = logs / f"{settings.home.parent.name}-{self.topic}-{time.monotonic_ns()}"
        self.logs.mkdir(parents=True)
        self.failures: list[str] = []  # the last line of each failed run: what an operator reads
        self._stopping = threading.Event()
        self._run()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()

    def _run(self) -> None:
        runs = len(self.failures)
        self.err = self.logs / f"{runs}.err"
        with open(self.logs / f"{runs}.out", "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "k2.cli", "ingest", "--dataset", "trades", "--follow"],
                env=settings_env(self.settings), stdout=out, stderr=err, text=True)

    def _supervise(self) -> None:
        while True:
            self.process.wait()
            if self._stopping.is_set():
                return
            errors = self.err.read_text(errors="replace").strip()
            self.failures.append(errors.splitlines()[-1] if errors else f"exit {self.process.returncode}")
            time.sleep(1.0)
            if self._stopping.is_set():
                return
            self._run()

    def alive(self) -> None:
        if len(self.failures) >= 5:
            raise AssertionError(f"ingest of {self.topic} keeps failing: {self.failures}")

    def stop(self) -> None:
        self._stopping.set()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=120)
        self._supervisor.join(timeout=10)
        errors = "".join(path.read_text(errors="replace") for path in sorted(self.logs.glob("*.err")))
        assert self.process.returncode in (0, 130), errors[-3000:]
        assert "Traceback" not in errors and "bug in K2" not in errors, errors[-3000:]

    def kill(self) -> None:
        self._stopping.set()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# ------------------------------------------------------------------------------------------ Kafka and the lake


def _retrying(call: Callable[[], object], timeout: float = 30.0) -> object:
    """A topic just created (by K2 or MirrorMaker) answers NOT_LEADER for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int] | None:
    """Partition → log end offset; None while the topic does not exist."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "k2-drill-ends"})
    try:
        found = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if found is None or found.error is not None:
            return None
        ends = {}
        for partition in found.partitions:
            watermarks = _retrying(lambda p=partition: consumer.get_watermark_offsets(TopicPartition(topic, p), 10))
            ends[partition] = int(watermarks[1])  # type: ignore[index]
        return ends
    finally:
        consumer.close()


def settled(bootstrap: str, topic: str, quiet: float = 3.0) -> dict[int, int]:
    """The end offsets once they have not moved for `quiet` seconds."""
    last, since = end_offsets(bootstrap, topic), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.25)
        now = end_offsets(bootstrap, topic)
        if now != last:
            last, since = now, time.monotonic()
    assert last is not None, topic
    return last


def read_records(bootstrap: str, topic: str, upto: dict[int, int]) -> Records:
    """Every record below `upto` per partition: key, value, headers and timestamp, in offset order. The timestamp's
    value only: MirrorMaker copies it, but not the topic's `message.timestamp.type` (its default exclusions), so a
    mirror of a LogAppendTime topic holds the source's append times as CreateTime."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "k2-drill-reader", "enable.auto.commit": False})
    records: Records = {p: [] for p in upto}
    try:
        for partition, end in upto.items():
            if end == 0:
                continue
            consumer.assign([TopicPartition(topic, partition, 0)])
            deadline = time.monotonic() + 60
            while len(records[partition]) < end:
                assert time.monotonic() < deadline, f"{topic}[{partition}]: {len(records[partition])} of {end} read"
                message = consumer.poll(0.5)
                if message is None or message.error() is not None:
                    continue
                assert message.offset() == len(records[partition])  # no gap, no control record
                records[partition].append((message.key(), message.value(), message.headers(), message.timestamp()[1]))
    finally:
        consumer.close()
    return records


def ticks_of(settings: Settings, records: Records) -> Ticks:
    values = [value for partition in records.values() for _, value, _, _ in partition if value is not None]
    decoded = decode_records(values, registry_for(settings).schema, Dataset.TRADES)
    assert not decoded.failures and decoded.table is not None
    return _ticks(decoded.table)


def _ticks(table: pa.Table) -> Ticks:
    return set(zip(table["symbol"].to_pylist(), table["sequence"].to_pylist(), table["ts"].to_pylist(), strict=True))


def lake_ticks(settings: Settings) -> tuple[int, Ticks]:
    rows = QueryEngine(settings).trades(limit=None)
    return rows.num_rows, _ticks(rows)


def lake_offsets(settings: Settings, topic: str) -> dict[int, int]:
    table = load_table(open_catalog(settings, writable=False), settings, Dataset.TRADES)
    landed = landed_offsets(table.metadata, topic) if table is not None else None
    return dict(landed.next_offsets) if landed is not None else {}


def caught_up(settings: Settings, ends: dict[int, int] | None) -> bool:
    """The lake has landed `settings.topic_trades` up to `ends` (partitions that hold records)."""
    if ends is None:
        return False
    landed = lake_offsets(settings, settings.topic_trades)
    return all(landed.get(p, 0) >= end for p, end in ends.items() if end > 0)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, *alive: Ingest) -> float:
    began = time.monotonic()
    while not condition():
        for ingest in alive:
            ingest.alive()
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2 if alive else 0.001)
    return time.monotonic() - began


# ---------------------------------------------------------------------------------------- the feed and the lag


def _answers(bootstrap: str) -> bool:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "k2-drill-health"})
    try:
        return bool(consumer.list_topics(timeout=2).brokers)
    except KafkaException:
        return False
    finally:
        consumer.close()


class Feed(threading.Thread):
    """Files loaded one after another with `k2 load` into the active region. A load that fails is loaded again: in
    the next region if the active one does not answer any more (re-loading is idempotent: the lakes drop what they
    hold), else in the same one."""

    def __init__(self, files: list[Path], regions: list[Region]) -> None:
        super().__init__(daemon=True)
        self.files, self.regions = files, regions
        self.loaded: list[tuple[int, str, float]] = []  # (file index, region, acknowledged at)
        self.failures: list[str] = []
        self.error: BaseException | None = None
        self.acked = threading.Condition()
        self.current: subprocess.Popen[str] | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            active = 0
            for index, path in enumerate(self.files):
                while not self.stop.is_set():  # a killed feed loads nothing more
                    region = self.regions[active]
                    self.current = subprocess.Popen(
                        [sys.executable, "-m", "k2.cli", "load", str(path)], stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, text=True, env=settings_env(region.load_settings()))
                    _, err = self.current.communicate(timeout=300)
                    if self.current.returncode == 0:
                        with self.acked:
                            self.loaded.append((index, region.name, time.monotonic()))
                            self.acked.notify_all()
                        break
                    self.failures.append(f"file {index} on {region.name}: {err.strip().splitlines()[-1:]}")
                    if not _answers(region.bootstrap):  # fail over only from a region that is down, not slow
                        active += 1
                    assert active < len(self.regions) and len(self.failures) < 10, self.failures
        except BaseException as exc:
            self.error = exc
            with self.acked:
                self.acked.notify_all()

    def kill(self) -> None:
        self.stop.set()
        if self.current is not None and self.current.poll() is None:
            self.current.kill()
        self.join(timeout=30)

    def wait(self, condition: Callable[[], bool], timeout: float) -> None:
        with self.acked:
            assert self.acked.wait_for(lambda: condition() or self.error is not None, timeout), self.loaded
        assert self.error is None, self.error

    def wait_loaded(self, count: int, timeout: float) -> None:
        self.wait(lambda: len(self.loaded) >= count, timeout)

    def first_on(self, region: str) -> tuple[int, float] | None:
        return next(((i, at) for i, name, at in self.loaded if name == region), None)


class LagWatcher(threading.Thread):
    """Seconds from a record's timestamp (the producer's, or region A's append time on a LogAppendTime topic: the
    mirror keeps A's) to its arrival at a consumer of `topic`."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.lags = bootstrap, topic, list[float]()
        self.stop = threading.Event()

    def run(self) -> None:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"k2-drill-lag-{self.topic}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe([self.topic])
        while not self.stop.is_set():
            for message in consumer.consume(1000, 0.005):
                if message.error() is None:
                    self.lags.append(time.time() - message.timestamp()[1] / 1000)
        consumer.close()

    def percentiles(self) -> str:
        lags = sorted(self.lags)
        if not lags:
            return "no records"
        at = lambda q: lags[min(len(lags) - 1, int(q * len(lags)))] * 1000  # noqa: E731
        return f"p50 {at(0.5):.0f} ms, p99 {at(0.99):.0f} ms, max {lags[-1] * 1000:.0f} ms over {len(lags):,} records"


def usage(pid: int) -> tuple[float, float]:
    """CPU seconds and RSS (MB) of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if line.startswith("VmRSS"))
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), rss_kb / 1024


def figure(name: str, value: str) -> None:
    FIGURES.parent.mkdir(exist_ok=True)
    with open(FIGURES, "a") as out:
        out.write(f"{dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%S}\t{name}\t{value}\n")
    print(f"MULTIREGION {name}: {value}")


# -------------------------------------------------------------------------------------------------- the drill


def test_region_b_follows_a_fails_over_and_the_regions_converge(
        mirror_jars: tuple[Path, Path], tmp_path: Path) -> None:
    kafka_dist, mirror_dist = mirror_jars
    a, b = Region("A", tmp_path / "a", kafka_dist), Region("B", tmp_path / "b", kafka_dist)
    trades = generate_trades(DAY, SYMBOLS, CHUNKS * CHUNK_ROWS, seed=20)
    files = []
    for index in range(CHUNKS):  # consecutive slices of a time-ordered day: each symbol's sequence rises file by file
        files.append(tmp_path / f"trades-{index:02d}.csv")
        write_generic_csv(trades.slice(index * CHUNK_ROWS, CHUNK_ROWS), str(files[-1]))
    ingests: list[Ingest] = []
    retired: list[Ingest] = []  # stopped, their runs kept for the record
    watchers: list[LagWatcher] = []
    maker: mirror.MirrorMaker | None = None
    feed: Feed | None = None
    try:
        print(f"brokers: A {a.start():.1f} s, B {b.start():.1f} s to start")
        # one schema id space for both regions: A's registry, copied (production: one registry for both)
        ensure_topics(a.settings(), a.bootstrap)
        registry_for(a.settings()).register(subject_for(TOPIC), avro_schema(Dataset.TRADES))
        shutil.copytree(a.settings().registry_dir, b.settings().registry_dir)

        flows = [("A", "B")] if BREAK == "no-b-to-a" else [("A", "B"), ("B", "A")]
        config = tmp_path / "mm2.properties"
        config.write_text(mirror.render({"A": a.bootstrap, "B": b.bootstrap}, flows))
        launched = time.monotonic()
        maker = mirror.start(mirror_dist, config, tmp_path / "mm2" / "mirrormaker.log", die_with_parent=True)
        maker.wait_started()
        wait_for(lambda: end_offsets(b.bootstrap, f"A.{TOPIC}") is not None, 120, "MirrorMaker creates A.k2.trades.v1")
        cpu, rss = usage(maker.process.pid)
        figure("mirrormaker start", f"{time.monotonic() - launched:.1f} s to the first mirrored topic; "
                                    f"{cpu:.1f} CPU-s, RSS {rss:.0f} MB")

        a_own, b_mirror = a.settings(), b.settings(f"A.{TOPIC}")
        ingests += [Ingest(a_own, tmp_path / "logs"), Ingest(b_mirror, tmp_path / "logs")]
        watchers += [LagWatcher(a.bootstrap, TOPIC), LagWatcher(b.bootstrap, f"A.{TOPIC}")]
        for watcher in watchers:
            watcher.start()
        time.sleep(3)  # the watchers have joined their groups before the first record
        feed = Feed(files, [a, b])
        feed.start()

        # ------------------------------------------------------------------ region A dies in the middle of a load
        feed.wait_loaded(KILL_AFTER, 300)
        wait_for(lambda: len(watchers[0].lags) > KILL_AFTER * CHUNK_ROWS, 60, "the next load reaches A")
        a.kill()
        killed = time.monotonic()
        for watcher in watchers:
            watcher.stop.set()
        figure("replication lag", f"record timestamp -> readable on A: {watchers[0].percentiles()}; "
                                  f"-> readable on B (mirror): {watchers[1].percentiles()}")
        cpu, rss = usage(maker.process.pid)
        figure("mirrormaker load", f"{cpu:.1f} CPU-s since start (phase 1: {KILL_AFTER * CHUNK_ROWS:,} trades), "
                                   f"RSS {rss:.0f} MB")

        # B's lake holds exactly the ticks B's mirror holds: A's log up to the last replicated offset
        mirrored = settled(b.bootstrap, f"A.{TOPIC}")  # MirrorMaker may still write what it had fetched
        wait_for(lambda: caught_up(b_mirror, mirrored), 120, "lake B lands its mirror", *ingests[1:])
        drained = time.monotonic() - killed  # includes the 3 s that tell the mirror has stopped growing
        assert end_offsets(b.bootstrap, f"A.{TOPIC}") == mirrored  # nothing arrives from a dead region
        mirror_records = read_records(b.bootstrap, f"A.{TOPIC}", mirrored)
        mirror_ticks = ticks_of(b_mirror, mirror_records)
        rows, landed = lake_ticks(b_mirror)
        assert rows == len(landed) == len(mirror_ticks) == sum(mirrored.values())
        assert landed == mirror_ticks
        assert lake_offsets(b_mirror, f"A.{TOPIC}") == mirrored

        # the checkpoints B holds: where A's ingest group stood, in B's offsets
        group = ingest_group(a_own, Dataset.TRADES)
        checkpoints = mirror.read_checkpoints(b.bootstrap, "A", group)
        translated = {c.partition: c.downstream_offset for c in checkpoints.values() if c.topic == f"A.{TOPIC}"}
        lake_a = lake_offsets(a_own, TOPIC)
        assert translated, f"no checkpoint for {group} on B"
        for partition, offset in translated.items():
            assert offset <= mirrored[partition] and offset <= lake_a.get(partition, 0), (partition, offset)
        # a consumer that followed A's group resumes on B at the translated offsets and misses nothing: every tick
        # below them is in lake A already; what it reads again is the distance to the last offset sync
        below = {p: mirror_records[p][:translated.get(p, 0)] for p in mirror_records}
        assert ticks_of(b_mirror, below) <= lake_ticks(a_own)[1]
        synced = _committed(b.bootstrap, group, f"A.{TOPIC}", list(mirrored))
        upstream = {c.partition: c.upstream_offset for c in checkpoints.values() if c.topic == f"A.{TOPIC}"}
        figure("checkpoints", f"lake A had landed up to {_sorted(lake_a)}; its group, as last checkpointed, stood at "
                              f"{_sorted(upstream)} on A = {_sorted(translated)} on B (synced to the group on B: "
                              f"{_sorted(synced)}); a consumer resuming there reads "
                              f"{sum(lake_a.values()) - sum(translated.values())} records lake A holds again")

        # ------------------------------------------------------------------ fail over: B takes the feed and lands it
        ingests[1].stop()
        retired.append(ingests[1])
        b_own = b.settings()
        ingests[1] = Ingest(b_own, tmp_path / "logs")
        feed.wait(lambda: feed.first_on("B") is not None, 120)
        first_on_b = feed.first_on("B")
        assert first_on_b is not None and feed.failures, (feed.loaded, feed.failures)
        b_ends = end_offsets(b.bootstrap, TOPIC)
        wait_for(lambda: caught_up(b_own, b_ends), 120, "lake B lands the first file loaded on B", *ingests[1:])
        figure("failover", f"A killed ({'; '.join(feed.failures)}) -> lake B holds its whole mirror: "
                           f"{drained:.1f} s; -> the feed's first load "
                           f"acknowledged by B: {first_on_b[1] - killed:.1f} s; -> lake B holds it: "
                           f"{time.monotonic() - killed:.1f} s")

        # ------------------------------------------------------------------ A comes back
        time.sleep(max(0.0, killed + DOWN_SECONDS - time.monotonic()))
        restart = a.start()
        back = time.monotonic()
        wait_for(lambda: end_offsets(a.bootstrap, TOPIC) is not None, 60, "A's topic has its leader again")
        a_log = end_offsets(a.bootstrap, TOPIC)
        assert a_log is not None
        # B's mirror, as A died, is a prefix of A's log, partition by partition, byte for byte
        a_records = read_records(a.bootstrap, TOPIC, a_log)
        for partition, records in mirror_records.items():
            assert a_records[partition][:len(records)] == records, _difference(partition, a_records[partition], records)
        figure("rpo of the mirror", f"{sum(a_log.values()) - sum(mirrored.values())} records in A's log were not on "
                                    f"B when A died (of {sum(a_log.values())}); A back after "
                                    f"{back - killed:.1f} s (restart {restart:.1f} s)")

        feed.wait_loaded(CHUNKS, 300)
        fed = time.monotonic()
        converged = _converge(a, b, ingests, retired, tmp_path / "logs")
        restarts = [f"{i.settings.home.parent.name.upper()} {i.topic}: {f}" for i in ingests + retired
                    for f in i.failures]
        figure("convergence", f"A back and the feed done -> both lakes hold every tick once: "
                              f"{converged - max(back, fed):.1f} s; ingest runs restarted by their supervisor: "
                              f"{restarts or 'none'}")
        for ingest in ingests:
            ingest.stop()
        ingests.clear()
        for region in (a, b):
            assert_every_tick_once(region.settings(), [trades])
        # and the logs agree: B's mirror is A's log, A's mirror is B's
        for source, target in ((a, b), (b, a)):
            ends = end_offsets(source.bootstrap, TOPIC)
            assert ends is not None and end_offsets(target.bootstrap, f"{source.name}.{TOPIC}") == ends
            assert read_records(target.bootstrap, f"{source.name}.{TOPIC}", ends) == read_records(
                source.bootstrap, TOPIC, ends)
        cpu, rss = usage(maker.process.pid)
        figure("mirrormaker total", f"{cpu:.1f} CPU-s over {time.monotonic() - launched:.0f} s, RSS {rss:.0f} MB")
    finally:
        for watcher in watchers:
            watcher.stop.set()
        if feed is not None:
            feed.kill()
        for ingest in ingests:
            ingest.kill()
        if maker is not None:
            maker.stop()
        a.stop()
        b.stop()


def _difference(partition: int, log: list[tuple[object, ...]], mirror: list[tuple[object, ...]]) -> str:
    """Where B's mirror stops being A's log: the first record that differs, field by field."""
    at = next((i for i, (x, y) in enumerate(zip(log, mirror, strict=False)) if x != y), min(len(log), len(mirror)))
    fields = [f"{name}: {x!r:.200} != {y!r:.200}" for name, x, y in
              zip(("key", "value", "headers", "timestamp"), *(r[at] if at < len(r) else (None,) * 4
                                                                for r in (log, mirror)), strict=True) if x != y]
    return f"partition {partition}: A's log has {len(log)} records, B's mirror {len(mirror)}; at {at}: {fields}"


def _sorted(offsets: dict[int, int]) -> str:
    return "{" + ", ".join(f"{p}: {o}" for p, o in sorted(offsets.items())) + "}"


def _committed(bootstrap: str, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        found = _retrying(lambda: consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10))
        return {tp.partition: tp.offset for tp in found if tp.offset >= 0}  # type: ignore[attr-defined]
    finally:
        consumer.close()


def _converge(a: Region, b: Region, ingests: list[Ingest], retired: list[Ingest], logs: Path,
              timeout: float = 180) -> float:
    """Each lake lands its own region's topic to the end, then the other region's (its mirror here); returns when
    both hold everything both logs hold. `ingests` = [lake A's, lake B's], replaced as they move on."""
    steps = {  # lake → (its own topic's settings and log, then the other region's topic, mirrored here)
        0: [(a.settings(), a.bootstrap, TOPIC, None), (a.settings(f"B.{TOPIC}"), a.bootstrap, f"B.{TOPIC}", b)],
        1: [(b.settings(), b.bootstrap, TOPIC, None), (b.settings(f"A.{TOPIC}"), b.bootstrap, f"A.{TOPIC}", a)],
    }
    position = {0: 0, 1: 0}
    deadline = time.monotonic() + timeout
    while any(position[lake] < 2 for lake in position):
        for lake, at in position.items():
            if at == 2:
                continue
            settings, bootstrap, topic, origin = steps[lake][at]
            if ingests[lake].topic != topic:
                ingests[lake].stop()
                retired.append(ingests[lake])
                ingests[lake] = Ingest(settings, logs)
            ingests[lake].alive()
            ends = end_offsets(bootstrap, topic)
            # a mirror is complete when it holds all of its origin's log
            complete = origin is None or (ends is not None and ends == end_offsets(origin.bootstrap, TOPIC))
            if complete and caught_up(settings, ends):
                position[lake] += 1
        if time.monotonic() > deadline:
            names = {0: "A", 1: "B"}
            stuck = [f"lake {names[lake]} at {steps[lake][at][2]}" for lake, at in position.items() if at < 2]
            raise AssertionError(f"the regions did not converge within {timeout:.0f} s: {stuck} "
                                 "(is MirrorMaker's flow into that region on?)")
        time.sleep(0.3)
    return time.monotonic()
