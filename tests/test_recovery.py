"""Disaster recovery drills: `k2 backup` and `k2 restore` on every lake profile, with real Kafka ingestion before
and after. Ingest, back up, ingest more, destroy the lake, restore: the answers are the backup point's, and
ingestion resumes from the restored offsets, landing exactly what the topic holds beyond them."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from k2.errors import RecoveryError
from k2.ingest import pipeline
from k2.lake.catalog import ensure_table, open_catalog, table_locations
from k2.lake.fileio import delete_file, list_files, local_path
from k2.lake.maintenance import maintain
from k2.lake.offsets import landed_offsets
from k2.query.engine import QueryEngine, TimeRange
from k2.recovery.backup import backup
from k2.recovery.points import list_points, stored_objects
from k2.recovery.restore import restore
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_quotes, generate_trades
from tests.services import settings_env
from tests.test_maintain import _land

pytestmark = pytest.mark.slow

DAY_1, DAY_2 = dt.date(2026, 3, 2), dt.date(2026, 3, 3)
SYMBOLS = ["AAA", "BBB", "CCC"]
SPAN = TimeRange(dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 3, 5, tzinfo=dt.UTC))


def _k2(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "k2.cli", *args], env=settings_env(settings), capture_output=True,
                          text=True, timeout=300)


def _ingest_all(settings: Settings) -> dict[Dataset, pipeline.IngestReport]:
    return pipeline.ingest_many(settings, settings.kafka_bootstrap or "", [Dataset.TRADES, Dataset.QUOTES])


def _answers(settings: Settings) -> dict[str, object]:
    engine = QueryEngine(settings)
    return {
        "counts": engine.counts().to_pylist(),
        "trades": engine.trades(None, SPAN).to_pylist(),
        "bars": engine.bars(SYMBOLS, "1m", SPAN).to_pylist(),
        "vwap": engine.vwap(SYMBOLS, SPAN).to_pylist(),
        "asof": engine.asof(["BBB"], SPAN).num_rows,
        "quotes": engine.quotes(None, SPAN).num_rows,
        "quality": sorted((q["symbol"], q["received"], q["landed"], q["duplicates"])
                          for q in engine.quality().to_pylist()),
    }


def _offsets(settings: Settings, dataset: Dataset) -> dict[int, int]:
    table = ensure_table(open_catalog(settings), settings, dataset)
    topic = settings.topic_trades if dataset is Dataset.TRADES else settings.topic_quotes
    found = landed_offsets(table.metadata, topic)
    return found.next_offsets if found else {}


def _destroy_lake(settings: Settings) -> None:
    """What a lost disk or a dropped catalog leaves: no table in the catalog, no file under any table's location,
    no registry (the broker, elsewhere, survives)."""
    catalog = open_catalog(settings)
    for name, _ in table_locations(catalog, settings).items():
        table = catalog.load_table((settings.namespace, name))
        location = table.metadata.location
        catalog.drop_table((settings.namespace, name))
        for stored in list(list_files(location)):
            delete_file(stored.location)
    shutil.rmtree(settings.home, ignore_errors=True)


def _backup_target(settings: Settings, tmp_path: Path) -> str:
    """A directory for local lakes; an S3 prefix beside the lake for the S3 profile."""
    if settings.warehouse and settings.warehouse.startswith("s3://"):  # a plain bucket: the lake's is a table bucket
        return f"s3://k2-backups/{uuid.uuid4().hex[:8]}"
    return str(tmp_path / "backups")


def test_backup_destroy_restore_and_resume(profile_settings: Settings, tmp_path: Path) -> None:
    settings = profile_settings
    bootstrap = settings.kafka_bootstrap or ""
    target = _backup_target(settings, tmp_path)
    first = generate_trades(DAY_1, SYMBOLS, 3_000, seed=3)
    pipeline.produce_table(settings, bootstrap, first)
    pipeline.produce_table(settings, bootstrap, generate_quotes(DAY_1, SYMBOLS, 2_000, seed=3), Dataset.QUOTES)
    _ingest_all(settings)
    at_backup = _answers(settings)
    offsets_at_backup = {d: _offsets(settings, d) for d in (Dataset.TRADES, Dataset.QUOTES)}

    done = _k2(settings, "backup", target)
    assert done.returncode == 0, done.stderr
    assert "backup point" in done.stdout and "trades: snapshot" in done.stdout
    listed = _k2(settings, "restore", target, "--list")
    assert listed.returncode == 0 and done.stdout.split()[2].rstrip(":") in listed.stdout, listed.stderr

    later = generate_trades(DAY_2, SYMBOLS, 2_000, seed=4)
    pipeline.produce_table(settings, bootstrap, later)
    pipeline.produce_table(settings, bootstrap, generate_quotes(DAY_2, SYMBOLS, 1_000, seed=4), Dataset.QUOTES)
    _ingest_all(settings)
    assert _answers(settings)["counts"] != at_backup["counts"]

    _destroy_lake(settings)
    if settings.catalog_type == "rest":
        # SeaweedFS's REST catalog registers a table without its snapshots: the restore says so, and the same
        # point restores into a SQL catalog over the same S3 warehouse (catalog kinds are interchangeable)
        refused = _k2(settings, "restore", target)
        assert refused.returncode == 1 and "register-table endpoint does not keep them" in refused.stderr
        settings = Settings(**{**settings.model_dump(exclude_defaults=True), "catalog_type": "sql",
                               "catalog_uri": None, "catalog_credential": None})
    restored = _k2(settings, "restore", target)
    assert restored.returncode == 0, restored.stderr
    assert "restored point" in restored.stdout

    # the restored lake answers exactly as the lake did at the backup point, and holds its Kafka offsets
    assert _answers(settings) == at_backup
    assert {d: _offsets(settings, d) for d in offsets_at_backup} == offsets_at_backup

    # ingestion resumes from those offsets: the later records, still in the topics, land exactly once
    reports = _ingest_all(settings)
    started = reports[Dataset.TRADES].start_offsets  # partitions nothing ever landed from start at the beginning
    assert {p: o for p, o in started.items() if o >= 0} == offsets_at_backup[Dataset.TRADES]
    assert reports[Dataset.TRADES].rows_landed == later.num_rows
    assert reports[Dataset.QUOTES].rows_landed == 1_000
    assert reports[Dataset.TRADES].duplicates == reports[Dataset.QUOTES].duplicates == 0
    rows = QueryEngine(settings).trades(None, SPAN)
    assert rows.num_rows == first.num_rows + later.num_rows
    keys = set(zip(rows["symbol"].to_pylist(), rows["ts"].to_pylist(), rows["sequence"].to_pylist(), strict=True))
    assert len(keys) == rows.num_rows


def test_backups_are_incremental_and_points_restore_by_id_or_time(settings: Settings, tmp_path: Path) -> None:
    target = str(tmp_path / "backups")
    _land(settings, Dataset.TRADES, generate_trades(DAY_1, SYMBOLS, 6_000, seed=1), 3)
    first = backup(settings, target)
    assert first.files_copied == len(first.point.files) and first.files_already_there == 0
    copied_at = {k: os.stat(local_path(f"{target}/objects/{k}") or "").st_mtime_ns for k in first.point.files}
    at_first = _answers_without_kafka(settings)
    time.sleep(1.1)  # points are named to the second
    _land(settings, Dataset.TRADES, generate_trades(DAY_2, SYMBOLS, 4_000, seed=2), 2)
    second = backup(settings, target)

    # only what the first point lacks is copied; what it holds is shared, untouched
    new = set(second.point.files) - set(first.point.files)
    assert second.files_copied == len(new) > 0
    assert second.files_already_there == len(first.point.files) - len(set(first.point.files) - set(second.point.files))
    assert all(os.stat(local_path(f"{target}/objects/{k}") or "").st_mtime_ns == t for k, t in copied_at.items())
    assert [p.id for p in list_points(target)] == [first.point.id, second.point.id]
    at_second = _answers_without_kafka(settings)

    shutil.rmtree(settings.home)
    restore(settings, target, at=first.point.created + dt.timedelta(milliseconds=500))
    assert _answers_without_kafka(settings) == at_first
    with pytest.raises(RecoveryError, match=r"already holds tables .*--replace"):
        restore(settings, target)
    report = restore(settings, target, point_id=second.point.id, replace=True)
    assert report.replaced == ["trades"] and report.files_copied == len(new)  # the first point's files were there
    assert _answers_without_kafka(settings) == at_second
    # time travel inside a restored point: every kept snapshot came back
    oldest = min(ensure_table(open_catalog(settings), settings, Dataset.TRADES).metadata.snapshots,
                 key=lambda s: s.timestamp_ms)
    assert QueryEngine(settings).trades(snapshot_id=oldest.snapshot_id).num_rows == 2_000


def _answers_without_kafka(settings: Settings) -> dict[str, object]:
    engine = QueryEngine(settings)
    return {"counts": engine.counts().to_pylist(), "bars": engine.bars(SYMBOLS, "1m", SPAN).to_pylist(),
            "snapshots": [s["snapshot_id"] for s in engine.snapshots(Dataset.TRADES).to_pylist()]}


def test_restore_refuses_what_it_cannot_do_and_says_why(settings: Settings, tmp_path: Path) -> None:
    target = str(tmp_path / "backups")
    with pytest.raises(RecoveryError, match="there is no backup in"):
        restore(settings, target)
    _land(settings, Dataset.TRADES, generate_trades(DAY_1, SYMBOLS, 1_000, seed=1), 1)
    point = backup(settings, target).point
    with pytest.raises(RecoveryError, match="no backup point 'nope'"):
        restore(settings, target, point_id="nope")
    with pytest.raises(RecoveryError, match=r"no backup .* was taken at or before 2020"):
        restore(settings, target, at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    elsewhere = settings.model_copy(update={"home": tmp_path / "other-home"})
    with pytest.raises(RecoveryError, match=r"outside the configured warehouse .* K2_HOME or K2_WAREHOUSE"):
        restore(elsewhere, target, point_id=point.id)
    failed = _k2(elsewhere, "restore", target)
    assert failed.returncode == 1 and "outside the configured warehouse" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert "bytes" not in failed.stderr, failed.stderr  # the error alone: no empty progress bar before it


def test_a_backup_racing_expiry_retries_and_still_restores_exactly(settings: Settings, tmp_path: Path) -> None:
    """`k2 maintain` deletes files of expired snapshots while the backup copies them: the backup reads the catalog
    again, and its point is the lake after the maintenance, complete."""
    target = str(tmp_path / "backups")
    for day, seed in ((DAY_1, 1), (DAY_2, 2)):
        _land(settings, Dataset.TRADES, generate_trades(day, SYMBOLS, 3_000, seed=seed), 4)
    racing = settings.model_copy(update={"maintain_retain_hours": 0.0, "maintain_keep_snapshots": 1,
                                         "maintain_orphan_min_age_hours": 0.0})
    raced = threading.Event()

    def maintain_once(done: int, total: int) -> None:
        if not raced.is_set():  # after the first file: the rest of the state being copied is compacted away
            raced.set()
            maintain(racing, datasets=(Dataset.TRADES,), min_files=2)

    report = backup(settings, target, workers=1, on_progress=maintain_once)
    assert raced.is_set() and report.attempts == 2
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    assert report.point.tables["trades"].snapshot_id == table.current_snapshot().snapshot_id
    expected = _answers_without_kafka(settings)
    shutil.rmtree(settings.home)
    restore(settings, target)
    assert _answers_without_kafka(settings) == expected
    assert set(report.point.files) <= set(stored_objects(target))  # every object the point names is there


def test_a_backup_taken_during_ingest_is_one_consistent_state(kafka_settings: Settings, tmp_path: Path) -> None:
    """Backups taken while `k2 ingest` commits do not stop it, and each point is one whole snapshot per table:
    its rows are exactly what its recorded offsets say were consumed."""
    settings = kafka_settings
    target = str(tmp_path / "backups")
    trades = generate_trades(DAY_1, SYMBOLS, 30_000, seed=5)
    pipeline.produce_table(settings, settings.kafka_bootstrap or "", trades)
    env = settings_env(settings.model_copy(update={"ingest_commit_rows": 1_500, "consume_batch": 500}))
    ingest = subprocess.Popen([sys.executable, "-m", "k2.cli", "ingest", "--dataset", "trades", "--idle-seconds",
                               "3"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    points = []
    try:
        while ingest.poll() is None:  # back up again and again until the ingest is done
            if table_locations(open_catalog(settings), settings).get("trades"):
                points.append(backup(settings, target).point)
            time.sleep(0.1)
    finally:
        _, errors = ingest.communicate(timeout=300)
    assert ingest.returncode == 0, errors
    taken = sorted({p.tables["trades"].rows for p in points})
    assert len([r for r in taken if 0 < r < trades.num_rows]) >= 2, taken  # ingest went on between backups
    middle = next(p for p in points if 0 < p.tables["trades"].rows < trades.num_rows)
    shutil.rmtree(settings.home)
    restore(settings, target, point_id=middle.id)
    rows = QueryEngine(settings).trades(None, SPAN)
    assert rows.num_rows == middle.tables["trades"].rows == sum(_offsets(settings, Dataset.TRADES).values())
    report = pipeline.ingest(settings, settings.kafka_bootstrap or "")
    assert report.rows_landed == trades.num_rows - middle.tables["trades"].rows and report.duplicates == 0
    rows = QueryEngine(settings).trades(None, SPAN)
    assert rows.num_rows == trades.num_rows
    assert len(set(zip(rows["symbol"].to_pylist(), rows["sequence"].to_pylist(), strict=True))) == trades.num_rows
