"""`k2 ingest` exits hard (os._exit, as a power cut would) at each named step of landing a batch, then runs again.
Each test checks the mechanism at the crash (what the lake, the quality table and the Kafka group hold at that
moment) and after the restart: it resumes exactly at the lake's offsets, re-reads only what had not landed, and
ends with every trade once and exact quality counts. Runs on both local brokers."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from k2 import faults
from k2.ingest import pipeline
from k2.kafka.config import ingest_group
from k2.kafka.groups import committed as group_committed
from k2.lake.catalog import ensure_table, open_catalog
from k2.lake.offsets import landed_offsets
from k2.query.engine import QueryEngine
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_trades
from tests.test_exactly_once import _env
from tests.test_offsets import _assert_every_trade_once

TRADES = 20_000
COMMIT_ROWS = 4_000
CONSUME_BATCH = 1_000
# records read but not yet landed when a crash comes: the batch being committed, the one prepared behind it (the
# two stages overlap, decision 0008), and the one being read
IN_FLIGHT = 2 * (COMMIT_ROWS + CONSUME_BATCH) + COMMIT_ROWS


def _ingest(settings: Settings, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**_env(settings), "K2_INGEST_COMMIT_ROWS": str(COMMIT_ROWS), "K2_CONSUME_BATCH": str(CONSUME_BATCH)}
    if crash_at:
        env["K2_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-m", "k2.cli", "ingest", "--dataset", "trades", "--idle-seconds", "3"],
                          env=env, capture_output=True, text=True, timeout=300)


def _lake(settings: Settings) -> tuple[int, int]:
    """(rows in the table, sum of the landed offsets)."""
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    landed = landed_offsets(table.metadata, settings.topic_trades)
    rows = table.scan().to_arrow().num_rows if table.current_snapshot() else 0
    return rows, sum(landed.next_offsets.values()) if landed else 0


def _quality_received(settings: Settings) -> int:
    return sum(q["received"] for q in QueryEngine(settings).quality().to_pylist())


def _group_offsets(settings: Settings) -> int:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap,
                         "group.id": ingest_group(settings, Dataset.TRADES), "enable.auto.commit": False})
    committed = group_committed(consumer, [TopicPartition(settings.topic_trades, p) for p in range(4)])
    consumer.close()
    return sum(max(tp.offset, 0) for tp in committed)


def _orphan_files(settings: Settings) -> set[str]:
    """Data files in the warehouse that no snapshot of the table references."""
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    referenced = {task.file.file_path.removeprefix("file://") for task in table.scan().plan_files()}
    data_dir = Path(table.location().removeprefix("file://")) / "data"
    return {str(p) for p in data_dir.rglob("*.parquet")} - referenced


@pytest.mark.slow
@pytest.mark.parametrize("point", faults.POINTS)
def test_a_crash_at_each_step_of_a_commit_loses_and_repeats_nothing(kafka_settings: Settings, point: str) -> None:
    bootstrap = kafka_settings.kafka_bootstrap or ""
    pipeline.produce_table(kafka_settings, bootstrap, generate_trades(dt.date(2026, 7, 1), [
        f"C{i:02d}" for i in range(8)], TRADES, seed=21))
    at_commit = point not in (faults.STARTUP, faults.GROUP_JOIN)
    crashed = _ingest(kafka_settings, f"{point}@2" if at_commit else point)
    assert crashed.returncode == faults.CRASH_EXIT_CODE, crashed.stderr
    match = re.search(rf"crash point {point}@\d reached; (\d+) records read", crashed.stderr)
    assert match, crashed.stderr
    read_before = int(match.group(1))
    rows, offsets = _lake(kafka_settings)
    assert rows == offsets  # the rows in the lake are exactly the records its offsets cover

    # what the crash left, step by step
    if not at_commit:
        assert rows == 0 and read_before == 0
    elif point == faults.BEFORE_ICEBERG_COMMIT:  # batch 2's files were written, never committed
        assert COMMIT_ROWS <= rows < 2 * COMMIT_ROWS and _orphan_files(kafka_settings)
    elif point == faults.AFTER_ICEBERG_COMMIT:  # batch 2 landed, its quality rows did not
        assert rows >= 2 * COMMIT_ROWS and _quality_received(kafka_settings) < rows
    else:  # AFTER_QUALITY: quality complete, but the group offsets trail the lake
        assert rows >= 2 * COMMIT_ROWS and _quality_received(kafka_settings) == rows
        assert _group_offsets(kafka_settings) < offsets
    assert read_before - rows <= IN_FLIGHT  # what was read but not landed is re-read: at most what was in flight

    restarted = _ingest(kafka_settings)
    assert restarted.returncode == 0, restarted.stderr
    summary = re.search(r"trades: read ([\d,]+) records, landed ([\d,]+) rows", restarted.stdout)
    assert summary, restarted.stdout
    read_after, landed_after = (int(g.replace(",", "")) for g in summary.groups())
    assert read_after == TRADES - offsets  # resumed exactly at the lake's offsets: nothing landed was re-read
    assert landed_after == read_after
    assert "duplicates dropped" not in restarted.stdout
    if point == faults.AFTER_ICEBERG_COMMIT:
        assert "quality of 1 batch(es) recovered after a crash" in restarted.stdout

    print(f"{point}: read {read_before:,} before the crash, {rows:,} landed, {read_before - rows:,} re-read; "
          f"the restart read {read_after:,}")
    _assert_every_trade_once(kafka_settings, TRADES)
    assert sum(q["late"] for q in QueryEngine(kafka_settings).quality().to_pylist()) == 0
    assert _group_offsets(kafka_settings) == TRADES


def test_crash_points_are_checked_when_settings_load() -> None:
    with pytest.raises(ValueError, match="unknown crash point 'after-lunch'"):
        Settings(crash_at="after-lunch")
    assert Settings(crash_at="after-quality@3").crash_at == "after-quality@3"
    assert os.environ.get("K2_CRASH_AT") is None  # never set outside the processes these tests start
