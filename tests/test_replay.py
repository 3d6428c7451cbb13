"""Replay (k2.replay) on a real lake: one merged stream, complete and strictly ordered on the documented key, resumable
from any cursor with nothing lost or repeated, reproducible when pinned to snapshots (after an append and after a
compaction), paced without ever running early, adjustable for splits, and republished to Kafka so faithfully that
`k2 ingest` lands the same rows in a second lake."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from k2.errors import QueryError
from k2.ingest import pipeline
from k2.lake import writer
from k2.lake.catalog import ensure_table, open_catalog
from k2.lake.compaction import compact
from k2.query.adjust import Adjust
from k2.query.engine import QueryEngine
from k2.replay import sinks
from k2.replay.cursor import Cursor, ReplayRequest
from k2.replay.engine import Replay
from k2.replay.order import ORDER_COLUMNS
from k2.schemas import Dataset, arrow_schema
from k2.settings import Settings
from k2.sources.generator import generate_quotes, generate_trades

DAYS = [dt.date(2026, 3, 2), dt.date(2026, 3, 3)]
SYMBOLS = ["AAA", "BBB", "CCC"]


def _stamped(rows: pa.Table) -> pa.Table:
    return rows.append_column("ingest_ts", pa.repeat(pa.scalar(0, pa.timestamp("us", tz="UTC")), rows.num_rows))


def _land(settings: Settings, dataset: Dataset, rows: pa.Table, commits: int) -> None:
    table = ensure_table(open_catalog(settings), settings, dataset)
    step = -(-rows.num_rows // commits)
    for offset in range(0, rows.num_rows, step):
        writer.append(table, _stamped(rows.slice(offset, step)))


TIE = dt.datetime(2026, 3, 2, 16, tzinfo=dt.UTC)


def _tied(rows: pa.Table, picks: list[tuple[str, int]]) -> pa.Table:
    """One row per (symbol, sequence) of `picks`, all at the same instant TIE: only the tie-breaks order them."""
    taken = [rows.filter(pc.equal(rows["symbol"], symbol)).slice(0, 1) for symbol, _ in picks]
    table = pa.concat_tables(taken)
    table = table.set_column(table.schema.get_field_index("ts"), "ts", pa.array([TIME] * len(picks), TS_TYPE))
    return table.set_column(table.schema.get_field_index("sequence"), "sequence",
                            pa.array([sequence for _, sequence in picks], pa.int64()))


TIME, TS_TYPE = TIE, pa.timestamp("us", tz="UTC")
# at TIE, in replay order: trade AAA 9000000, quote CCC 9000001 (quotes first), trade BBB 9000001, quote AAA 9000002
TIED_ORDER = [("trade", "AAA"), ("quote", "CCC"), ("trade", "BBB"), ("quote", "AAA")]


def _build(home: Path) -> tuple[Settings, pa.Table, pa.Table]:
    settings = Settings(home=home)
    trades = pa.concat_tables([generate_trades(d, SYMBOLS, 3_000, seed=d.day) for d in DAYS])
    quotes = pa.concat_tables([generate_quotes(d, SYMBOLS, 4_000, seed=d.day + 50) for d in DAYS])
    trades = pa.concat_tables([trades, _tied(trades, [("BBB", 9_000_001), ("AAA", 9_000_000)])])
    quotes = pa.concat_tables([quotes, _tied(quotes, [("AAA", 9_000_002), ("CCC", 9_000_001)])])
    _land(settings, Dataset.TRADES, trades, commits=3)
    _land(settings, Dataset.QUOTES, quotes, commits=4)
    return settings, trades, quotes


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, pa.Table, pa.Table]:
    return _build(tmp_path_factory.mktemp("replay") / "home")


def _keys(batches: list[pa.RecordBatch]) -> pa.Table:
    table = pa.Table.from_batches(batches)
    return table.select([*ORDER_COLUMNS, "kind"]).set_column(0, "ts", table.column("ts").cast(pa.int64()))


def _strictly_ordered(keys: pa.Table) -> bool:
    """Every key is greater than the one before it, in (ts, sequence, rank, exchange, symbol) order."""
    columns = [keys.column(c).to_pylist() for c in ORDER_COLUMNS]
    rows = list(zip(*columns, strict=True))
    return all(a < b for a, b in itertools.pairwise(rows))


def test_the_stream_is_complete_and_strictly_ordered(lake: tuple[Settings, pa.Table, pa.Table]) -> None:
    settings, trades, quotes = lake
    replay = Replay(settings, batch_rows=2_000)
    batches = list(replay.batches())
    assert len(batches) > 4  # several days, several batches each
    keys = _keys(batches)
    assert keys.num_rows == trades.num_rows + quotes.num_rows
    assert _strictly_ordered(keys)
    # every event is there exactly once, with its own dataset's identity
    got = {(k, s, q) for k, s, q in zip(keys.column("kind").to_pylist(), keys.column("symbol").to_pylist(),
                                        keys.column("sequence").to_pylist(), strict=True)}
    want = {("trade", s, q) for s, q in zip(trades["symbol"].to_pylist(), trades["sequence"].to_pylist(), strict=True)}
    want |= {("quote", s, q) for s, q in zip(quotes["symbol"].to_pylist(), quotes["sequence"].to_pylist(), strict=True)}
    assert got == want
    # ties at one instant are broken by sequence, then quotes before trades, then exchange and symbol
    at_tie = keys.filter(pc.equal(keys["ts"], int((TIE - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds()
                                                  * 1_000_000)))
    assert list(zip(at_tie["kind"].to_pylist(), at_tie["symbol"].to_pylist(), strict=True)) == TIED_ORDER
    # a window and a symbol: exactly the rows of the tables in range, still in order
    start = dt.datetime(2026, 3, 2, 18, tzinfo=dt.UTC)
    end = dt.datetime(2026, 3, 3, 15, tzinfo=dt.UTC)
    some = _keys(list(Replay(settings, ReplayRequest(symbols=("BBB",), start=start, end=end)).batches()))
    expected = sum(int(pc.sum(pc.and_(pc.and_(pc.equal(t["symbol"], "BBB"), pc.greater_equal(t["ts"], start)),
                                      pc.less(t["ts"], end))).as_py()) for t in (trades, quotes))
    assert some.num_rows == expected > 0 and _strictly_ordered(some)


def test_the_trade_and_quote_columns_are_those_of_their_dataset(lake: tuple[Settings, pa.Table, pa.Table]) -> None:
    settings, trades, _ = lake
    events = Replay(settings, ReplayRequest(symbols=("AAA",)), limit=50).events()
    first_trade = next(e for e in events if e["kind"] == "trade")
    original = trades.filter(pc.and_(pc.equal(trades["symbol"], "AAA"),
                                     pc.equal(trades["sequence"], first_trade["sequence"]))).to_pylist()[0]
    assert {k: first_trade[k] for k in original} == original
    assert "bid_price" not in first_trade


@pytest.mark.parametrize("cut", [1, 1_999, 2_000, 2_001, 9_876, -2])
def test_resuming_from_a_cursor_gives_exactly_the_rest(lake: tuple[Settings, pa.Table, pa.Table], cut: int) -> None:
    """Cut mid-batch, on batch boundaries, and (-2) between two events of the same instant, where only the
    tie-breaks of the cursor tell what comes next."""
    settings, _, _ = lake
    everything = _keys(list(Replay(settings, batch_rows=2_000).batches()))
    if cut < 0:
        tie_us = int((TIE - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds() * 1_000_000)
        cut = everything.column("ts").to_pylist().index(tie_us) - cut
    first = Replay(settings, batch_rows=2_000)
    taken = []
    for event in first.events():  # stop mid-batch (or on a batch boundary) at event `cut`
        taken.append(event)
        if len(taken) == cut:
            break
    token = first.cursor.token()
    rest = _keys(list(Replay(settings, cursor=token, batch_rows=2_000).batches()))
    assert len(taken) + rest.num_rows == everything.num_rows
    assert rest.to_pylist() == everything.slice(cut).to_pylist()


def test_a_pinned_replay_is_identical_after_an_append_and_a_compaction(tmp_path: Path) -> None:
    settings, _trades, _ = _build(tmp_path / "home")
    pinned = Replay(settings).cursor.token()  # the current snapshots, nothing emitted yet
    before = pa.Table.from_batches(list(Replay(settings, cursor=pinned).batches()))
    later = generate_trades(DAYS[1], ["AAA", "ZZZ"], 1_500, seed=99)
    _land(settings, Dataset.TRADES, later, commits=1)
    for dataset in (Dataset.TRADES, Dataset.QUOTES):
        assert compact(ensure_table(open_catalog(settings), settings, dataset)).partitions > 0
    after = pa.Table.from_batches(list(Replay(settings, cursor=pinned).batches()))
    assert after.equals(before)
    by_id = Replay(settings, ReplayRequest(snapshots=Cursor.parse(pinned).request.snapshots))  # named snapshot ids
    collected: list[pa.RecordBatch] = []
    assert by_id.run(on_batch=collected.append) == before.num_rows
    assert pa.Table.from_batches(collected).equals(before)
    now = pa.Table.from_batches(list(Replay(settings).batches()))  # unpinned: sees the append
    assert now.num_rows == before.num_rows + later.num_rows
    assert Cursor.parse(pinned).request.snapshots[Dataset.TRADES] != Replay(settings).request.snapshots[Dataset.TRADES]


def test_pacing_never_runs_early_and_skips_long_gaps(lake: tuple[Settings, pa.Table, pa.Table]) -> None:
    settings, _, _ = lake
    start = dt.datetime(2026, 3, 2, 15, tzinfo=dt.UTC)
    span = ReplayRequest(start=start, end=start + dt.timedelta(seconds=40))
    began = time.monotonic()
    keys = _keys(list(Replay(settings, span, speed=10, batch_rows=64).batches()))
    took = time.monotonic() - began
    ts = keys.column("ts").to_numpy()
    assert keys.num_rows > 5 and _strictly_ordered(keys)
    assert took >= 0.95 * (ts[-1] - ts[0]) / 1e6 / 10  # a pacer that does not wait fails here
    # across the night: 10x real time would take ~2 hours; with gaps over 1 h skipped, the trading seconds only
    evening = dt.datetime(2026, 3, 2, 20, 59, 55, tzinfo=dt.UTC)
    night = ReplayRequest(symbols=("AAA",), start=evening, end=dt.datetime(2026, 3, 3, 14, 30, 5, tzinfo=dt.UTC))
    paced = Replay(settings, night, speed=10, skip_gaps=dt.timedelta(hours=1))
    began = time.monotonic()
    count = sum(b.num_rows for b in paced.batches())
    assert count > 0 and time.monotonic() - began < 60
    assert paced.pacing.events == count and paced.pacing.percentile_ms(50) is not None


def test_pause_holds_the_stream_and_resume_continues_it(lake: tuple[Settings, pa.Table, pa.Table]) -> None:
    import threading

    settings, _, _ = lake
    replay = Replay(settings, ReplayRequest(symbols=("CCC",)), batch_rows=100)
    stream = replay.batches()
    next(stream)
    replay.pause()
    got: list[int] = []
    reader = threading.Thread(target=lambda: got.append(next(stream).num_rows))
    reader.start()
    reader.join(0.5)
    assert reader.is_alive() and not got  # paused: nothing comes out
    replay.resume()
    reader.join(10)
    assert got == [100]


def test_an_adjusted_replay_scales_prices_before_a_split(tmp_path: Path) -> None:
    settings, _trades, _ = _build(tmp_path / "home")
    schema = arrow_schema(Dataset.CORPORATE_ACTIONS)
    schema = schema.remove(schema.get_field_index("ingest_ts"))
    _land(settings, Dataset.CORPORATE_ACTIONS, pa.Table.from_pylist(
        [{"exchange": "K2X", "symbol": "AAA", "action": "SPLIT", "ex_date": DAYS[1], "ratio": "2:1"}], schema=schema),
        commits=1)
    request = ReplayRequest(datasets=(Dataset.TRADES,), symbols=("AAA",))
    raw = pa.Table.from_batches(list(Replay(settings, request).batches()))
    adjusted = pa.Table.from_batches(list(Replay(settings, ReplayRequest(
        datasets=(Dataset.TRADES,), symbols=("AAA",), adjust=Adjust.SPLITS.value)).batches()))
    first_day = pc.equal(pc.cast(raw["ts"], pa.date32()), pa.scalar(DAYS[0])).to_pylist()
    for before, after, early in zip(raw.to_pylist(), adjusted.to_pylist(), first_day, strict=True):
        factor, volume = (Decimal("0.5"), 2) if early else (Decimal(1), 1)  # ex 00:00 New York on day two
        assert after["price"] == (before["price"] * factor).quantize(Decimal("0.00000001"))
        assert after["size"] == before["size"] * volume
    assert any(first_day) and not all(first_day)


def test_a_kafka_republish_lands_the_same_rows_in_a_second_lake(kafka_settings: Settings, tmp_path: Path) -> None:
    settings = kafka_settings
    bootstrap = settings.kafka_bootstrap or ""
    source = settings.model_copy(update={"home": tmp_path / "source"})
    _, trades, quotes = _build(source.home)
    targets = {Dataset.TRADES: f"replay-{settings.topic_trades}", Dataset.QUOTES: f"replay-{settings.topic_quotes}"}
    with pytest.raises(QueryError, match="live topic"):
        sinks.to_kafka(source, bootstrap, iter(()), {Dataset.TRADES: source.topic_trades})
    report = sinks.to_kafka(source, bootstrap, Replay(source).batches(), targets)
    assert report.delivered == trades.num_rows + quotes.num_rows
    second = settings.model_copy(update={"home": tmp_path / "second", "topic_trades": targets[Dataset.TRADES],
                                         "topic_quotes": targets[Dataset.QUOTES]})
    # downstream shares the producer's schema registry, as with live data (the local one lives in K2_HOME)
    shutil.copytree(source.registry_dir, second.registry_dir)
    for dataset in (Dataset.TRADES, Dataset.QUOTES):
        assert pipeline.ingest(second, bootstrap, dataset).rows_landed > 0
    original, landed = QueryEngine(source), QueryEngine(second)
    for dataset in (Dataset.TRADES, Dataset.QUOTES):
        a = original.ticks(dataset).drop_columns(["ingest_ts"])
        b = landed.ticks(dataset).drop_columns(["ingest_ts"])
        assert b.num_rows == a.num_rows and b.equals(a), dataset


def test_the_cli_replays_to_a_file_resumes_and_refuses_a_live_topic(
    lake: tuple[Settings, pa.Table, pa.Table], tmp_path: Path
) -> None:
    settings, trades, quotes = lake
    env = {**os.environ, "K2_HOME": str(settings.home)}

    def k2(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "k2.cli", "replay", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    first = k2("--to", "parquet", "--out", str(tmp_path / "a.parquet"), "--limit", "5000")
    assert first.returncode == 0, first.stderr
    token = first.stderr.split("--resume")[-1].split()[0]
    rest = k2("--resume", token, "--to", "parquet", "--out", str(tmp_path / "b.parquet"))
    assert rest.returncode == 0, rest.stderr
    both = pa.concat_tables([pq.read_table(tmp_path / "a.parquet"), pq.read_table(tmp_path / "b.parquet")])
    whole = pa.Table.from_batches(list(Replay(settings).batches()))
    assert both.num_rows == trades.num_rows + quotes.num_rows and both.equals(whole)
    live = k2("--to", "kafka", "--trades-topic", settings.topic_trades, "--quotes-topic", "somewhere-else")
    assert live.returncode == 1 and "live topic" in live.stderr
    bad = k2("--speed", "fast")
    assert bad.returncode == 1 and "--speed" in bad.stderr
    assert np.isin(["AAA"], both.column("symbol").to_numpy(zero_copy_only=False)).all()


def test_a_paced_cli_replay_exposes_its_metrics(lake: tuple[Settings, pa.Table, pa.Table]) -> None:
    """`k2 replay --metrics-port`: events handed out and pacing lateness, scraped while the replay runs."""
    import urllib.request

    from k2.kafka.broker import free_port

    settings, _, _ = lake
    port = free_port()
    replay = subprocess.Popen([sys.executable, "-m", "k2.cli", "replay", "--speed", "1", "--metrics-port", str(port),
                               "--to", "csv", "--out", os.devnull], env={**os.environ, "K2_HOME": str(settings.home)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline, text = time.monotonic() + 60, ""
        while time.monotonic() < deadline and 'k2_replay_events_total{paced="yes"}' not in text:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    text = response.read().decode()
            except OSError:
                pass
            time.sleep(0.2)
    finally:
        replay.send_signal(signal.SIGINT)  # at 1x the five days would take five days: Ctrl-C prints the cursor
        _, err = replay.communicate(timeout=60)
    assert replay.returncode == 0 and "--resume" in err, err  # a clean stop that says where to resume
    events = re.search(r'k2_replay_events_total\{paced="yes"\} (\S+)', text)
    lateness = re.search(r"k2_replay_lateness_seconds_count (\S+)", text)
    assert events and float(events.group(1)) > 0 and lateness and float(lateness.group(1)) > 0, text[-2000:]


def test_no_duckdb_connection_draws_a_progress_bar_on_stdout(lake: tuple[Settings, pa.Table, pa.Table]) -> None:
    """DuckDB prints a progress bar to stdout once a query runs past 2 s (seen in a 100M-event replay whose
    stdout was a pipe): every connection K2 opens turns it off, the replay's and the query engine's."""
    from k2.query.duck import Duck
    from k2.query.plan import Planner
    from k2.replay.source import MergedSource

    setting = "SELECT current_setting('enable_progress_bar')"
    source = MergedSource(Planner(lake[0]), ReplayRequest())
    assert source._con.execute(setting).fetchone() == (False,)
    with Duck(lake[0]).cursor() as cursor:
        assert cursor.execute(setting).fetchone() == (False,)
