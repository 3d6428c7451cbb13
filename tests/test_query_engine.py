"""The query engine against answers this test computes itself (pandas, plain Python) on generated ticks landed in a
real Iceberg lake through K2's writer, in several commits (files of one symbol-day overlap, as ingest leaves them).

Each query runs twice: with the hot tier (decoded files in memory, sliced) and without it (DuckDB reads the files),
so neither path can hide a bug in the other. The plan cache is checked by its mechanism: an append decodes one new
manifest, not the history.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from k2.errors import QueryError
from k2.lake import writer
from k2.lake.catalog import ensure_table, open_catalog
from k2.query.engine import QueryEngine, TimeRange
from k2.schemas import Dataset
from k2.settings import Settings
from k2.sources.generator import generate_quotes, generate_trades

DAYS = [dt.date(2026, 3, 2), dt.date(2026, 3, 3)]
SYMBOLS = ["AAA", "BBB", "CCC", "DDD"]
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
CENT = Decimal("0.00000001")


def _stamped(rows: pa.Table) -> pa.Table:
    return rows.append_column("ingest_ts", pa.repeat(pa.scalar(0, pa.timestamp("us", tz="UTC")), rows.num_rows))


def _land(settings: Settings, dataset: Dataset, rows: pa.Table, commits: int) -> list[int]:
    """Append `rows` in `commits` time-ordered slices; returns the snapshot ids."""
    table = ensure_table(open_catalog(settings), settings, dataset)
    step = -(-rows.num_rows // commits)
    return [writer.append(table, _stamped(rows.slice(i, step))) for i in range(0, rows.num_rows, step)]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, pa.Table, pa.Table]:
    # small row groups: every file holds several, and a symbol's rows run across row group boundaries
    settings = Settings(home=tmp_path_factory.mktemp("query") / "home", row_group_rows=400)
    trades = pa.concat_tables([generate_trades(d, SYMBOLS, 6_000, seed=5) for d in DAYS])
    quotes = pa.concat_tables([generate_quotes(d, SYMBOLS, 8_000, seed=6) for d in DAYS])
    # day one lands in time-ordered commits (as ingest leaves it), day two round-robin over three commits: every
    # file of day two overlaps the others in time, so every read and every bar must merge across files
    first_day = trades.filter(pc.equal(pc.cast(trades["ts"], pa.date32()), pa.scalar(DAYS[0])))
    second_day = trades.filter(pc.equal(pc.cast(trades["ts"], pa.date32()), pa.scalar(DAYS[1])))
    _land(settings, Dataset.TRADES, first_day, commits=4)
    rows = np.arange(second_day.num_rows)
    for part in range(3):
        _land(settings, Dataset.TRADES, second_day.take(pa.array(rows[rows % 3 == part])), commits=1)
    _land(settings, Dataset.QUOTES, quotes, commits=5)
    return settings, trades, quotes


@pytest.fixture(params=["hot", "no-hot-tier"])
def engine(request: pytest.FixtureRequest, lake: tuple[Settings, pa.Table, pa.Table]) -> QueryEngine:
    settings = lake[0]
    if request.param == "no-hot-tier":
        settings = settings.model_copy(update={"query_cache_mb": 0})
    return QueryEngine(settings)


def _frame(rows: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _day_span(day: dt.date) -> TimeRange:
    start = dt.datetime.combine(day, dt.time(), dt.UTC)
    return TimeRange(start, start + dt.timedelta(days=1))


def test_ticks_of_a_symbol_day_are_exactly_the_generated_rows_in_time_order(
    engine: QueryEngine, lake: tuple[Settings, pa.Table, pa.Table]
) -> None:
    _, trades, _ = lake
    expected = _frame(trades).filter((pl.col("symbol") == "BBB") & (pl.col("ts").dt.date() == DAYS[1]))
    expected = expected.sort("ts", "sequence")
    got = engine.trades(["BBB"], _day_span(DAYS[1])).drop_columns(["ingest_ts"])
    assert got.num_rows == expected.height > 0
    assert got.column("sequence").to_pylist() == expected["sequence"].to_list()
    assert got.column("price").to_pylist() == expected["price"].to_list()
    assert engine.count(Dataset.TRADES, ["BBB"], _day_span(DAYS[1])) == expected.height
    # several symbols come back merged in time order
    both = engine.trades(["AAA", "DDD"], _day_span(DAYS[0]))
    keys = list(zip(both.column("ts").to_pylist(), both.column("symbol").to_pylist(),
                    both.column("sequence").to_pylist(), strict=True))
    assert keys == sorted(keys)
    assert both.num_rows == _frame(trades).filter(
        pl.col("symbol").is_in(["AAA", "DDD"]) & (pl.col("ts").dt.date() == DAYS[0])).height


def test_a_symbol_query_decodes_only_the_row_groups_that_can_hold_the_symbol(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from k2.lake.fileio import readable

    # one bucket: each file holds every symbol, sorted by symbol, in row groups of 400 rows
    settings = Settings(home=tmp_path / "home", symbol_buckets=1, row_group_rows=400)
    quotes = generate_quotes(DAYS[0], SYMBOLS, 8_000, seed=6)
    _land(settings, Dataset.QUOTES, quotes, commits=2)
    engine = QueryEngine(settings)
    paths = engine.files(Dataset.QUOTES, ["BBB"], _day_span(DAYS[0]))
    total = sum(pq.ParquetFile(readable(p)).metadata.num_row_groups for p in paths)
    assert len(paths) == 2 and total > 8  # the layout this relies on
    got = engine.quotes(["BBB"], _day_span(DAYS[0]))
    expected = _frame(quotes).filter(pl.col("symbol") == "BBB").sort("ts", "sequence")
    assert got.column("sequence").to_pylist() == expected["sequence"].to_list()
    decoded = engine.tier.files()
    assert 0 < len(decoded) <= total // 2
    held = {s for hot in decoded for s in hot.symbols}
    assert "BBB" in held and len(held) < len(SYMBOLS)  # its neighbours at a boundary at most
    # every symbol afterwards: the rest of the row groups are decoded, and BBB's rows are the same
    everything = engine.quotes(None, _day_span(DAYS[0]))
    assert len(engine.tier.files()) == total
    assert everything.filter(pc.equal(everything["symbol"], "BBB")).equals(got)
    assert engine.last(Dataset.QUOTES, ["BBB"], dt.datetime.combine(DAYS[1], dt.time(), dt.UTC)).column(
        "sequence").to_pylist() == [expected["sequence"][-1]]


def test_a_sub_day_window_cuts_at_the_exact_microsecond(
    engine: QueryEngine, lake: tuple[Settings, pa.Table, pa.Table]
) -> None:
    _, trades, _ = lake
    rows = _frame(trades).filter(pl.col("symbol") == "CCC").sort("ts", "sequence")
    start, end = rows["ts"][100], rows["ts"][250]
    got = engine.trades(["CCC"], TimeRange(start, end))
    inside = rows.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
    assert got.column("sequence").to_pylist() == inside["sequence"].to_list()


def _bars_by_hand(rows: list[dict[str, object]], symbol: str, step: dt.timedelta) -> list[dict[str, object]]:
    """OHLCV per bar in plain Python: open/close by (ts, sequence), VWAP in exact decimals."""
    micros = step // dt.timedelta(microseconds=1)
    bars: dict[int, list[dict[str, object]]] = {}
    for row in sorted((r for r in rows if r["symbol"] == symbol), key=lambda r: (r["ts"], r["sequence"])):
        bar = (row["ts"] - EPOCH) // dt.timedelta(microseconds=1) // micros * micros  # type: ignore[operator]
        bars.setdefault(bar, []).append(row)
    out = []
    for bar, members in sorted(bars.items()):
        prices = [m["price"] for m in members]
        volume = sum(m["size"] for m in members)  # type: ignore[misc]
        value = sum(m["price"] * m["size"] for m in members)  # type: ignore[operator]
        out.append({"bar": bar, "open": prices[0], "high": max(prices), "low": min(prices),  # type: ignore[type-var]
                    "close": prices[-1], "volume": volume, "trades": len(members),
                    "vwap": (value / volume).quantize(CENT)})
    return out


@pytest.mark.parametrize("interval", ["1m", "15m", "1d"])
def test_bars_equal_bars_computed_by_hand(
    engine: QueryEngine, lake: tuple[Settings, pa.Table, pa.Table], interval: str
) -> None:
    _, trades, _ = lake
    step = {"1m": dt.timedelta(minutes=1), "15m": dt.timedelta(minutes=15), "1d": dt.timedelta(days=1)}[interval]
    expected = _bars_by_hand(trades.to_pylist(), "AAA", step)
    got = engine.bars(["AAA"], interval).to_pylist()
    assert len(got) == len(expected) > 0
    for mine, theirs in zip(got, expected, strict=True):
        assert (mine["bar_start"] - EPOCH) // dt.timedelta(microseconds=1) == theirs["bar"]
        for column in ("open", "high", "low", "close", "volume", "trades", "vwap"):
            assert mine[column] == theirs[column], column
    # with the hot tier they came from the files' minute partials, without it from the raw ticks
    assert any(f.has_partials for f in engine.tier.files()) == (engine.settings.query_cache_mb > 0)
    # a window cut mid-minute cannot use minute partials: the raw path gives the same bars for it
    first = got[1]["bar_start"] + dt.timedelta(seconds=7)
    cut = engine.bars(["AAA"], interval, TimeRange(first, first + dt.timedelta(days=1))).to_pylist()
    rows = [r for r in trades.to_pylist() if first <= r["ts"] < first + dt.timedelta(days=1)]
    assert [(b["open"], b["close"], b["trades"], b["vwap"]) for b in cut] == [
        (b["open"], b["close"], b["trades"], b["vwap"]) for b in _bars_by_hand(rows, "AAA", step)]


def test_vwap_over_a_window_and_per_day_is_exact(
    engine: QueryEngine, lake: tuple[Settings, pa.Table, pa.Table]
) -> None:
    _, trades, _ = lake
    span = _day_span(DAYS[0])
    got = {r["symbol"]: r for r in engine.vwap(SYMBOLS, span).to_pylist()}
    for symbol in SYMBOLS:
        rows = [r for r in trades.to_pylist() if r["symbol"] == symbol and r["ts"].date() == DAYS[0]]
        volume = sum(r["size"] for r in rows)
        exact = sum((r["price"] * r["size"] for r in rows), Decimal(0)) / volume
        assert got[symbol]["vwap"] == exact.quantize(CENT)
        assert got[symbol]["volume"] == volume and got[symbol]["trades"] == len(rows)
    daily = engine.vwap(None, None, "1d").to_pylist()
    assert len(daily) == len(SYMBOLS) * len(DAYS)
    assert {(r["symbol"], r["bar_start"].date()) for r in daily} == {(s, d) for s in SYMBOLS for d in DAYS}


def test_last_trade_at_or_before_t_for_one_and_for_many_symbols(
    engine: QueryEngine, lake: tuple[Settings, pa.Table, pa.Table]
) -> None:
    _, trades, _ = lake
    frame = _frame(trades).sort("ts", "sequence")
    at = frame["ts"][frame.height // 3]  # an instant with a trade exactly at it
    got = {r["symbol"]: r for r in engine.last(Dataset.TRADES, None, at).to_pylist()}

    def last_by_hand(symbol: str, moment: dt.datetime) -> dict[str, object]:
        return frame.filter((pl.col("symbol") == symbol) & (pl.col("ts") <= moment)).row(-1, named=True)

    for symbol in SYMBOLS:
        assert got[symbol]["sequence"] == last_by_hand(symbol, at)["sequence"]
        assert got[symbol]["ts"] == last_by_hand(symbol, at)["ts"]
    one = engine.last(Dataset.TRADES, ["CCC"], at)
    assert one.num_rows == 1 and one.column("sequence")[0].as_py() == got["CCC"]["sequence"]
    # on the next day's first minutes the answer may come from the day before: the search crosses days
    early = dt.datetime.combine(DAYS[1], dt.time(0, 0, 1), dt.UTC)
    crossing = engine.last(Dataset.TRADES, SYMBOLS, early).to_pylist()
    assert len(crossing) == len(SYMBOLS)
    for row in crossing:
        assert row["sequence"] == last_by_hand(row["symbol"], early)["sequence"]
    before_all = frame["ts"][0] - dt.timedelta(seconds=1)
    assert engine.last(Dataset.TRADES, SYMBOLS, before_all).num_rows == 0
    assert engine.last(Dataset.TRADES, ["NOPE"], at).num_rows == 0


def test_asof_join_equals_a_brute_force_join(engine: QueryEngine, lake: tuple[Settings, pa.Table, pa.Table]) -> None:
    _, trades, quotes = lake
    trade_rows, quote_rows = _frame(trades), _frame(quotes).sort("ts", "sequence")
    day_two = trade_rows.filter(pl.col("ts").dt.date() == DAYS[1]).sort("ts")
    start = day_two["ts"][day_two.height // 2]  # mid-stream: the prevailing quotes predate the window
    span = TimeRange(start, start + dt.timedelta(hours=2))
    got = engine.asof(["AAA", "BBB"], span).to_pylist()
    expected = trade_rows.filter(pl.col("symbol").is_in(["AAA", "BBB"]) & (pl.col("ts") >= start)
                                 & (pl.col("ts") < span.end))
    assert len(got) == expected.height > 0
    for trade in got[::20]:
        book = quote_rows.filter((pl.col("symbol") == trade["symbol"]) & (pl.col("ts") <= trade["ts"]))
        prevailing = book.row(-1, named=True)
        assert trade["quote_ts"] == prevailing["ts"]
        assert trade["bid_price"] == prevailing["bid_price"] and trade["ask_size"] == prevailing["ask_size"]
    first_quote = quote_rows.filter(pl.col("symbol") == "AAA")["ts"][0]
    early = engine.asof(["AAA"], TimeRange(first_quote - dt.timedelta(hours=1), first_quote)).to_pylist()
    assert early and all(r["quote_ts"] is None for r in early)  # no quote yet: nulls, the trade is kept


def test_asof_join_looks_before_its_window_only_for_symbols_that_trade_before_quoting_in_it(
    lake: tuple[Settings, pa.Table, pa.Table], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prevailing quote at the window's start is read (older files: a first touch's costliest part) only for
    symbols whose first trade in the window comes before their first quote in it; the answers stay exact."""
    settings, trades, quotes = lake
    engine = QueryEngine(settings)
    looked_for: list[list[str]] = []
    last = engine.last

    def watched_last(dataset: Dataset, symbols: list[str] | None, *args: object, **kwargs: object) -> pa.Table:
        looked_for.append(list(symbols or []))
        return last(dataset, symbols, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "last", watched_last)
    trade_rows, quote_rows = _frame(trades), _frame(quotes).sort("ts", "sequence")
    first_quote = {s: quote_rows.filter(pl.col("symbol") == s)["ts"][0] for s in ["AAA", "BBB"]}
    # AAA's window opens on a quote, BBB's on a trade before its first quote in the window
    aaa_start = first_quote["AAA"] + dt.timedelta(hours=1)
    aaa_start = quote_rows.filter((pl.col("symbol") == "AAA") & (pl.col("ts") >= aaa_start))["ts"][0]
    covered = engine.asof(["AAA"], TimeRange(aaa_start, aaa_start + dt.timedelta(minutes=30)))
    assert covered.num_rows > 0 and looked_for == []
    bbb_trades = trade_rows.filter((pl.col("symbol") == "BBB") & (pl.col("ts") > first_quote["BBB"]))
    bbb_start = bbb_trades["ts"][bbb_trades.height // 2]  # a trade's microsecond: it comes before any quote
    window = TimeRange(bbb_start, bbb_start + dt.timedelta(minutes=30))
    if quote_rows.filter((pl.col("symbol") == "BBB") & (pl.col("ts") == bbb_start)).height:
        pytest.fail("the chosen trade shares its microsecond with a quote: pick another seed")
    uncovered = engine.asof(["AAA", "BBB"], window).to_pylist()

    def trades_before_quoting(symbol: str) -> bool:
        def first(rows: pl.DataFrame) -> dt.datetime:
            inside = rows.filter((pl.col("symbol") == symbol) & (pl.col("ts") >= window.start)
                                 & (pl.col("ts") < window.end))
            return inside["ts"].min()  # type: ignore[return-value]

        return first(quote_rows) is None or first(quote_rows) > first(trade_rows)

    assert trades_before_quoting("BBB")
    assert looked_for == [[s for s in ["AAA", "BBB"] if trades_before_quoting(s)]]
    firsts = [r for symbol in ("AAA", "BBB") for r in [r for r in uncovered if r["symbol"] == symbol][:3]]
    for trade in firsts:
        book = quote_rows.filter((pl.col("symbol") == trade["symbol"]) & (pl.col("ts") <= trade["ts"]))
        assert trade["quote_ts"] == book["ts"][-1]  # exact, the prior quote included


def test_asof_join_reads_trades_and_quotes_at_once(
    lake: tuple[Settings, pa.Table, pa.Table], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two reads of an as-of join overlap (from disk, its first touch then waits for the slower of the two, not
    for their sum): the quotes are read on the side-read thread while the caller's thread reads the trades."""
    import threading

    settings, _, _ = lake
    engine = QueryEngine(settings)
    readers: dict[Dataset, str] = {}
    rows = engine._rows

    def watched_rows(dataset: Dataset, *args: object) -> pa.Table:
        readers[dataset] = threading.current_thread().name
        return rows(dataset, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "_rows", watched_rows)
    assert engine.asof(["AAA"], TimeRange(dt.datetime.combine(DAYS[1], dt.time(), dt.UTC))).num_rows > 0
    assert readers[Dataset.TRADES] == threading.current_thread().name
    assert readers[Dataset.QUOTES].startswith("k2-side-read")


def test_asof_join_gives_the_quote_at_the_same_microsecond(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    at = dt.datetime(2026, 3, 2, 1, tzinfo=dt.UTC)
    trades = generate_trades(DAYS[0], ["AAA"], 3, seed=1)
    quotes = generate_quotes(DAYS[0], ["AAA"], 3, seed=1)
    same = pa.array([at, at + dt.timedelta(seconds=1), at + dt.timedelta(seconds=2)], pa.timestamp("us", tz="UTC"))
    trades = trades.set_column(2, "ts", same)
    quotes = quotes.set_column(2, "ts", pa.array([at, at, at + dt.timedelta(seconds=3)],
                                                 pa.timestamp("us", tz="UTC")))
    _land(settings, Dataset.TRADES, trades, 1)
    _land(settings, Dataset.QUOTES, quotes, 1)
    got = QueryEngine(settings).asof(["AAA"]).to_pylist()
    # two quotes at the trade's microsecond: the later one by sequence prevails; the third is in the future
    assert [r["quote_ts"] for r in got] == [at, at, at]
    assert all(r["bid_price"] == quotes.column("bid_price")[1].as_py() for r in got)


def test_time_travel_returns_the_old_rows_after_a_newer_append(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    first = generate_trades(DAYS[0], SYMBOLS, 2_000, seed=1)
    (old_snapshot,) = _land(settings, Dataset.TRADES, first, 1)
    engine = QueryEngine(settings)
    assert engine.count(Dataset.TRADES) == 2_000  # the engine has planned and cached this snapshot
    old_time = dt.datetime.now(dt.UTC)
    later = generate_trades(DAYS[1], SYMBOLS, 3_000, seed=2)
    _land(settings, Dataset.TRADES, later, 1)
    assert engine.count(Dataset.TRADES) == 5_000  # the same engine sees the append (freshness check)
    assert engine.count(Dataset.TRADES, snapshot_id=old_snapshot) == 2_000
    assert engine.count(Dataset.TRADES, as_of=old_time) == 2_000
    assert engine.trades(as_of=old_time).column("trade_id").to_pylist() == first.column("trade_id").to_pylist()
    before_all = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    assert engine.trades(as_of=before_all).num_rows == 0  # the platform knew nothing then


def test_an_append_decodes_only_its_new_manifest(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    rows = generate_trades(DAYS[0], SYMBOLS, 4_000, seed=3)
    _land(settings, Dataset.TRADES, rows.slice(0, 2_000), 4)
    engine = QueryEngine(settings)
    assert engine.count(Dataset.TRADES) == 2_000
    decoded = engine.planner.decoded_manifests
    assert decoded == 4  # fast appends: one manifest per commit
    _land(settings, Dataset.TRADES, rows.slice(2_000), 1)
    assert engine.count(Dataset.TRADES) == 4_000
    assert engine.planner.decoded_manifests == decoded + 1
    engine.count(Dataset.TRADES)
    assert engine.planner.decoded_manifests == decoded + 1  # unchanged table: nothing decoded again


def test_pruning_reads_fewer_files_and_the_same_rows(lake: tuple[Settings, pa.Table, pa.Table]) -> None:
    engine = QueryEngine(lake[0])
    every = engine.files(Dataset.TRADES)
    day = engine.files(Dataset.TRADES, span=_day_span(DAYS[0]))
    symbol_day = engine.files(Dataset.TRADES, ["AAA"], _day_span(DAYS[0]))
    assert len(symbol_day) < len(day) < len(every)
    assert set(symbol_day) <= set(day) <= set(every)


def test_an_unsorted_file_is_read_in_order_and_a_tiny_tier_stays_in_budget(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", query_cache_mb=1)
    rows = generate_trades(DAYS[0], SYMBOLS, 20_000, seed=4)
    table = ensure_table(open_catalog(settings), settings, Dataset.TRADES)
    shuffled = _stamped(rows).take(pa.array(list(reversed(range(rows.num_rows)))))
    table.append(writer.conform(shuffled, table))  # pyiceberg's own append: rows as given, not sorted
    engine = QueryEngine(settings)
    got = engine.trades(["BBB"])
    expected = _frame(rows).filter(pl.col("symbol") == "BBB").sort("ts", "sequence")
    assert got.column("sequence").to_pylist() == expected["sequence"].to_list()
    assert engine.tier.used_bytes <= 1024 * 1024


def test_the_query_commands_answer_like_the_engine(lake: tuple[Settings, pa.Table, pa.Table]) -> None:
    import json
    import os
    import subprocess
    import sys

    settings = lake[0]
    engine = QueryEngine(settings)

    def k2(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "k2.cli", *args], capture_output=True, text=True,
                              env={**os.environ, "K2_HOME": str(settings.home)})

    at = "2026-03-03T15:00:00Z"
    last = k2("query", "last", "--at", at, "-f", "json")
    assert last.returncode == 0, last.stderr
    expected = engine.last(Dataset.TRADES, None, dt.datetime(2026, 3, 3, 15, tzinfo=dt.UTC))
    assert [json.loads(line)["trade_id"] for line in last.stdout.splitlines()] == expected["trade_id"].to_pylist()
    vwap = k2("query", "vwap", "-s", "AAA", "--start", "2026-03-02", "--end", "2026-03-03", "-f", "json")
    assert json.loads(vwap.stdout)["vwap"] == str(engine.vwap(["AAA"], _day_span(DAYS[0]))["vwap"][0].as_py())
    asof = k2("query", "asof", "-s", "BBB", "--start", "2026-03-03", "-f", "csv")
    assert len(asof.stdout.splitlines()) == 1 + engine.asof(["BBB"], TimeRange(
        dt.datetime(2026, 3, 3, tzinfo=dt.UTC))).num_rows
    # time travel to before the lake existed: empty, not an error
    past = k2("query", "trades", "--as-of", "2000-01-01", "-f", "csv")
    assert past.returncode == 0 and len(past.stdout.splitlines()) <= 1
    recent = k2("query", "trades", "--start", "-1d", "-f", "csv")  # relative times parse (nothing that recent)
    assert recent.returncode == 0, recent.stderr
    bad = k2("query", "trades", "--start", "yesterday-ish")
    assert bad.returncode == 2 and "-15m" in bad.stderr and "Traceback" not in bad.stderr
    snapshots = k2("snapshots", "-f", "json")
    assert len(snapshots.stdout.splitlines()) == 7  # 4 + 3 commits


def test_unknown_symbols_get_suggestions_and_parquet_export_is_complete(
    lake: tuple[Settings, pa.Table, pa.Table], tmp_path: Path
) -> None:
    import io
    import os
    import subprocess
    import sys

    import pyarrow.parquet as pq

    settings = lake[0]
    env = {**os.environ, "K2_HOME": str(settings.home)}
    k2 = [sys.executable, "-m", "k2.cli", "query"]
    typo = subprocess.run([*k2, "trades", "-s", "AAB"], capture_output=True, text=True, env=env)
    assert typo.returncode == 1 and "'AAB' (did you mean AAA" in typo.stderr and "Traceback" not in typo.stderr
    assert "the table holds AAA, BBB, CCC, DDD" in typo.stderr
    bars = subprocess.run([*k2, "bars", "-s", "ZZZ"], capture_output=True, text=True, env=env)
    assert bars.returncode == 1 and "no trades for 'ZZZ'" in bars.stderr
    # a known symbol with nothing in the window is an empty answer, not an error
    quiet = subprocess.run([*k2, "trades", "-s", "AAA", "--start", "2000-01-01", "--end", "2000-01-02"],
                           capture_output=True, text=True, env=env)
    assert quiet.returncode == 0, quiet.stderr
    exported = subprocess.run([*k2, "trades", "-f", "parquet"], capture_output=True, env=env)
    assert exported.returncode == 0, exported.stderr
    table = pq.read_table(io.BytesIO(exported.stdout))
    assert table.num_rows == lake[1].num_rows
    assert table.column("trade_id").to_pylist() == QueryEngine(settings).trades().column("trade_id").to_pylist()


@pytest.mark.parametrize("statement, error", [
    ("DELETE FROM trades", "only SELECT"),
    ("INSERT INTO trades SELECT * FROM trades", "only SELECT"),
    ("DROP VIEW trades", "only SELECT"),
    ("COPY (SELECT * FROM trades) TO '/tmp/k2-leak.csv'", "only SELECT"),
    ("ATTACH '/tmp/other.db'", "only SELECT"),
    ("SET enable_external_access = true", "only SELECT"),
    ("SELECT 1; SELECT 2", "exactly one"),
    ("SELECT * FROM trades; DELETE FROM trades", "exactly one"),
    ("SELECT * FROM read_csv('/etc/passwd')", "table functions"),
    ("SELECT * FROM '/etc/passwd'", "unknown table"),
    ("SELECT * FROM glob('/*')", "table functions"),
    ("SELECT * FROM trades WHERE symbol IN (SELECT * FROM read_text('/etc/hostname'))", "table functions"),
    ("SELECT getenv('HOME')", "not allowed"),
    ("SELECT * FROM iceberg_tables", "unknown table"),
    ("SELECT * FROM main.trades", "unknown table"),
    ("SELEC * FROM trades", "does not parse"),
])
def test_the_sql_escape_hatch_refuses_writes_several_statements_and_file_access(
    lake: tuple[Settings, pa.Table, pa.Table], statement: str, error: str
) -> None:
    with pytest.raises(QueryError, match=error):
        QueryEngine(lake[0]).sql(statement)


def test_the_sql_escape_hatch_answers_selects_with_a_row_cap_and_a_time_limit(
    lake: tuple[Settings, pa.Table, pa.Table]
) -> None:
    settings, trades, quotes = lake
    engine = QueryEngine(settings)
    counts = engine.sql("WITH t AS (SELECT symbol FROM trades) SELECT symbol, count(*) AS n FROM t "
                        "GROUP BY symbol ORDER BY symbol").table.to_pylist()
    expected = _frame(trades).group_by("symbol").len().sort("symbol")
    assert [(r["symbol"], r["n"]) for r in counts] == list(zip(expected["symbol"], expected["len"], strict=True))
    joined = engine.sql("SELECT count(*) AS n FROM quotes q JOIN reference r USING (symbol)").table
    assert joined.column("n")[0].as_py() == 0  # no reference rows landed in this lake: an empty view, no error
    capped = engine.sql("SELECT * FROM quotes", max_rows=1_000)
    assert capped.table.num_rows == 1_000 and capped.truncated
    assert not engine.sql("SELECT * FROM quotes", max_rows=quotes.num_rows).truncated
    with pytest.raises(QueryError, match=r"longer than 0\.2s"):
        engine.sql("SELECT count(*) FROM quotes a, quotes b, quotes c WHERE a.sequence + b.sequence = c.sequence - 1e9",
                   timeout_seconds=0.2)


def test_daily_summary_uses_the_exchanges_session_date(tmp_path: Path) -> None:
    """ASX trades either side of midnight UTC: 20:57 UTC is 07:57 the next morning in Sydney (AEDT, +11)."""
    from zoneinfo import ZoneInfo

    from k2.sources.generator import generate_reference

    settings = Settings(home=tmp_path / "home")
    base = dt.datetime(2026, 3, 2, 18, 0, tzinfo=dt.UTC)
    steps = [dt.timedelta(minutes=61 * i) for i in range(25)]  # 18:00 UTC on the 2nd to ~19:25 UTC on the 3rd
    parts = []
    for exchange, symbol in (("ASX", "BHP"), ("ASX", "CBA"), ("XYZ", "FOO")):
        rows = generate_trades(DAYS[0], [symbol], len(steps), seed=3, exchange=exchange)
        rows = rows.set_column(2, "ts", pa.array([base + s for s in steps], pa.timestamp("us", tz="UTC")))
        parts.append(rows)
    trades = pa.concat_tables(parts)
    _land(settings, Dataset.TRADES, trades, commits=3)
    reference = generate_reference(["BHP"], exchange="ASX")
    reference = reference.set_column(reference.schema.get_field_index("timezone"), "timezone",
                                     pa.array(["Australia/Sydney"]))
    _land(settings, Dataset.REFERENCE, reference, commits=1)  # CBA has no reference row: ASX's zone applies

    def by_hand(symbol: str, zone: str) -> dict[dt.date, dict[str, object]]:
        days: dict[dt.date, list[dict[str, object]]] = {}
        for row in sorted((r for r in trades.to_pylist() if r["symbol"] == symbol),
                          key=lambda r: (r["ts"], r["sequence"])):
            days.setdefault(row["ts"].astimezone(ZoneInfo(zone)).date(), []).append(row)  # type: ignore[attr-defined]
        return {day: {"open": rows[0]["price"], "close": rows[-1]["price"], "trades": len(rows),
                      "volume": sum(r["size"] for r in rows)} for day, rows in days.items()}  # type: ignore[misc]

    for cache in (1024, 0):
        engine = QueryEngine(settings.model_copy(update={"query_cache_mb": cache}))
        got = engine.summary().to_pylist()
        for symbol, zone in (("BHP", "Australia/Sydney"), ("CBA", "Australia/Sydney"), ("FOO", "UTC")):
            mine = {r["session_date"]: r for r in got if r["symbol"] == symbol}
            expected = by_hand(symbol, zone)
            assert set(mine) == set(expected), symbol
            for day, figures in expected.items():
                assert mine[day]["timezone"] == zone
                assert {k: mine[day][k] for k in figures} == figures, (symbol, day)
        # the 18:00 UTC trade on the 2nd is in Sydney's session of the 3rd; after 13:00 UTC on the 3rd, the 4th
        assert {r["session_date"] for r in got if r["symbol"] == "BHP"} == {dt.date(2026, 3, 3), dt.date(2026, 3, 4)}
        one_day = engine.summary(["BHP"], dt.date(2026, 3, 3), dt.date(2026, 3, 3)).to_pylist()
        assert [r["session_date"] for r in one_day] == [dt.date(2026, 3, 3)]
        assert one_day[0]["trades"] == by_hand("BHP", "Australia/Sydney")[dt.date(2026, 3, 3)]["trades"]


def test_adjusted_bars_on_a_known_split_and_dividend(lake: tuple[Settings, pa.Table, pa.Table], tmp_path: Path) -> None:
    """AAA splits 2:1 and BBB pays 0.50 going ex on the second day (00:00 New York, K2X's zone): first-day bars
    are scaled by 1/2 (volume x2) and by 1 - 0.50/close before the ex-date; second-day bars stay raw."""
    import shutil

    from k2.query.adjust import Adjust
    from k2.schemas import arrow_schema

    settings = Settings(home=tmp_path / "home")
    shutil.copytree(lake[0].home, settings.home)
    schema = arrow_schema(Dataset.CORPORATE_ACTIONS).remove(arrow_schema(Dataset.CORPORATE_ACTIONS)
                                                            .get_field_index("ingest_ts"))
    actions = pa.Table.from_pylist([
        {"exchange": "K2X", "symbol": "AAA", "action": "SPLIT", "ex_date": DAYS[1], "ratio": "2:1"},
        {"exchange": "K2X", "symbol": "BBB", "action": "DIVIDEND", "ex_date": DAYS[1], "amount": Decimal("0.5")},
    ], schema=schema)
    _land(settings, Dataset.CORPORATE_ACTIONS, actions, commits=1)
    engine = QueryEngine(settings)
    raw = engine.bars(["AAA", "BBB"], "1d").to_pylist()
    adjusted = engine.bars(["AAA", "BBB"], "1d", adjust=Adjust.ALL).to_pylist()
    splits_only = engine.bars(["AAA", "BBB"], "1d", adjust=Adjust.SPLITS).to_pylist()
    assert engine.bars(["AAA", "BBB"], "1d", adjust=Adjust.NONE).to_pylist() == raw
    bbb_close = next(r for r in raw if r["symbol"] == "BBB")["close"]
    dividend_factor = 1 - Decimal("0.5") / bbb_close
    for before, after, split in zip(raw, adjusted, splits_only, strict=True):
        first_day = before["bar_start"].date() == DAYS[0]
        if before["symbol"] == "AAA":
            factor, volume = (Decimal("0.5"), 2) if first_day else (Decimal(1), 1)
            assert split == after
        else:
            factor, volume = (dividend_factor, 1) if first_day else (Decimal(1), 1)
            assert split == before  # a dividend is not a split
        for column in ("open", "high", "low", "close", "vwap"):
            assert abs(after[column] - before[column] * factor) <= Decimal("0.00000001"), (before["symbol"], column)
        assert after["volume"] == before["volume"] * volume and after["trades"] == before["trades"]
    daily = engine.summary(["AAA"], adjust=Adjust.SPLITS).to_pylist()
    assert [r["close"] for r in daily] == [r["close"] for r in adjusted if r["symbol"] == "AAA"]


def test_one_engine_serves_threads_at_once(lake: tuple[Settings, pa.Table, pa.Table]) -> None:
    """The API will share one engine between request threads: concurrent queries give the answers they give alone."""
    for cache in (1024, 0):
        _same_answers_in_threads(QueryEngine(lake[0].model_copy(update={"query_cache_mb": cache})))


def _same_answers_in_threads(engine: QueryEngine) -> None:
    from concurrent.futures import ThreadPoolExecutor

    calls = [
        lambda: engine.bars(["AAA"], "5m"), lambda: engine.vwap(SYMBOLS, None, "1h"),
        lambda: engine.trades(["BBB"]), lambda: engine.asof(["CCC"]), lambda: engine.counts(),
        lambda: engine.last(Dataset.QUOTES, None, dt.datetime(2026, 3, 3, 18, tzinfo=dt.UTC)),
    ] * 4
    alone = [call() for call in calls]
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda call: call(), calls))
    assert all(a.equals(b) for a, b in zip(alone, together, strict=True))
