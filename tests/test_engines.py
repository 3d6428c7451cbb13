"""Distributed engines on K2's own tables, for real: Trino (from Maven Central, Java 25) reads the lake K2 landed
on a PostgreSQL catalog and on the REST catalog over S3, and gives K2's answers (counts, exact session VWAP, 1-minute
bars, time travel); rows Trino writes, K2 then reads."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from k2.engines import trino
from k2.lake import writer
from k2.lake.catalog import ensure_table, open_catalog
from k2.query.engine import QueryEngine, TimeRange
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_trades
from tests.conftest import on_profile
from tests.services import free_port

DAYS = [dt.date(2026, 3, 2), dt.date(2026, 3, 3)]
SYMBOLS = ["AAA", "BBB", "CCC"]
CACHE = Path(__file__).resolve().parent.parent / ".cache"
pytestmark = pytest.mark.slow


def _land(settings: Settings, rows: pa.Table, commits: int) -> list[int]:
    """Land `rows` in `commits` appends with K2's lake writer; the snapshot id of each."""
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    stamped = rows.append_column("ingest_ts", pa.repeat(pa.scalar(0, pa.timestamp("us", tz="UTC")), rows.num_rows))
    step = -(-rows.num_rows // commits)
    return [writer.append(table, stamped.slice(offset, step)) for offset in range(0, rows.num_rows, step)]


@pytest.fixture(scope="module", params=["postgres", "rest-s3"])
def lake(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, list[int]]:
    base = Settings(home=tmp_path_factory.mktemp("engines") / "home")
    settings = on_profile(base, request.param, request)
    trades = pa.concat_tables([generate_trades(day, SYMBOLS, 4_000, seed=day.day) for day in DAYS])
    return settings, _land(settings, trades, commits=3)


@pytest.fixture(scope="module")
def trino_url(lake: tuple[Settings, list[int]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = lake[0].model_copy(update={"trino_dist": Path(os.environ.get("K2_TRINO_DIST", CACHE / "trino"))})
    trino.fetch(settings)  # explicit, once per checkout (Maven Central; ~/.m2 keeps a copy)
    server, process = trino.start(settings, tmp_path_factory.mktemp("trino"), free_port())
    try:
        yield server.url
    finally:
        trino.stop(server, process)


def _query(url: str, sql: str, schema: str) -> list[tuple[object, ...]]:
    import trino as client  # the trino PyPI client (dev extra)

    host, port = url.removeprefix("http://").split(":")
    with client.dbapi.connect(host=host, port=int(port), user="k2", catalog="iceberg", schema=schema) as connection:
        cursor = connection.cursor()
        cursor.execute(sql)
        return [tuple(row) for row in cursor.fetchall()]


def test_trino_gives_k2s_answers_on_k2s_tables(lake: tuple[Settings, list[int]], trino_url: str) -> None:
    settings, snapshots = lake
    schema = settings.namespace
    engine = QueryEngine(settings.model_copy(update={"query_cache_mb": 0}))
    counts = {r["symbol"]: r["trades"] for r in engine.counts().to_pylist()}
    assert dict(_query(trino_url, "SELECT symbol, count(*) FROM trades GROUP BY symbol", schema)) == counts

    # exact session VWAP per symbol-day: Trino's decimal sums, divided as K2 divides, equal K2's day bars
    sums = _query(trino_url, "SELECT symbol, CAST(ts AS date), sum(price * size), sum(size) FROM trades "
                             "GROUP BY 1, 2", schema)
    from_trino = {(s, d): (Decimal(n) / Decimal(v)).quantize(Decimal("0.00000001")) for s, d, n, v in sums}
    day_bars = engine.bars(SYMBOLS, "1d").to_pylist()
    assert from_trino == {(b["symbol"], b["bar_start"].date()): b["vwap"] for b in day_bars}

    # 1-minute OHLCV bars of one symbol over an hour
    start = dt.datetime(2026, 3, 2, 15, tzinfo=dt.UTC)
    rows = _query(trino_url, """
        SELECT date_trunc('minute', ts), element_at(array_agg(price ORDER BY ts, sequence), 1), max(price), min(price),
               element_at(array_agg(price ORDER BY ts DESC, sequence DESC), 1), sum(size), count(*)
        FROM trades WHERE symbol = 'BBB' AND ts >= TIMESTAMP '2026-03-02 15:00:00 UTC'
          AND ts < TIMESTAMP '2026-03-02 16:00:00 UTC'
        GROUP BY 1 ORDER BY 1""", schema)
    bars = engine.bars(["BBB"], "1m", TimeRange(start, start + dt.timedelta(hours=1))).to_pylist()
    assert len(rows) == len(bars) > 30
    assert [(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows] == [
        (b["bar_start"], b["open"], b["high"], b["low"], b["close"], b["volume"], b["trades"]) for b in bars]

    # time travel: Trino at K2's first snapshot sees exactly what K2 sees there
    (first_count,) = _query(trino_url, f"SELECT count(*) FROM trades FOR VERSION AS OF {snapshots[0]}", schema)[0]
    assert first_count == engine.trades(snapshot_id=snapshots[0], limit=None).num_rows < sum(counts.values())
    listed = {row[0] for row in _query(trino_url, 'SELECT snapshot_id FROM "trades$snapshots"', schema)}
    assert set(snapshots) <= listed


def test_rows_trino_writes_k2_reads(lake: tuple[Settings, list[int]], trino_url: str) -> None:
    settings, _ = lake
    engine = QueryEngine(settings.model_copy(update={"query_cache_mb": 0}))
    before = engine.trades(["ZZT"], limit=None).num_rows
    _query(trino_url, """
        INSERT INTO trades (exchange, symbol, ts, sequence, price, size, side, trade_id, ingest_ts)
        VALUES ('XASX', 'ZZT', TIMESTAMP '2026-03-03 10:00:00.000001 UTC', 1, DECIMAL '12.34500000', 100, 'BUY',
                'trino-1', TIMESTAMP '2026-03-03 10:00:01 UTC'),
               ('XASX', 'ZZT', TIMESTAMP '2026-03-03 10:00:02 UTC', 2, DECIMAL '12.35000000', 250, 'SELL',
                'trino-2', TIMESTAMP '2026-03-03 10:00:03 UTC')""", settings.namespace)
    rows = engine.trades(["ZZT"], limit=None).to_pylist()
    assert before == 0 and [(r["sequence"], r["price"], r["size"], r["side"], r["trade_id"]) for r in rows] == [
        (1, Decimal("12.345"), 100, "BUY", "trino-1"), (2, Decimal("12.35"), 250, "SELL", "trino-2")]
    assert rows[0]["ts"] == dt.datetime(2026, 3, 3, 10, 0, 0, 1, tzinfo=dt.UTC)


def _spark(settings: Settings, *queries: str) -> list[list[dict[str, object]]]:
    """`k2 spark sql` in its own process (one JVM per call, as a user runs it): each query's rows."""
    import json
    import subprocess
    import sys

    from tests.services import settings_env

    env = {**settings_env(settings), "K2_SPARK_JARS": os.environ.get("K2_SPARK_JARS", str(CACHE / "spark")),
           "SPARK_LOCAL_IP": "127.0.0.1", "TZ": "UTC"}
    done = subprocess.run([sys.executable, "-m", "k2.cli", "spark", "sql", *queries], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line, parse_float=Decimal) for line in done.stdout.splitlines()]


@pytest.fixture(scope="module", params=["sqlite", "postgres", "rest-s3"])
def spark_lake(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, list[int]]:
    from k2.engines import spark

    base = Settings(home=tmp_path_factory.mktemp("spark") / "home")
    settings = on_profile(base, request.param, request)
    spark.fetch(settings.model_copy(update={"spark_jars": Path(os.environ.get("K2_SPARK_JARS", CACHE / "spark"))}))
    trades = pa.concat_tables([generate_trades(day, SYMBOLS, 3_000, seed=day.day + 10) for day in DAYS])
    return settings, _land(settings, trades, commits=3)


def test_spark_gives_k2s_answers_and_k2_reads_what_spark_writes(spark_lake: tuple[Settings, list[int]]) -> None:
    settings, snapshots = spark_lake
    table = f"{settings.catalog_name}.{settings.namespace}.trades"
    engine = QueryEngine(settings.model_copy(update={"query_cache_mb": 0}))
    counts, sums, bars, travel, listed, _ = _spark(
        settings,
        f"SELECT symbol, count(*) AS n FROM {table} GROUP BY symbol",
        f"SELECT symbol, CAST(to_date(ts) AS STRING) AS day, CAST(sum(price * size) AS STRING) AS notional, "
        f"sum(size) AS volume FROM {table} GROUP BY 1, 2",
        f"""SELECT unix_micros(date_trunc('MINUTE', ts)) AS bar,
                   CAST(min_by(price, struct(ts, sequence)) AS STRING) AS open, CAST(max(price) AS STRING) AS high,
                   CAST(min(price) AS STRING) AS low, CAST(max_by(price, struct(ts, sequence)) AS STRING) AS close,
                   sum(size) AS volume, count(*) AS trades
            FROM {table} WHERE symbol = 'BBB' AND ts >= TIMESTAMP '2026-03-02 15:00:00'
              AND ts < TIMESTAMP '2026-03-02 16:00:00' GROUP BY 1 ORDER BY 1""",
        f"SELECT count(*) AS n FROM {table} VERSION AS OF {snapshots[0]}",
        f"SELECT snapshot_id FROM {table}.snapshots",
        # every column named: Spark fills no missing column of an Iceberg table (the lineage ones are null here:
        # this row did not come through K2's ingest)
        f"""INSERT INTO {table} (exchange, symbol, ts, sequence, price, size, side, trade_id, conditions, venue,
                                 ingest_ts, source_line, source_batch, kafka_partition, kafka_offset, landed_batch)
            VALUES ('XASX', 'ZZS', TIMESTAMP '2026-03-03 10:00:00.000001', 1, 12.345BD, 100, 'BUY', 'spark-1', NULL,
                    NULL, TIMESTAMP '2026-03-03 10:00:01', NULL, NULL, NULL, NULL, NULL)""",
    )
    assert {r["symbol"]: r["n"] for r in counts} == {
        r["symbol"]: r["trades"] for r in engine.counts().to_pylist() if r["symbol"] != "ZZS"}
    vwaps = {(r["symbol"], r["day"]): (Decimal(r["notional"]) / Decimal(r["volume"])).quantize(Decimal("1E-8"))
             for r in sums}
    day_bars = engine.bars(SYMBOLS, "1d").to_pylist()
    assert vwaps == {(b["symbol"], b["bar_start"].date().isoformat()): b["vwap"] for b in day_bars}
    start = dt.datetime(2026, 3, 2, 15, tzinfo=dt.UTC)
    expected = engine.bars(["BBB"], "1m", TimeRange(start, start + dt.timedelta(hours=1))).to_pylist()
    assert len(bars) == len(expected) > 30
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert [(epoch + dt.timedelta(microseconds=r["bar"]), Decimal(r["open"]), Decimal(r["high"]), Decimal(r["low"]),
             Decimal(r["close"]), r["volume"], r["trades"]) for r in bars] == [
        (b["bar_start"], b["open"], b["high"], b["low"], b["close"], b["volume"], b["trades"]) for b in expected]
    assert travel[0]["n"] == engine.trades(snapshot_id=snapshots[0], limit=None).num_rows
    assert set(snapshots) <= {r["snapshot_id"] for r in listed}
    rows = engine.trades(["ZZS"], limit=None).to_pylist()  # written by Spark, read by K2
    assert [(r["ts"], r["sequence"], r["price"], r["size"], r["side"], r["trade_id"]) for r in rows] == [
        (dt.datetime(2026, 3, 3, 10, 0, 0, 1, tzinfo=dt.UTC), 1, Decimal("12.345"), 100, "BUY", "spark-1")]
