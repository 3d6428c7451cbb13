"""End to end through real components: generator/CSV → producer → broker → consumer → Iceberg → DuckDB."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest

from k2.data import asx_sample_dir
from k2.errors import QueryError
from k2.ingest import pipeline
from k2.lake.catalog import ensure_table, open_catalog
from k2.lake.offsets import landed_offsets
from k2.query.engine import QueryEngine, TimeRange
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_trades

DAY = dt.date(2026, 3, 2)
DAY_SPAN = TimeRange(dt.datetime(2026, 3, 2, tzinfo=dt.UTC), dt.datetime(2026, 3, 3, tzinfo=dt.UTC))


def _bars_by_hand(table: pa.Table, symbol: str, minute: dt.datetime) -> dict[str, object]:
    """OHLCV for one symbol-minute computed in plain Python from the generated rows (independent of DuckDB)."""
    rows = [r for r in table.to_pylist()
            if r["symbol"] == symbol and r["ts"].replace(second=0, microsecond=0) == minute]
    rows.sort(key=lambda r: (r["ts"], r["sequence"]))
    volume = sum(r["size"] for r in rows)
    return {
        "open": rows[0]["price"], "high": max(r["price"] for r in rows), "low": min(r["price"] for r in rows),
        "close": rows[-1]["price"], "volume": volume, "trades": len(rows),
        "vwap": (sum(r["price"] * r["size"] for r in rows) / volume).quantize(Decimal("0.00000001")),
    }


def test_generated_day_lands_exactly_once_and_queries_match(kafka_settings: Settings) -> None:
    trades = generate_trades(DAY, ["AAA", "BBB", "CCC"], 30_000, seed=7)
    report = pipeline.produce_table(kafka_settings, kafka_settings.kafka_bootstrap or "", trades, chunk_rows=7_000)
    assert report.delivered == trades.num_rows and report.failed == 0
    landed = pipeline.ingest(kafka_settings, kafka_settings.kafka_bootstrap or "")
    assert landed.rows_landed == trades.num_rows
    assert landed.dead_lettered == 0 and landed.duplicates == 0

    engine = QueryEngine(kafka_settings)
    counts = {r["symbol"]: r["trades"] for r in engine.counts().to_pylist()}
    expected = defaultdict(int)
    for symbol in trades["symbol"].to_pylist():
        expected[symbol] += 1
    assert counts == expected
    assert sum(counts.values()) == 30_000

    minute = dt.datetime(2026, 3, 2, 15, 7, tzinfo=dt.UTC)
    bars = engine.bars(["BBB"], "1m", TimeRange(minute, minute + dt.timedelta(minutes=1))).to_pylist()
    assert len(bars) == 1
    bar = bars[0]
    assert {k: bar[k] for k in ("open", "high", "low", "close", "volume", "trades", "vwap")} == _bars_by_hand(
        trades, "BBB", minute
    )

    # every row survives exactly: same (symbol, sequence) set, same prices
    back = engine.trades(["AAA"], DAY_SPAN, limit=None)
    original = trades.filter(pa.compute.equal(trades["symbol"], "AAA"))
    assert back["sequence"].to_pylist() == sorted(original["sequence"].to_pylist())
    assert back["price"].to_pylist() == original["price"].to_pylist()

    # the landed offsets are recorded in the snapshot that holds the rows
    table = ensure_table(open_catalog(kafka_settings), kafka_settings, Dataset.TRADES)
    offsets = landed_offsets(table.metadata, kafka_settings.topic_trades)
    assert offsets is not None and sum(offsets.next_offsets.values()) == trades.num_rows


def test_restarted_ingest_resumes_from_the_lake_without_duplicates(kafka_settings: Settings) -> None:
    bootstrap = kafka_settings.kafka_bootstrap or ""
    first = generate_trades(DAY, ["AAA", "BBB"], 4_000, seed=1)
    pipeline.produce_table(kafka_settings, bootstrap, first)
    assert pipeline.ingest(kafka_settings, bootstrap, max_messages=1_500).rows_landed == 1_500
    second = generate_trades(DAY + dt.timedelta(days=1), ["AAA", "BBB"], 3_000, seed=1)
    pipeline.produce_table(kafka_settings, bootstrap, second)
    assert pipeline.ingest(kafka_settings, bootstrap).rows_landed == 5_500
    engine = QueryEngine(kafka_settings)
    assert sum(r["trades"] for r in engine.counts().to_pylist()) == 7_000
    # time travel: the first snapshot still shows only the first 1,500 rows
    table = ensure_table(open_catalog(kafka_settings), kafka_settings, Dataset.TRADES)
    oldest = min(table.metadata.snapshots, key=lambda s: s.sequence_number or 0)
    assert sum(r["trades"] for r in engine.counts(snapshot_id=oldest.snapshot_id).to_pylist()) == 1_500


def test_asx_dvn_through_kafka_matches_the_file(kafka_settings: Settings) -> None:
    bootstrap = kafka_settings.kafka_bootstrap or ""
    stats, report = pipeline.load_csv(kafka_settings, bootstrap, asx_sample_dir() / "trades" / "7181.csv")
    assert stats.rows_read == report.delivered == 232
    assert pipeline.ingest(kafka_settings, bootstrap).rows_landed == 232
    trades = QueryEngine(kafka_settings).trades(["DVN"], limit=None)
    assert trades.num_rows == 232
    assert trades["ts"][0].as_py() == dt.datetime(2014, 3, 9, 23, 13, 34, 553000, tzinfo=dt.UTC)
    assert trades["ts"][-1].as_py() == dt.datetime(2014, 3, 14, 4, 59, 31, 631000, tzinfo=dt.UTC)
    sydney = ZoneInfo("Australia/Sydney")
    daily: dict[dt.date, int] = defaultdict(int)
    for ts, size in zip(trades["ts"].to_pylist(), trades["size"].to_pylist(), strict=True):
        daily[ts.astimezone(sydney).date()] += size
    file_daily: dict[dt.date, int] = defaultdict(int)
    for line in (asx_sample_dir() / "trades" / "7181.csv").read_text().splitlines():
        date, _, _, volume, *_ = line.split(",")
        file_daily[dt.datetime.strptime(date, "%m/%d/%Y").date()] += int(volume)
    assert daily == file_daily


def test_malformed_csv_rows_never_cost_good_rows(kafka_settings: Settings, tmp_path: Path) -> None:
    lines = (asx_sample_dir() / "trades" / "7181.csv").read_text().splitlines()
    lines[99] = "03/10/2014,10:13:34.553,zero,100,0,,"
    path = tmp_path / "7181.csv"
    path.write_text("\n".join(lines) + "\n")
    bootstrap = kafka_settings.kafka_bootstrap or ""
    stats, report = pipeline.load_csv(kafka_settings, bootstrap, path, symbol="DVN")
    assert [(r.line, "price 'zero'" in r.reason) for r in stats.rejected] == [(100, True)]
    assert report.delivered == 231
    assert pipeline.ingest(kafka_settings, bootstrap).rows_landed == 231
    landed = QueryEngine(kafka_settings).trades(["DVN"], limit=None)
    assert sorted(landed["sequence"].to_pylist()) == [i for i in range(1, 233) if i != 100]


def test_symbol_and_day_filters_prune_files(kafka_settings: Settings) -> None:
    bootstrap = kafka_settings.kafka_bootstrap or ""
    for offset in range(3):
        pipeline.produce_table(
            kafka_settings, bootstrap,
            generate_trades(DAY + dt.timedelta(days=offset), ["AAA", "BBB", "CCC", "DDD"], 2_000, seed=offset),
        )
    pipeline.ingest(kafka_settings, bootstrap)
    engine = QueryEngine(kafka_settings)
    all_files = engine.files(Dataset.TRADES)
    one_day = engine.files(Dataset.TRADES, span=DAY_SPAN)
    one_symbol_day = engine.files(Dataset.TRADES, ["AAA"], DAY_SPAN)
    assert len(all_files) > len(one_day) > len(one_symbol_day) >= 1
    assert engine.counts(["AAA"], DAY_SPAN).column("trades")[0].as_py() == sum(
        1 for s in generate_trades(DAY, ["AAA", "BBB", "CCC", "DDD"], 2_000, seed=0)["symbol"].to_pylist()
        if s == "AAA"
    )


def test_query_parameters_are_validated(settings: Settings) -> None:
    engine = QueryEngine(settings)
    with pytest.raises(QueryError, match="interval '7 fortnights'"):
        engine.bars(["AAA"], "7 fortnights")
    with pytest.raises(QueryError, match="is not before end"):
        TimeRange(dt.datetime(2024, 1, 2, tzinfo=dt.UTC), dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    assert engine.trades(["AAA"]).num_rows == 0  # empty lake: empty result, not an error


def test_a_full_producer_queue_applies_back_pressure_without_loss_or_duplicates(kafka_settings: Settings) -> None:
    # a queue of 1,000 records against chunks of 20,000: send() hits a full queue many times and must retry
    # exactly the record that did not fit
    tight = kafka_settings.model_copy(update={"producer_queue_max_messages": 1_000})
    trades = generate_trades(DAY, ["AAA", "BBB", "CCC", "DDD"], 60_000, seed=11)
    report = pipeline.produce_table(tight, tight.kafka_bootstrap or "", trades, chunk_rows=20_000)
    assert (report.queued, report.failed) == (60_000, 0)
    landed = pipeline.ingest(tight, tight.kafka_bootstrap or "")
    assert (landed.rows_landed, landed.duplicates, landed.dead_lettered) == (60_000, 0, 0)
    back = QueryEngine(tight).trades(["AAA", "BBB", "CCC", "DDD"], DAY_SPAN, limit=None)
    assert sorted(zip(back["symbol"].to_pylist(), back["sequence"].to_pylist(), strict=True)) == sorted(
        zip(trades["symbol"].to_pylist(), trades["sequence"].to_pylist(), strict=True))


def test_loading_the_same_file_twice_lands_each_trade_once(kafka_settings: Settings) -> None:
    bootstrap = kafka_settings.kafka_bootstrap or ""
    dvn = asx_sample_dir() / "trades" / "7181.csv"
    pipeline.load_csv(kafka_settings, bootstrap, dvn)
    assert pipeline.ingest(kafka_settings, bootstrap).rows_landed == 232
    pipeline.load_csv(kafka_settings, bootstrap, dvn)
    again = pipeline.ingest(kafka_settings, bootstrap)
    assert (again.rows_landed, again.duplicates) == (0, 232)
    engine = QueryEngine(kafka_settings)
    assert engine.trades(["DVN"], limit=None).num_rows == 232
    quality = engine.quality(["DVN"]).to_pylist()
    assert sum(q["landed"] for q in quality) == 232
    assert sum(q["duplicates"] for q in quality) == 232
    assert all(q["gaps"] == 0 for q in quality)


def test_gaps_and_late_ticks_are_tracked_and_queryable(kafka_settings: Settings) -> None:
    bootstrap = kafka_settings.kafka_bootstrap or ""
    day = generate_trades(DAY, ["AAA"], 1_000, seed=3)
    held_back = pa.compute.is_in(day["sequence"], pa.array([100, 101, 102, 500]))
    pipeline.produce_table(kafka_settings, bootstrap, day.filter(pa.compute.invert(held_back)))
    pipeline.ingest(kafka_settings, bootstrap)
    engine = QueryEngine(kafka_settings)
    [state] = engine.quality(["AAA"]).to_pylist()
    assert (state["landed"], state["gaps"], state["missing"], state["late"]) == (996, 2, 4, 0)
    pipeline.produce_table(kafka_settings, bootstrap, day.filter(held_back))
    report = pipeline.ingest(kafka_settings, bootstrap)
    assert (report.rows_landed, report.late) == (4, 4)
    [state] = engine.quality(["AAA"]).to_pylist()
    assert (state["landed"], state["gaps"], state["missing"], state["late"]) == (1_000, 0, 0, 4)
    assert engine.trades(["AAA"], limit=None)["sequence"].to_pylist() == list(range(1, 1_001))


def test_ingest_metrics_are_served_over_http(kafka_settings: Settings) -> None:
    import urllib.request

    from k2.kafka.broker import free_port
    from k2.obs.metrics import serve

    port = free_port()
    serve(port)
    bootstrap = kafka_settings.kafka_bootstrap or ""
    day = generate_trades(DAY, ["MET"], 500, seed=9)
    gap = pa.compute.not_equal(day["sequence"], 250)
    pipeline.produce_table(kafka_settings, bootstrap, day.filter(gap))
    pipeline.ingest(kafka_settings, bootstrap)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert f'k2_ingest_messages_total{{topic="{kafka_settings.topic_trades}"}} 499.0' in text
    assert 'k2_sequence_gaps{dataset="trades",exchange="K2X",symbol="MET"} 1.0' in text
    assert 'k2_sequence_missing{dataset="trades",exchange="K2X",symbol="MET"} 1.0' in text
    assert 'k2_ingest_rows_total{dataset="trades",outcome="landed"}' in text


def test_asx_quotes_land_with_empty_sides_as_null(kafka_settings: Settings) -> None:
    bootstrap = kafka_settings.kafka_bootstrap or ""
    path = asx_sample_dir() / "quotes" / "7181.csv"
    stats, report = pipeline.load_csv(kafka_settings, bootstrap, path, dataset=Dataset.QUOTES)
    assert stats.rows_read == report.delivered == 549 and stats.rows_rejected == 0
    landed = pipeline.ingest(kafka_settings, bootstrap, Dataset.QUOTES)
    assert landed.rows_landed == 549
    quotes = QueryEngine(kafka_settings).quotes(["DVN"], limit=None)
    assert quotes.num_rows == 549
    rows = quotes.to_pylist()
    file_rows = [line.split(",") for line in path.read_text().splitlines()]
    # first row of the file: bid 0.66 x 24999, ask 0.0 x 0 → the ask side is empty (null), not a quote at zero
    assert file_rows[0][2:] == ["0.66", "0.0", "24999", "0"]
    first = rows[0]
    assert (first["bid_price"], first["bid_size"], first["ask_price"], first["ask_size"]) == (
        Decimal("0.66"), 24999, None, None)
    empty_asks = sum(1 for r in file_rows if Decimal(r[3]) == 0)
    assert sum(1 for r in rows if r["ask_price"] is None) == empty_asks > 0
    assert all(r["bid_price"] is None or r["bid_price"] > 0 for r in rows)
    assert [r["bid_size"] or 0 for r in rows] == [int(r[4]) for r in file_rows]


def test_reference_data_and_corporate_actions_land_once(kafka_settings: Settings) -> None:
    bootstrap = kafka_settings.kafka_bootstrap or ""
    reference = asx_sample_dir() / "reference-data"
    for name in ("company_info", "dividends", "stock_splits", "mergers"):
        pipeline.load_reference(kafka_settings, bootstrap, reference / f"{name}.csv")
    pipeline.load_reference(kafka_settings, bootstrap, reference / "company_info.csv")  # a re-load: no duplicates
    assert pipeline.ingest(kafka_settings, bootstrap, Dataset.REFERENCE).rows_landed == 4
    assert pipeline.ingest(kafka_settings, bootstrap, Dataset.CORPORATE_ACTIONS).rows_landed == 2
    engine = QueryEngine(kafka_settings)
    instruments = {r["symbol"]: r for r in engine.reference(Dataset.REFERENCE).to_pylist()}
    assert sorted(instruments) == ["BHP", "DVN", "MWR", "RIO"]
    assert instruments["DVN"]["name"] == "DEVINE LTD" and instruments["DVN"]["isin"] == "AU000000DVN6"
    # valid from 00:00 Sydney time on 05/07/2008 (AEST, UTC+10)
    assert instruments["DVN"]["valid_from"] == dt.datetime(2008, 5, 6, 14, 0, tzinfo=dt.UTC)
    [bhp] = engine.reference(Dataset.CORPORATE_ACTIONS, ["BHP"]).to_pylist()
    assert (bhp["action"], bhp["ex_date"], bhp["amount"], bhp["gross_amount"], bhp["currency"]) == (
        "DIVIDEND", dt.date(2014, 3, 3), Decimal("0.59"), Decimal("0.842857"), "USD")


def test_generated_quotes_round_trip_through_a_csv(kafka_settings: Settings, tmp_path: Path) -> None:
    from k2.sources.generator import generate_quotes, write_generic_csv

    quotes = generate_quotes(DAY, ["QQQ", "RRR"], 3_000, seed=8)
    path = tmp_path / "quotes.csv"
    write_generic_csv(quotes, str(path))
    bootstrap = kafka_settings.kafka_bootstrap or ""
    stats, report = pipeline.load_csv(kafka_settings, bootstrap, path, dataset=Dataset.QUOTES)
    assert (stats.rows_read, stats.rows_rejected, report.delivered) == (3_000, 0, 3_000)
    assert pipeline.ingest(kafka_settings, bootstrap, Dataset.QUOTES).rows_landed == 3_000
    back = QueryEngine(kafka_settings).quotes(limit=None).drop_columns(["ingest_ts"])
    key = lambda r: (r["symbol"], r["sequence"])  # noqa: E731
    assert sorted(back.to_pylist(), key=key) == sorted(quotes.to_pylist(), key=key)  # exact, nulls included
    assert sum(1 for r in back.to_pylist() if r["ask_price"] is None) == 2  # each symbol opens with an empty ask


def test_generated_reference_data_lands_and_reads_back(kafka_settings: Settings, tmp_path: Path) -> None:
    from k2.sources.generator import generate_reference, write_generic_csv

    instruments = generate_reference(["AAA", "BBB"], dt.date(2026, 1, 1))
    path = tmp_path / "instruments.csv"
    write_generic_csv(instruments, str(path))
    bootstrap = kafka_settings.kafka_bootstrap or ""
    kind, stats, report = pipeline.load_reference(kafka_settings, bootstrap, path, exchange="K2X")
    assert (kind, stats.rows_rejected, report.delivered) == (Dataset.REFERENCE, 0, 2)
    assert pipeline.ingest(kafka_settings, bootstrap, Dataset.REFERENCE).rows_landed == 2
    back = QueryEngine(kafka_settings).reference(Dataset.REFERENCE).drop_columns(["ingest_ts"])
    assert back.to_pylist() == instruments.to_pylist()
