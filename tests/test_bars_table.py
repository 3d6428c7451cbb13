"""The materialized 1-minute bar table (lake/bars.py): its bars equal bars computed by hand from the raw ticks, it
is refreshed incrementally (only new files are read), compactions cost nothing, a rollback rebuilds it, racing
refreshers never count a batch twice, and the engine really answers from it: with the trade files gone, bars
still come back when the table covers the snapshot, and a lagging table is never used."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from k2.lake import bars, writer
from k2.lake.catalog import ensure_table, open_catalog
from k2.lake.compaction import compact
from k2.lake.snapshots import rollback
from k2.query.engine import QueryEngine, TimeRange
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_trades
from tests.test_query_engine import EPOCH, _bars_by_hand

SYMBOLS = ["AAA", "BBB", "CCC"]
DAYS = [dt.date(2026, 3, 2), dt.date(2026, 3, 3)]
MISSING = "No files found|No such file|not found"  # a read of a hidden trade file


def _stamped(rows: pa.Table) -> pa.Table:
    return rows.append_column("ingest_ts", pa.repeat(pa.scalar(0, pa.timestamp("us", tz="UTC")), rows.num_rows))


def _lake(tmp_path: Path, commits: int = 4):  # type: ignore[no-untyped-def]
    settings = Settings(home=tmp_path / "home", query_cache_mb=0)  # a one-shot reader: no hot tier
    catalog = open_catalog(settings)
    trades = ensure_table(catalog, settings, Dataset.TRADES)
    rows = pa.concat_tables([generate_trades(d, SYMBOLS, 3_000, seed=d.day) for d in DAYS])
    step = -(-rows.num_rows // commits)
    for offset in range(0, rows.num_rows, step):
        writer.append(trades, _stamped(rows.slice(offset, step)))
    return settings, trades, bars.ensure_bars_table(catalog, settings), rows


def _expected(rows: pa.Table, symbol: str, minutes: int) -> list[tuple[object, ...]]:
    return [(b["bar"], b["open"], b["high"], b["low"], b["close"], b["volume"], b["trades"], b["vwap"])
            for b in _bars_by_hand(rows.to_pylist(), symbol, dt.timedelta(minutes=minutes))]


def _got(engine: QueryEngine, symbol: str, interval: str, span: TimeRange | None = None) -> list[tuple[object, ...]]:
    return [((b["bar_start"] - EPOCH) // dt.timedelta(microseconds=1), b["open"], b["high"], b["low"], b["close"],
             b["volume"], b["trades"], b["vwap"]) for b in engine.bars([symbol], interval, span).to_pylist()]


def _hide_trade_files(engine: QueryEngine) -> list[Path]:
    """Move the current trade files away: a query that still answers did not read them."""
    moved = []
    for location in engine.files(Dataset.TRADES):
        path = Path(location.removeprefix("file://"))
        path.rename(path.with_suffix(".hidden"))
        moved.append(path)
    return moved


def _restore(moved: list[Path]) -> None:
    for path in moved:
        path.with_suffix(".hidden").rename(path)


@pytest.mark.parametrize(("interval", "minutes"), [("1m", 1), ("5m", 5), ("1h", 60), ("1d", 1440)])
def test_stored_bars_equal_bars_by_hand_and_need_no_trade_file(tmp_path: Path, interval: str, minutes: int) -> None:
    settings, trades, bars_table, rows = _lake(tmp_path)
    report = bars.refresh(trades, bars_table)
    assert report.rebuilt and report.files_read == len(trades.inspect.files())
    engine = QueryEngine(settings)
    moved = _hide_trade_files(engine)
    for symbol in SYMBOLS:
        assert _got(engine, symbol, interval) == _expected(rows, symbol, minutes)
    summary = engine.summary(SYMBOLS)
    assert summary.num_rows == len(SYMBOLS) * len(DAYS)
    assert sum(summary.column("trades").to_pylist()) == rows.num_rows
    with pytest.raises(Exception, match=MISSING):  # ticks themselves do need the files
        engine.trades(["AAA"])
    _restore(moved)


def test_a_refresh_reads_only_the_new_files_and_a_lagging_table_is_not_used(tmp_path: Path) -> None:
    settings, trades, bars_table, rows = _lake(tmp_path)
    bars.refresh(trades, bars_table)
    extra = _stamped(generate_trades(DAYS[1] + dt.timedelta(days=1), SYMBOLS, 900, seed=42))
    writer.append(trades, extra)
    trades.refresh()
    added, total = len(_added_by_current(trades)), len(trades.inspect.files())
    everything = pa.concat_tables([rows, extra.drop_columns(["ingest_ts"])])
    engine = QueryEngine(settings)
    moved = _hide_trade_files(engine)
    with pytest.raises(Exception, match=MISSING):
        engine.bars(["AAA"], "1h")  # the bars lag behind the append: the engine must read ticks, not stale bars
    _restore(moved)
    assert _got(engine, "AAA", "1h") == _expected(everything, "AAA", 60)  # right, from the ticks
    report = bars.refresh(trades, bars_table)
    assert not report.rebuilt
    assert report.files_read == added and 0 < added < total  # only the append's files were read
    moved = _hide_trade_files(engine)
    assert _got(engine, "AAA", "1h") == _expected(everything, "AAA", 60)  # and now from the bars
    _restore(moved)


def _added_by_current(trades) -> list[str]:  # type: ignore[no-untyped-def]
    snapshot = trades.current_snapshot()
    return [entry.data_file.file_path for manifest in snapshot.manifests(trades.io)
            if manifest.added_snapshot_id == snapshot.snapshot_id
            for entry in manifest.fetch_manifest_entry(trades.io)]


def test_compaction_costs_nothing_and_a_rollback_rebuilds(tmp_path: Path) -> None:
    settings, trades, bars_table, rows = _lake(tmp_path)
    first_state = trades.current_snapshot().snapshot_id  # type: ignore[union-attr]
    bars.refresh(trades, bars_table)
    compact(trades)
    report = bars.refresh(trades, bars_table)
    assert report.files_read == 0 and report.rows_written == 0  # same rows: nothing read, nothing written
    assert report.source == trades.current_snapshot().snapshot_id  # type: ignore[union-attr]  # but recorded
    engine = QueryEngine(settings)
    moved = _hide_trade_files(engine)  # the compacted files: the bars cover the compacted snapshot too
    assert _got(engine, "BBB", "15m") == _expected(rows, "BBB", 15)
    _restore(moved)

    writer.append(trades, _stamped(generate_trades(DAYS[1], SYMBOLS, 600, seed=77)))
    bars.refresh(trades, bars_table)
    rollback(trades.refresh(), first_state)
    report = bars.refresh(trades, bars_table)
    assert report.rebuilt
    moved = _hide_trade_files(engine)
    assert _got(engine, "BBB", "15m") == _expected(rows, "BBB", 15)  # the rolled-back batch is gone from bars
    _restore(moved)


def test_time_travel_uses_the_bars_of_that_snapshot(tmp_path: Path) -> None:
    settings, trades, bars_table, rows = _lake(tmp_path, commits=1)
    bars.refresh(trades, bars_table)
    old = trades.current_snapshot().snapshot_id  # type: ignore[union-attr]
    writer.append(trades, _stamped(generate_trades(DAYS[0], ["AAA"], 500, seed=8)))
    bars.refresh(trades, bars_table)
    engine = QueryEngine(settings)
    old_files = engine.files(Dataset.TRADES, snapshot_id=old)
    for location in old_files:  # hide the old snapshot's files: its bars must come from its own bars snapshot
        Path(location.removeprefix("file://")).rename(location.removeprefix("file://") + ".hidden")
    got = [((b["bar_start"] - EPOCH) // dt.timedelta(microseconds=1), b["trades"], b["vwap"])
           for b in engine.bars(["AAA"], "30m", snapshot_id=old).to_pylist()]
    assert got == [(e[0], e[6], e[7]) for e in _expected(rows, "AAA", 30)]


def test_racing_refreshers_never_count_a_batch_twice(tmp_path: Path) -> None:
    settings, trades, bars_table, rows = _lake(tmp_path, commits=1)
    catalog = open_catalog(settings)
    extra = []
    for round_number in range(4):
        batch = _stamped(generate_trades(DAYS[1] + dt.timedelta(days=1 + round_number), SYMBOLS, 300,
                                         seed=round_number))
        writer.append(trades, batch)
        extra.append(batch.drop_columns(["ingest_ts"]))
        start = threading.Barrier(3)

        def refresher(start: threading.Barrier = start) -> None:
            mine = ensure_table(catalog, settings, Dataset.TRADES), bars.ensure_bars_table(catalog, settings)
            start.wait()
            bars.refresh(*mine)

        threads = [threading.Thread(target=refresher) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    stored = bars_table.refresh().scan().to_arrow()
    assert sum(stored.column("trades").to_pylist()) == rows.num_rows + sum(b.num_rows for b in extra)
    everything = pa.concat_tables([rows, *extra])
    engine = QueryEngine(settings)
    moved = _hide_trade_files(engine)
    assert _got(engine, "CCC", "1d") == _expected(everything, "CCC", 1440)
    _restore(moved)
