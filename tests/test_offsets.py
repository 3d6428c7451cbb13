"""Exactly once, proven where de-duplication cannot hide it: the consumer resumes at the offsets recorded in the
lake, whatever the Kafka group says; a rollback resumes from the rolled-back-to state; concurrent commits merge
offsets forward. Each test counts the records read and asserts that no duplicate was dropped, because the
sequence de-duplicator would otherwise make a consumer that re-read the topic from 0 look correct."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time

import pyarrow as pa
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from k2.errors import SnapshotNotFoundError
from k2.ingest import pipeline
from k2.kafka.config import ingest_group
from k2.kafka.groups import committed as group_committed
from k2.kafka.producer import with_ingest_ts
from k2.lake import writer
from k2.lake.catalog import ensure_table, open_catalog
from k2.lake.offsets import OFFSETS_PROPERTY, LandedOffsets, landed_offsets
from k2.lake.snapshots import ancestry, property_of, rollback
from k2.query.engine import QueryEngine
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_trades

DAY = dt.date(2026, 6, 1)
SYMBOLS = [f"E{i:02d}" for i in range(8)]


def _small_batches(settings: Settings) -> Settings:
    return settings.model_copy(update={"ingest_commit_rows": 1_000, "consume_batch": 500})


def _partition_ends(settings: Settings) -> dict[int, int]:
    """Records per partition, read to the end (high watermarks are not trusted: Tansu's lag behind the log)."""
    topic = settings.topic_trades
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "k2-test-ends",
                         "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    ends = {p: 0 for p in partitions}
    idle = time.monotonic()
    while time.monotonic() - idle < 1.5:
        for message in consumer.consume(10_000, timeout=0.2):
            if message.error() is None:
                ends[message.partition() or 0] = (message.offset() or 0) + 1
                idle = time.monotonic()
    consumer.close()
    return ends


def _group(settings: Settings) -> Consumer:
    return Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": ingest_group(settings, Dataset.TRADES),
                     "enable.auto.commit": False})


def _set_group_offsets(settings: Settings, offsets: dict[int, int]) -> None:
    consumer = _group(settings)
    consumer.commit(offsets=[TopicPartition(settings.topic_trades, p, o) for p, o in offsets.items()],
                    asynchronous=False)
    consumer.close()


def _group_offsets(settings: Settings, partitions: list[int]) -> dict[int, int]:
    consumer = _group(settings)
    committed = group_committed(consumer, [TopicPartition(settings.topic_trades, p) for p in partitions])
    consumer.close()
    return {tp.partition: tp.offset for tp in committed}


def _lake_offsets(settings: Settings) -> dict[int, int]:
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    landed = landed_offsets(table.metadata, settings.topic_trades)
    return dict(landed.next_offsets) if landed else {}


def _assert_every_trade_once(settings: Settings, total: int) -> None:
    engine = QueryEngine(settings)
    rows = engine.trades(limit=None)
    assert rows.num_rows == total
    assert len(set(zip(rows["symbol"].to_pylist(), rows["sequence"].to_pylist(), strict=True))) == total
    quality = engine.quality().to_pylist()
    assert sum(q["received"] for q in quality) == sum(q["landed"] for q in quality) == total
    assert sum(q["duplicates"] for q in quality) == 0


@pytest.mark.parametrize("group_position", ["ahead", "behind"])
def test_the_consumer_resumes_at_the_lake_offsets_not_the_group_offsets(
    kafka_settings: Settings, group_position: str
) -> None:
    settings = _small_batches(kafka_settings)
    bootstrap = settings.kafka_bootstrap or ""
    total = 12_000
    pipeline.produce_table(settings, bootstrap, generate_trades(DAY, SYMBOLS, total, seed=3))
    first = pipeline.ingest(settings, bootstrap, max_messages=5_000)
    lake = _lake_offsets(settings)
    assert first.rows_landed == sum(lake.values()) and 0 < first.rows_landed < total
    ends = _partition_ends(settings)
    assert sum(ends.values()) == total
    # move the group away from the lake: all the way to the end (a consumer trusting it would read nothing and
    # lose the rest), or back to 0 (it would re-read what landed, and only the de-duplicator would hide that)
    moved = ends if group_position == "ahead" else {p: 0 for p in ends}
    _set_group_offsets(settings, moved)
    assert _group_offsets(settings, list(ends)) == moved

    second = pipeline.ingest(settings, bootstrap)
    expected_start = {p: lake.get(p, OFFSET_BEGINNING) for p in ends}
    assert second.start_offsets == expected_start
    assert second.messages == total - sum(lake.values())  # not one record read twice, none skipped
    assert second.duplicates == 0 and second.rows_landed == second.messages
    _assert_every_trade_once(settings, total)
    assert _group_offsets(settings, list(ends)) == ends  # and the group mirrors the lake again


