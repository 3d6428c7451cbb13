"""`k2 maintain` compaction: answers never change, fewer files, offsets carried, and appends racing it lose nothing."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from prometheus_client import REGISTRY
from pyiceberg.table.snapshots import Snapshot

from k2.ingest import pipeline
from k2.lake import writer
from k2.lake.catalog import ensure_table, open_catalog
from k2.lake.compaction import compact
from k2.lake.metadata import BARS_TABLE, COMPACTION_PROPERTY, bars_snapshot_for
from k2.lake.offsets import LandedOffsets, landed_offsets
from k2.lake.snapshots import property_of
from k2.query.engine import QueryEngine, TimeRange
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_quotes, generate_trades
from tests.test_query_engine import EPOCH, _bars_by_hand

DAYS = [dt.date(2026, 3, 2), dt.date(2026, 3, 3)]
SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE"]


def _stamped(rows: pa.Table) -> pa.Table:
    return rows.append_column("ingest_ts", pa.repeat(pa.scalar(0, pa.timestamp("us", tz="UTC")), rows.num_rows))


def _land(settings: Settings, dataset: Dataset, rows: pa.Table, commits: int, topic: str = "t") -> None:
    table = ensure_table(open_catalog(settings), settings, dataset)
    step = -(-rows.num_rows // commits)
    for number, offset in enumerate(range(0, rows.num_rows, step)):
        writer.append(table, _stamped(rows.slice(offset, step)), LandedOffsets("c", topic, {0: number + 1}))


def _answers(engine: QueryEngine, old_snapshot: int) -> dict[str, object]:
    day = TimeRange(dt.datetime(2026, 3, 3, tzinfo=dt.UTC), dt.datetime(2026, 3, 4, tzinfo=dt.UTC))
    at = dt.datetime(2026, 3, 3, 15, tzinfo=dt.UTC)
    return {
        "ticks": engine.trades(["BBB"], day),
        "all quotes": engine.quotes(),
        "bars": engine.bars(["CCC"], "1m"),
        "day bars": engine.bars(None, "1d"),
        "vwap": engine.vwap(SYMBOLS, day),
        "last": engine.last(Dataset.TRADES, None, at),
        "last quote": engine.last(Dataset.QUOTES, ["AAA", "EEE"], at),
        "asof": engine.asof(["DDD"], day),
        "counts": engine.counts(),
        "time travel": engine.trades(snapshot_id=old_snapshot),
    }


def test_compaction_changes_no_answer_and_leaves_one_sorted_file_per_partition(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    _land(settings, Dataset.TRADES, pa.concat_tables([generate_trades(d, SYMBOLS, 8_000, seed=2) for d in DAYS]), 9)
    _land(settings, Dataset.QUOTES, pa.concat_tables([generate_quotes(d, SYMBOLS, 9_000, seed=3) for d in DAYS]), 6)
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    old_snapshot = table.metadata.snapshots[2].snapshot_id
    engine = QueryEngine(settings)
    before = _answers(engine, old_snapshot)
    files_before = len(engine.files(Dataset.TRADES))

    k2 = [sys.executable, "-m", "k2.cli", "maintain"]
    done = subprocess.run(k2, env={**os.environ, "K2_HOME": str(settings.home)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "trades:" in done.stdout and "quotes:" in done.stdout

    after = _answers(engine, old_snapshot)  # the same long-lived engine: its caches must follow the new snapshot
    for name, rows in before.items():
        assert rows.num_rows > 0, name
        assert after[name].equals(rows), name
    fresh = _answers(QueryEngine(settings), old_snapshot)
    assert all(fresh[name].equals(rows) for name, rows in before.items())

    table.refresh()
    current = table.current_snapshot()
    assert current is not None and property_of(current, COMPACTION_PROPERTY)
    # the compaction snapshot itself answers for the landed offsets (older snapshots may expire)
    assert landed_offsets(table.metadata, "t") == LandedOffsets("c", "t", {0: 9})
    files = table.inspect.files()
    partitions = {(p["ts_day"], p["symbol_bucket"]) for p in files.column("partition").to_pylist()}
    assert files.num_rows == len(partitions) < files_before
    again = subprocess.run(k2, env={**os.environ, "K2_HOME": str(settings.home)}, capture_output=True, text=True)
    assert again.returncode == 0 and "already compact" in again.stdout


def test_maintain_with_no_retention_leaves_exactly_the_current_files(tmp_path: Path) -> None:
    """Compaction's overwrite records the files it replaced as DELETED entries in the new snapshot's manifests;
    once the snapshots before it expire, nothing can read those files, and they must go (a 100M-tick run once
    kept 2.1x the live bytes on disk because orphan removal counted such entries as references)."""
    settings = Settings(home=tmp_path / "home")
    _land(settings, Dataset.TRADES, generate_trades(DAYS[0], SYMBOLS, 6_000, seed=3), commits=4)
    engine = QueryEngine(settings)
    before = engine.trades()
    env = {**os.environ, "K2_HOME": str(settings.home), "K2_ROW_GROUP_ROWS": "500"}  # a new layout to apply
    done = subprocess.run([sys.executable, "-m", "k2.cli", "maintain", "--retain-hours", "0", "--keep", "1",
                           "--orphan-age-hours", "0"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    table = ensure_table(open_catalog(settings), settings.model_copy(update={"row_group_rows": 500}), Dataset.TRADES)
    assert len(table.metadata.snapshots) == 1 and property_of(table.metadata.snapshots[0], COMPACTION_PROPERTY)
    live = {Path(t.file.file_path.removeprefix("file://")) for t in table.scan().plan_files()}
    on_disk = set(Path(str(settings.resolved_warehouse).removeprefix("file://")).glob("market/trades/data/**/*.parquet"))
    assert on_disk == live
    import pyarrow.parquet as pq

    groups = [pq.ParquetFile(p).metadata for p in live]
    assert all(g.num_row_groups > 1 and g.row_group(0).num_rows == 500 for g in groups if g.num_rows > 500)
    assert QueryEngine(settings).trades().equals(before)


def test_an_append_between_read_and_commit_is_kept(tmp_path: Path) -> None:
    """The race made deterministic: an append lands while compaction has read its files."""
    settings = Settings(home=tmp_path / "home")
    _land(settings, Dataset.TRADES, generate_trades(DAYS[0], SYMBOLS, 6_000, seed=4), 4)
    late = generate_trades(DAYS[0], SYMBOLS, 2_000, seed=5)
    late = late.set_column(late.schema.get_field_index("sequence"), "sequence",
                           pa.array(range(10_000, 10_000 + late.num_rows), pa.int64()))
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    appended = []

    def append_once(done: int, total: int) -> None:
        if not appended:
            other = ensure_table(open_catalog(settings), settings, Dataset.TRADES)  # another process's view
            appended.append(writer.append(other, _stamped(late), LandedOffsets("c", "t", {0: 99})))

    report = compact(table, on_partition=append_once)
    assert report.attempts == 2  # the first commit lost the race; the second went on top of the append
    engine = QueryEngine(settings)
    assert engine.count(Dataset.TRADES) == 8_000
    table.refresh()
    assert landed_offsets(table.metadata, "t") == LandedOffsets("c", "t", {0: 99})  # the append's offsets win
    # the appended files were not compacted (this run did not read them), and nothing was lost or doubled
    rows = engine.trades()
    keys = list(zip(rows.column("symbol").to_pylist(), rows.column("sequence").to_pylist(), strict=True))
    assert len(set(keys)) == len(keys) == 8_000


@pytest.mark.slow
def test_compaction_during_ingest_loses_no_row(kafka_settings: Settings) -> None:
    settings = kafka_settings.model_copy(update={"ingest_commit_rows": 1_500, "consume_batch": 500})
    bootstrap = settings.kafka_bootstrap or ""
    trades = pa.concat_tables([generate_trades(d, SYMBOLS, 10_000, seed=6) for d in DAYS])
    pipeline.produce_table(settings, bootstrap, trades)
    result: list[object] = []
    compacted = threading.Event()

    def after_each_landing(_: object) -> None:
        # the consumer waits here until a compaction ran, while the lander commits the batch it was handed: every
        # batch overlaps a compaction, however fast ingest is on this machine
        compacted.clear()
        compacted.wait(60)

    ingesting = threading.Thread(target=lambda: result.append(
        pipeline.ingest(settings, bootstrap, on_progress=after_each_landing)))
    ingesting.start()
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    compactions = retried = 0
    counted_before = REGISTRY.get_sample_value("k2_compactions_total", {"table": "trades"}) or 0.0
    while ingesting.is_alive():
        report = compact(table)
        compactions += report.partitions > 0
        retried += report.attempts > 1
        compacted.set()
    ingesting.join()
    final = compact(table)
    counted = (REGISTRY.get_sample_value("k2_compactions_total", {"table": "trades"}) or 0.0) - counted_before
    assert counted == compactions + (final.partitions > 0)  # the metric counts every compaction commit
    landed = result[0]
    assert landed.rows_landed == trades.num_rows and landed.duplicates == 0  # type: ignore[attr-defined]
    assert compactions >= 2
    rows = QueryEngine(settings).trades()
    assert rows.num_rows == trades.num_rows
    assert sorted(rows.column("trade_id").to_pylist()) == sorted(trades.column("trade_id").to_pylist())
    # the committer kept the materialized 1-minute bars up to date while compaction rewrote the files under it:
    # they cover the final trades state, and bars from them equal bars by hand from the produced ticks
    cold = QueryEngine(settings.model_copy(update={"query_cache_mb": 0}))
    state, stored = cold.table(Dataset.TRADES), cold.planner.table(BARS_TABLE)
    assert state is not None and stored is not None and state.current_snapshot_id is not None
    assert bars_snapshot_for(stored, state, state.current_snapshot_id) is not None
    got = [(b["bar_start"], b["open"], b["close"], b["volume"], b["trades"], b["vwap"])
           for b in cold.bars([SYMBOLS[0]], "1h").to_pylist()]
    expected = [(EPOCH + dt.timedelta(microseconds=b["bar"]), b["open"], b["close"], b["volume"], b["trades"],
                 b["vwap"]) for b in _bars_by_hand(trades.to_pylist(), SYMBOLS[0], dt.timedelta(hours=1))]
    assert got == expected


def test_expiry_keeps_tags_offsets_and_quality_counts_and_removes_orphans(kafka_settings: Settings) -> None:
    """History after a rollback and a re-landing, then `k2 maintain` with no retention: the answers, the exact
    quality counts, the tagged snapshot and the resume point all survive; unreferenced files go."""
    from k2.errors import SnapshotNotFoundError
    from k2.lake.snapshots import ancestry, rollback

    settings = kafka_settings.model_copy(update={"ingest_commit_rows": 1_000, "consume_batch": 500})
    bootstrap = settings.kafka_bootstrap or ""
    trades = generate_trades(DAYS[0], SYMBOLS, 6_000, seed=8)
    pipeline.produce_table(settings, bootstrap, trades)
    assert pipeline.ingest(settings, bootstrap).rows_landed == 6_000
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    history = list(ancestry(table.metadata))
    rollback(table, history[3].snapshot_id)  # undo three batches: their quality rows stop counting
    again = pipeline.ingest(settings, bootstrap)
    assert again.rows_landed > 0 and again.duplicates == 0
    table.refresh()
    tagged = list(ancestry(table.metadata))[-1].snapshot_id  # the first commit, kept by a tag
    env = {**os.environ, "K2_HOME": str(settings.home), "K2_KAFKA_BOOTSTRAP": bootstrap}
    k2 = [sys.executable, "-m", "k2.cli"]
    done = subprocess.run([*k2, "tag", "audit-2026", "--snapshot", str(tagged)], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0 and f"tagged snapshot {tagged} as audit-2026" in done.stdout, done.stderr
    for refused, why in ((["audit-2026"], "already has a tag or branch 'audit-2026'"),  # a tag is never moved
                         (["x", "--snapshot", str(history[0].snapshot_id)], "was rolled back"),
                         (["two words"], "use 1 to 100 letters")):
        done = subprocess.run([*k2, "tag", *refused], env=env, capture_output=True, text=True)
        assert done.returncode != 0 and why in done.stderr, (refused, done.stderr)
    table.refresh()
    assert {name: ref.snapshot_id for name, ref in table.metadata.refs.items()} == {
        "main": table.metadata.current_snapshot_id, "audit-2026": tagged}
    engine = QueryEngine(settings)
    quality_before = engine.quality().to_pylist()
    assert sum(q["received"] for q in quality_before) == 6_000  # rolled-back batches not counted
    rows_before = engine.trades()
    tagged_rows = engine.count(Dataset.TRADES, snapshot_id=tagged)
    warehouse = Path(str(settings.resolved_warehouse).removeprefix("file://"))
    files_before = sum(1 for f in warehouse.rglob("*") if f.is_file())

    done = subprocess.run([sys.executable, "-m", "k2.cli", "maintain", "--retain-hours", "0", "--keep", "2",
                           "--orphan-age-hours", "0"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "trades: expired" in done.stdout and "removed" in done.stdout

    table.refresh()
    kept = {s.snapshot_id for s in table.metadata.snapshots}
    assert tagged in kept and len(kept) <= 4  # the newest two, the tag, and (if older) the one with offsets
    assert engine.trades().equals(rows_before)
    assert engine.count(Dataset.TRADES, snapshot_id=tagged) == tagged_rows
    with pytest.raises(SnapshotNotFoundError, match="has no snapshot"):
        engine.count(Dataset.TRADES, snapshot_id=history[1].snapshot_id)
    # exact counts, though most batches' snapshots are gone and the tagged one is cut off from the history
    assert engine.quality().to_pylist() == quality_before
    assert sum(1 for f in warehouse.rglob("*") if f.is_file()) < files_before
    # exactly the data files some kept snapshot reads are left: those compacted away or rolled back are gone
    live = {Path(task.file.file_path.removeprefix("file://"))
            for s in kept for task in table.scan(snapshot_id=s).plan_files()}
    assert set((warehouse / "market" / "trades" / "data").rglob("*.parquet")) == live
    for snapshot_id in kept:  # every file a kept snapshot needs is still there
        engine.count(Dataset.TRADES, snapshot_id=snapshot_id)

    more = generate_trades(DAYS[1], SYMBOLS, 2_000, seed=9)
    pipeline.produce_table(settings, bootstrap, more)
    resumed = pipeline.ingest(settings, bootstrap)
    assert resumed.messages == 2_000 and resumed.duplicates == 0  # resumed exactly at the kept offsets
    quality = engine.quality().to_pylist()
    assert sum(q["received"] for q in quality) == sum(q["landed"] for q in quality) == 8_000


def test_ingest_runs_maintenance_on_a_schedule(kafka_settings: Settings) -> None:
    """`k2 ingest --maintain-every 1` compacts the table while it keeps landing rows. The ingest is kept busy (a
    trickle of new trades) until a compaction shows in the table: a pass's length depends on the machine's load,
    and an ingest that finished before the first pass did would prove nothing (and did fail in CI that way)."""
    from k2.lake.snapshots import ancestry

    bootstrap = kafka_settings.kafka_bootstrap or ""
    trades = pa.concat_tables([generate_trades(d, SYMBOLS, 15_000, seed=10) for d in DAYS])
    pipeline.produce_table(kafka_settings, bootstrap, trades)
    env = {**os.environ, "K2_HOME": str(kafka_settings.home), "K2_KAFKA_BOOTSTRAP": bootstrap,
           "K2_TOPIC_TRADES": kafka_settings.topic_trades, "K2_TOPIC_DLQ": kafka_settings.topic_dlq,
           "K2_CONSUMER_GROUP": kafka_settings.consumer_group, "K2_INGEST_COMMIT_ROWS": "1000",
           "K2_CONSUME_BATCH": "500", "K2_MAINTAIN_KEEP_SNAPSHOTS": "1000"}
    ingest = subprocess.Popen([sys.executable, "-m", "k2.cli", "ingest", "--dataset", "trades", "--idle-seconds",
                               "5", "--maintain-every", "1"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    catalog = open_catalog(kafka_settings)

    def snapshots() -> list[Snapshot]:
        return list(ancestry(ensure_table(catalog, kafka_settings, Dataset.TRADES).metadata))

    sent, day, deadline = [trades], DAYS[-1], time.monotonic() + 180
    try:
        while time.monotonic() < deadline and ingest.poll() is None:
            day += dt.timedelta(days=1)
            sent.append(generate_trades(day, SYMBOLS[:1], 20, seed=11))
            pipeline.produce_table(kafka_settings, bootstrap, sent[-1])
            if any(property_of(s, COMPACTION_PROPERTY) for s in snapshots()):
                break  # the trickle just sent lands after the compaction: the ingest went on while it ran
            time.sleep(0.5)
        out, err = ingest.communicate(timeout=300)
    finally:
        ingest.kill()
    everything = pa.concat_tables(sent)
    assert ingest.returncode == 0, err
    assert f"landed {everything.num_rows:,} rows" in out, out
    history = snapshots()  # newest first
    compactions = [i for i, s in enumerate(history) if property_of(s, COMPACTION_PROPERTY)]
    assert compactions, f"no maintenance pass compacted in {len(sent) - 1} trickles; the ingest said:\n{err}"
    landed_after = [s for s in history[:compactions[-1]] if not property_of(s, COMPACTION_PROPERTY)]
    assert landed_after, "no rows landed after the first compaction: it did not run while ingesting"
    rows = QueryEngine(kafka_settings).trades()
    assert sorted(rows.column("trade_id").to_pylist()) == sorted(everything.column("trade_id").to_pylist())
