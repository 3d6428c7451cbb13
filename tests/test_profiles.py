"""The production profiles, for real: the whole pipeline (load → ingest → query → replay → maintain) on the
embedded SQLite catalog, on a PostgreSQL catalog, and on an Iceberg REST catalog over S3 (SeaweedFS), each selected
by settings alone; then two ingest processes and `k2 maintain` at once on each."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from k2.ingest import pipeline
from k2.lake.catalog import ensure_table, open_catalog
from k2.lake.fileio import list_files
from k2.lake.maintenance import maintain
from k2.query.engine import QueryEngine, TimeRange
from k2.replay.cursor import ReplayRequest
from k2.replay.engine import Replay
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_quotes, generate_trades
from tests.services import settings_env
from tests.test_pipeline import _bars_by_hand

DAY = dt.date(2026, 3, 2)
SPAN = TimeRange(dt.datetime(2026, 3, 2, tzinfo=dt.UTC), dt.datetime(2026, 3, 3, tzinfo=dt.UTC))
SYMBOLS = ["AAA", "BBB", "CCC"]

pytestmark = pytest.mark.slow


def _answers(engine: QueryEngine) -> dict[str, object]:
    """Every built-in query once, for comparing before and after maintenance."""
    noon = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC)
    return {
        "trades": engine.trades(["BBB"], SPAN, limit=None).to_pylist(),
        "bars": engine.bars(SYMBOLS, "5m", SPAN).to_pylist(),
        "day": engine.bars(SYMBOLS, "1d").to_pylist(),
        "last": engine.last(Dataset.TRADES, None, noon).to_pylist(),
        "asof": engine.asof(["CCC"], SPAN).to_pylist(),
        "sql": engine.sql("SELECT symbol, count(*) AS n FROM trades GROUP BY symbol ORDER BY symbol").table.to_pylist(),
    }


def test_pipeline_runs_on_each_profile(profile_settings: Settings) -> None:
    settings = profile_settings.model_copy(update={"ingest_commit_rows": 4_000, "maintain_retain_hours": 0.0,
                                                   "maintain_keep_snapshots": 1,
                                                   "maintain_orphan_min_age_hours": 0.0})
    bootstrap = settings.kafka_bootstrap or ""
    trades = generate_trades(DAY, SYMBOLS, 12_000, seed=21)
    quotes = generate_quotes(DAY, SYMBOLS, 12_000, seed=22)
    for dataset, table in ((Dataset.TRADES, trades), (Dataset.QUOTES, quotes)):
        assert pipeline.produce_table(settings, bootstrap, table, dataset=dataset).failed == 0
    for dataset, table in ((Dataset.TRADES, trades), (Dataset.QUOTES, quotes)):
        landed = pipeline.ingest(settings, bootstrap, dataset=dataset)
        assert landed.rows_landed == table.num_rows and landed.duplicates == 0

    catalog = open_catalog(settings)
    table = ensure_table(catalog, settings, Dataset.TRADES)
    if settings.catalog_type == "rest":  # the lake really is in S3, not a local directory
        assert table.metadata_location.startswith("s3://warehouse/")
    elif settings.catalog_uri:
        assert type(catalog).__name__ == "SqlCatalog" and catalog.engine.dialect.name == "postgresql"  # type: ignore[attr-defined]
    first = table.metadata.snapshots[0]
    first_rows = int(first.summary["added-records"]) if first.summary else -1
    assert 0 < first_rows < trades.num_rows

    engine = QueryEngine(settings.model_copy(update={"query_cache_mb": 0}))
    counts = {r["symbol"]: r["trades"] for r in engine.counts().to_pylist()}
    assert counts == Counter(trades["symbol"].to_pylist())
    minute = dt.datetime(2026, 3, 2, 15, 7, tzinfo=dt.UTC)
    (bar,) = engine.bars(["BBB"], "1m", TimeRange(minute, minute + dt.timedelta(minutes=1))).to_pylist()
    assert {k: bar[k] for k in ("open", "high", "low", "close", "volume", "trades", "vwap")} == _bars_by_hand(
        trades, "BBB", minute)
    back = engine.quotes(["AAA"], SPAN, limit=None)
    assert back.num_rows == pc.sum(pc.equal(quotes["symbol"], "AAA")).as_py()
    assert engine.trades(snapshot_id=first.snapshot_id, limit=None).num_rows == first_rows  # time travel

    events = pa.Table.from_batches(list(Replay(settings, ReplayRequest(symbols=("AAA",))).batches()))
    in_aaa = (pc.sum(pc.equal(trades["symbol"], "AAA")).as_py() + pc.sum(pc.equal(quotes["symbol"], "AAA")).as_py())
    assert events.num_rows == in_aaa
    stamps = events["ts"].cast(pa.int64()).to_pylist()
    assert stamps == sorted(stamps)

    before = _answers(engine)
    files_before = len(engine.planner.plan(Dataset.TRADES).paths)
    orphan = _plant_orphan(settings, table.metadata.location)
    report = maintain(settings)
    assert report.compactions["trades"].partitions > 0
    assert len(engine.planner.plan(Dataset.TRADES).paths) < files_before
    assert report.orphans["trades"].skipped is None and report.orphans["trades"].removed >= 1
    assert orphan not in {f.location for f in list_files(table.metadata.location)}
    assert _answers(engine) == before  # maintenance never changes an answer
    assert sum(r["trades"] for r in engine.counts().to_pylist()) == trades.num_rows


def _plant_orphan(settings: Settings, location: str) -> str:
    """A data file no snapshot refers to (as a crashed writer leaves), written where the table's files are."""
    import pyarrow.parquet as pq

    from k2.lake.fileio import _remote, local_path

    target = f"{location}/data/orphan-{time.time_ns()}.parquet"
    path = local_path(target)
    if path is not None:
        pq.write_table(pa.table({"x": [1]}), path)
        return path
    filesystem, key, _ = _remote(target)
    pq.write_table(pa.table({"x": [1]}), key, filesystem=filesystem)
    return target