def test_rollback_resumes_from_the_rolled_back_to_snapshot_and_lands_again(kafka_settings: Settings) -> None:
    settings = _small_batches(kafka_settings)
    bootstrap = settings.kafka_bootstrap or ""
    total = 6_000
    pipeline.produce_table(settings, bootstrap, generate_trades(DAY, SYMBOLS, total, seed=9))
    assert pipeline.ingest(settings, bootstrap).rows_landed == total
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    history = list(ancestry(table.metadata))
    assert len(history) >= 4
    target = history[-2]  # the second commit
    target_offsets = LandedOffsets.from_json(property_of(target, OFFSETS_PROPERTY) or "")
    rows_then = table.scan(snapshot_id=target.snapshot_id).to_arrow().num_rows

    k2 = [sys.executable, "-m", "k2.cli"]
    env = {**os.environ, "K2_HOME": str(settings.home)}
    unknown = subprocess.run([*k2, "rollback", "--to", "12345"], env=env, capture_output=True, text=True)
    assert unknown.returncode == 1 and "has no snapshot 12345" in unknown.stderr
    assert str(history[0].snapshot_id) in unknown.stderr and "Traceback" not in unknown.stderr
    rolled = subprocess.run([*k2, "rollback", "--to", str(target.snapshot_id)], env=env, capture_output=True,
                            text=True)
    assert rolled.returncode == 0, rolled.stderr
    table.refresh()
    assert table.current_snapshot().snapshot_id == target.snapshot_id  # type: ignore[union-attr]
    # the newest snapshot still has the newest offsets, but it is no longer in the table's history
    assert landed_offsets(table.metadata, settings.topic_trades) == target_offsets
    assert QueryEngine(settings).count(Dataset.TRADES) == rows_then

    again = pipeline.ingest(settings, bootstrap)
    assert again.start_offsets == {p: target_offsets.next_offsets.get(p, OFFSET_BEGINNING)
                                   for p in again.start_offsets}
    assert again.messages == total - sum(target_offsets.next_offsets.values())
    assert again.duplicates == 0 and again.rows_landed == total - rows_then
    _assert_every_trade_once(settings, total)  # the rolled-back batches' quality counts no longer count
    with pytest.raises(SnapshotNotFoundError, match="not an ancestor"):
        rollback(table, history[0].snapshot_id)  # undone snapshots cannot come back as if current


def _trades(rows: int, seed: int) -> pa.Table:
    return with_ingest_ts(generate_trades(DAY, SYMBOLS, rows, seed=seed))


def test_a_lost_commit_race_merges_offsets_to_the_maximum_and_loses_nothing(settings: Settings) -> None:
    """Two writers on one table and a third party committing between them: the stale writer's first commit
    really fails (CommitFailedException), and its retry keeps the winner's offsets, maximum per partition."""
    catalog = open_catalog(settings)
    writer_a = ensure_table(catalog, settings, Dataset.TRADES)
    part_a, part_b, part_c = (_trades(2_000, seed) for seed in (1, 2, 3))
    part_b = part_b.set_column(part_b.column_names.index("symbol"), "symbol",
                               pa.array(["B" + s for s in part_b["symbol"].to_pylist()]))
    part_c = part_c.set_column(part_c.column_names.index("symbol"), "symbol",
                               pa.array(["C" + s for s in part_c["symbol"].to_pylist()]))
    files_a = writer.write_data_files(writer_a, part_a)  # A prepared its files on what is now stale metadata

    writer_b = catalog.load_table(writer_a.name())
    b = writer.commit_files(writer_b, writer.write_data_files(writer_b, part_b),
                            LandedOffsets("c1", "t", {0: 100, 1: 50, 3: 7}))
    third = catalog.load_table(writer_a.name())
    writer.append(third, part_c)  # e.g. compaction or a backfill: records no offsets
    a = writer.commit_files(writer_a, files_a, LandedOffsets("c1", "t", {1: 80, 2: 30, 3: 5}))

    assert b.attempts == 1 and a.attempts == 2  # A lost the race once, then committed on the fresh table
    writer_a.refresh()
    assert landed_offsets(writer_a.metadata, "t") == LandedOffsets("c1", "t", {0: 100, 1: 80, 2: 30, 3: 7})
    assert writer_a.scan().to_arrow().num_rows == 6_000
    later = writer.commit_files(writer_a, [], LandedOffsets("c1", "t", {0: 90}))  # offsets only move forward
    assert later.attempts == 1
    assert landed_offsets(writer_a.metadata, "t").next_offsets[0] == 100  # type: ignore[union-attr]


def test_offsets_are_found_through_snapshots_that_record_none(settings: Settings) -> None:
    """Newest first along the ancestry: past snapshots without offsets (compaction, other writers), never a
    snapshot of another topic's offsets (bench/offsets.py measures the cost as snapshots pile up)."""
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    for i in range(50):
        writer.commit_files(table, [], LandedOffsets("c1", "t", {0: i + 1}))
    writer.commit_files(table, [], LandedOffsets("c1", "other-topic", {0: 999}))
    writer.append(table, _trades(100, 1))  # no offsets at all
    assert landed_offsets(table.metadata, "t") == LandedOffsets("c1", "t", {0: 50})
    assert landed_offsets(table.metadata, "other-topic") == LandedOffsets("c1", "other-topic", {0: 999})
    assert landed_offsets(table.metadata, "never") is None