def test_two_ingest_processes_and_maintain_at_once_lose_nothing(profile_settings: Settings) -> None:
    """Two `k2 ingest` processes share the partitions and `k2 maintain` compacts beside them: their commits
    conflict, are retried on the fresh table, and every trade lands exactly once."""
    settings = profile_settings.model_copy(update={"topic_partitions": 4})
    total = 24_000
    trades = generate_trades(DAY, [f"S{i:02d}" for i in range(12)], total, seed=23)
    assert pipeline.produce_table(settings, settings.kafka_bootstrap or "", trades).failed == 0
    ensure_table(open_catalog(settings), settings, Dataset.TRADES)  # the table exists before three writers race
    env = {**settings_env(settings), "K2_INGEST_COMMIT_ROWS": "600", "K2_CONSUME_BATCH": "500",
           "K2_INGEST_COMMIT_SECONDS": "0.5"}

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "k2.cli", *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    ingests = [start("ingest", "--dataset", "trades", "--idle-seconds", "6") for _ in range(2)]
    maintains = 0
    while any(p.poll() is None for p in ingests):
        done = subprocess.run([sys.executable, "-m", "k2.cli", "maintain", "--min-files", "2"], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        maintains += 1
    outputs = [p.communicate(timeout=60) for p in ingests]
    for process, (_, err) in zip(ingests, outputs, strict=True):
        assert process.returncode == 0, err
    assert maintains >= 2
    engine = QueryEngine(settings.model_copy(update={"query_cache_mb": 0}))
    rows = engine.trades(limit=None)
    assert rows.num_rows == total
    assert sorted(rows["trade_id"].to_pylist()) == sorted(trades["trade_id"].to_pylist())
    quality = engine.quality().to_pylist()
    assert sum(q["duplicates"] for q in quality) == 0
    assert sum(q["landed"] for q in quality) == total
    # the mechanism: the writers really did collide and retry (row counts alone would not show a lost commit)
    retried = sum(int(_after(out, "; ", " commit(s) retried") or 0) for out, _ in outputs)
    assert retried >= 1, [out for out, _ in outputs]
    history = engine.snapshots(Dataset.TRADES).to_pylist()
    assert any(row["compaction"] for row in history)  # maintain rewrote files between the appends
    assert all("landed 0 rows" not in out for out, _ in outputs)  # both processes took part


def _after(text: str, before: str, marker: str) -> str | None:
    """The number just before `marker` in `text` (None when absent)."""
    at = text.find(marker)
    if at < 0:
        return None
    return text[:at].rsplit(before, 1)[-1].strip()


def _doctor(settings: Settings, **env: str) -> tuple[int, dict[str, str]]:
    """`k2 doctor` in a subprocess: its exit code and each check's line by name."""
    done = subprocess.run([sys.executable, "-m", "k2.cli", "doctor", "--timeout", "3"],
                          env={**settings_env(settings), **env}, capture_output=True, text=True, timeout=120)
    lines = {}
    for line in done.stdout.splitlines()[1:]:
        status, name, detail = line.split(None, 2)
        lines[name] = f"{status} {detail}"
    return done.returncode, lines


def test_doctor_passes_on_each_profile_and_names_what_is_wrong(profile_settings: Settings) -> None:
    settings = profile_settings
    trades = generate_trades(DAY, SYMBOLS, 1_000, seed=24)
    pipeline.produce_table(settings, settings.kafka_bootstrap or "", trades)
    assert pipeline.ingest(settings, settings.kafka_bootstrap or "").rows_landed == 1_000
    code, checks = _doctor(settings)
    assert code == 0, checks
    assert set(checks) == {"kafka", "registry", "catalog", "storage", "query"}
    assert all(line.startswith("ok ") for line in checks.values()), checks
    assert "trades (" in checks["catalog"] and "3 symbol(s)" in checks["query"]
    if settings.catalog_type == "rest":
        assert "s3://warehouse/" in checks["storage"] and "httpfs" in checks["query"]

    closed = str(_closed_port())
    code, checks = _doctor(settings, K2_KAFKA_BOOTSTRAP=f"127.0.0.1:{closed}",
                           K2_SCHEMA_REGISTRY_URL=f"http://127.0.0.1:{closed}")
    assert code == 1
    assert checks["kafka"].startswith("FAIL") and "does not answer" in checks["kafka"]
    assert checks["registry"].startswith("FAIL") and "K2_SCHEMA_REGISTRY_URL" in checks["registry"]
    assert checks["catalog"].startswith("ok")  # one broken service never hides the state of the others
    if settings.catalog_type == "rest":
        code, checks = _doctor(settings, K2_S3_SECRET_ACCESS_KEY="wrong-secret")
        assert code == 1 and checks["storage"].startswith("FAIL") and "s3://warehouse/" in checks["storage"]
    elif settings.catalog_uri:
        wrong = settings.catalog_uri.replace(":k2-test-secret@", ":wrong-password@")
        code, checks = _doctor(settings, K2_CATALOG_URI=wrong)
        assert code == 1 and checks["catalog"].startswith("FAIL") and "password" in checks["catalog"]
        assert "wrong-password" not in checks["catalog"]  # the message never shows the secret


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
