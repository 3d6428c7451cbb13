"""K2's query engine over its Iceberg tables: the one object the CLI, the API and Python users call.

Plans are kept per table snapshot (query/plan.py), decoded files in a hot tier (query/tier.py), and DuckDB
aggregates the selected Arrow rows. Why this shape, with numbers: docs/decisions/0011-query-engine.md.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import difflib
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.errors import QueryError, UnknownSymbolError
from k2.lake.fileio import readable
from k2.lake.metadata import COMPACTION_PROPERTY, TableState
from k2.lake.offsets import OFFSETS_PROPERTY, LandedOffsets
from k2.lake.partials import MINUTE_US, Partials, raw_partials
from k2.query.adjust import PRICE_COLUMNS, Adjust, adjust_bars
from k2.query.aggregate import Rolled, micros_array, partial_step, price_array, roll_up
from k2.query.asof import asof_join, quoted_late
from k2.query.duck import Duck
from k2.query.plan import Plan, Planner, to_micros
from k2.query.reader import TICK_COLUMNS, Reader, conform, where
from k2.query.sessions import Zones, session_days
from k2.query.stored import StoredBars
from k2.query.tier import HotTier
from k2.query.timing import timed
from k2.schemas import Dataset, arrow_schema
from k2.settings import Settings

if TYPE_CHECKING:
    import duckdb

    from k2.query.sql import SqlResult

_INTERVAL = re.compile(r"^(\d{1,9})\s*(s|sec|m|min|h|hour|d|day)$")
_UNITS = {"s": "second", "sec": "second", "m": "minute", "min": "minute", "h": "hour", "hour": "hour",
          "d": "day", "day": "day"}
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400}
MAX_INTERVAL_DAYS = 366


_PRICE = pa.decimal128(18, 8)
_TS = pa.timestamp("us", tz="UTC")
BARS_SCHEMA = pa.schema([
    ("symbol", pa.string()), ("bar_start", _TS), ("open", _PRICE), ("high", _PRICE), ("low", _PRICE),
    ("close", _PRICE), ("volume", pa.int64()), ("trades", pa.int64()), ("vwap", _PRICE),
])
VWAP_SCHEMA = pa.schema([
    ("symbol", pa.string()), ("vwap", _PRICE), ("volume", pa.int64()), ("trades", pa.int64()),
    ("first_ts", _TS), ("last_ts", _TS),
])
VWAP_BUCKET_SCHEMA = VWAP_SCHEMA.insert(1, pa.field("bar_start", _TS))
SUMMARY_SCHEMA = pa.schema([
    ("exchange", pa.string()), ("symbol", pa.string()), ("session_date", pa.date32()), ("timezone", pa.string()),
    ("open", _PRICE), ("high", _PRICE), ("low", _PRICE), ("close", _PRICE), ("volume", pa.int64()),
    ("trades", pa.int64()), ("vwap", _PRICE), ("first_ts", _TS), ("last_ts", _TS),
])
EPOCH_DAY = dt.date(1970, 1, 1)
COUNTS_SCHEMA = pa.schema([
    ("exchange", pa.string()), ("symbol", pa.string()), ("trades", pa.int64()), ("first_ts", _TS), ("last_ts", _TS),
])


QUALITY_VIEW_SCHEMA = pa.schema([
    ("dataset", pa.string()), ("exchange", pa.string()), ("symbol", pa.string()), ("day", pa.date32()),
    *[(name, pa.int64()) for name in ("received", "landed", "duplicates", "late", "first_sequence", "last_sequence",
                                       "gaps", "missing")],
])


SNAPSHOTS_SCHEMA = pa.schema([
    ("snapshot_id", pa.int64()), ("committed_at", _TS), ("operation", pa.string()), ("added_rows", pa.int64()),
    ("total_rows", pa.int64()), ("kafka_offsets", pa.string()), ("compaction", pa.string()), ("tags", pa.string()),
])


def interval_micros(text: str) -> int:
    """'1s', '5min', '1h', '1d' → microseconds; at most a year."""
    match = _INTERVAL.match(text.strip().lower())
    if not match or int(match.group(1)) <= 0:
        raise QueryError(f"interval {text!r} is not like 1m, 5m, 15m, 1h, 1d")
    count, unit = int(match.group(1)), _UNITS[match.group(2)]
    if count * _UNIT_SECONDS[unit] > MAX_INTERVAL_DAYS * 86_400:
        raise QueryError(f"interval {text!r} is longer than {MAX_INTERVAL_DAYS} days")
    return count * _UNIT_SECONDS[unit] * 1_000_000


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@dataclass(frozen=True)
class TimeRange:
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def __post_init__(self) -> None:
        if self.start and self.end and _utc(self.start) >= _utc(self.end):
            raise QueryError(f"start {self.start.isoformat()} is not before end {self.end.isoformat()}")



_SIDE_READER: ThreadPoolExecutor | None = None
_SIDE_LOCK = threading.Lock()


def _side_reader() -> ThreadPoolExecutor:
    """One thread per process for the second read of a two-table query (its own: the hot tier's loader pool may be
    busy with this very query's files)."""
    global _SIDE_READER
    with _SIDE_LOCK:
        if _SIDE_READER is None:
            _SIDE_READER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="k2-side-read")
        return _SIDE_READER


class QueryEngine:
    """Read-side API used by the CLI, the API and the demo. Keep one per process: it caches plans per table
    snapshot and decoded files (the hot tier), and checks the catalog for a newer snapshot on every query."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # one database, opened on first use; every query runs on its own cursor (registrations stay local to it;
        # threads may share the engine: the API serves requests concurrently)
        self._duck = Duck(settings)
        self._planner = Planner(settings)  # reads the catalog and metadata without pyiceberg (lake/metadata.py)
        self._tier = HotTier(settings.query_cache_mb * 1024 * 1024)
        self._reader = Reader(self._tier, self._duck)
        self._stored = StoredBars(self._planner)

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def planner(self) -> Planner:
        return self._planner

    @property
    def tier(self) -> HotTier:
        return self._tier

    def close(self) -> None:
        self._duck.close()
        self._tier.clear()

    def table(self, dataset: Dataset) -> TableState | None:
        """The table's current metadata (snapshots, schema field ids, partition specs), None before it exists."""
        return self._planner.table(dataset)

    def version(self, dataset: Dataset) -> str | None:
        """An opaque token that changes with every commit to the table (append, compaction, expiry, rollback):
        answers computed at one version hold for as long as it stays (None: no table yet)."""
        state = self.table(dataset)
        return state.metadata_location if state is not None else None

    def snapshots(self, dataset: Dataset) -> pa.Table:
        """The table's current history, newest first, with the Kafka offsets each snapshot had landed up to, the
        files a compaction rewrote, and the tags that pin a snapshot (kept by expiry)."""
        table = self.table(dataset)
        if table is None:
            return SNAPSHOTS_SCHEMA.empty_table()
        tags: dict[int, list[str]] = {}
        for name, (snapshot_id, kind) in sorted(table.refs.items()):
            if kind == "tag":
                tags.setdefault(snapshot_id, []).append(name)
        rows = []
        for snapshot in table.ancestry():
            extra = snapshot.summary.additional_properties
            rows.append({
                "snapshot_id": snapshot.snapshot_id,
                "committed_at": snapshot.committed_at,
                "operation": snapshot.summary.operation,
                "added_rows": int(extra.get("added-records", 0)),
                "total_rows": int(extra.get("total-records", 0)),
                "kafka_offsets": _describe_offsets(snapshot.property_value(OFFSETS_PROPERTY)),
                "compaction": snapshot.property_value(COMPACTION_PROPERTY),  # "<files read> -> <files written>"
                "tags": ",".join(tags.get(snapshot.snapshot_id, [])) or None,
            })
        return pa.Table.from_pylist(rows, schema=SNAPSHOTS_SCHEMA)

    def _plan(self, dataset: Dataset, symbols: list[str] | None, span: TimeRange, snapshot_id: int | None,
              as_of: dt.datetime | None = None) -> Plan:
        return self._planner.plan(dataset, symbols, span.start, span.end, snapshot_id, as_of)

    def files(
        self, dataset: Dataset, symbols: list[str] | None = None, span: TimeRange | None = None,
        snapshot_id: int | None = None,
    ) -> list[str]:
        """Data files that may hold matching rows, after pruning on time, symbol bounds and symbol bucket."""
        return self._plan(dataset, symbols, span or TimeRange(), snapshot_id).paths

    def symbols(self, dataset: Dataset = Dataset.TRADES) -> list[str]:
        """Every symbol the table holds now, sorted (reads only the symbol column)."""
        plan = self._plan(dataset, None, TimeRange(), None)
        if not plan.paths:
            return []
        local = [readable(p) for p in plan.paths]
        with self._cursor() as con:
            rows = con.execute("SELECT DISTINCT symbol FROM read_parquet(?) ORDER BY symbol", [local]).fetchall()
        return [str(r[0]) for r in rows]

    @timed("sql")
    def sql(self, text: str, max_rows: int | None = None, timeout_seconds: float | None = None) -> SqlResult:
        """One read-only SELECT over the views trades, quotes, reference and corporate_actions (current
        snapshots), with a row cap and a time limit (see query/sql.py)."""
        from k2.query.sql import VIEWS, run_sql  # DuckDB's parser: imported by the queries that need it

        files = {}
        for dataset in VIEWS.values():
            plan = self._plan(dataset, None, TimeRange(), None)
            files[dataset] = [readable(p) for p in plan.paths]
        return run_sql(text, files, max_rows or self._settings.query_sql_max_rows,
                       timeout_seconds or self._settings.query_sql_timeout_seconds, self._settings)

    def check_symbols(self, dataset: Dataset, symbols: list[str]) -> None:
        """UnknownSymbolError naming each symbol the table never held, with the closest ones it does hold."""
        known = self.symbols(dataset)
        unknown = [s for s in symbols if s not in set(known)]
        if not unknown:
            return
        hints = []
        for symbol in unknown:
            close = difflib.get_close_matches(symbol, known, n=3, cutoff=0.5)
            hints.append(f"{symbol!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        listed = ", ".join(known[:20]) + (f" … and {len(known) - 20} more" if len(known) > 20 else "")
        raise UnknownSymbolError(
            f"no {dataset.value} for {'; '.join(hints)}; the table holds {listed or 'nothing yet'}"
        )

    @timed("ticks")
    def ticks(
        self, dataset: Dataset, symbols: list[str] | None = None, span: TimeRange | None = None,
        limit: int | None = None, snapshot_id: int | None = None, as_of: dt.datetime | None = None,
        by_symbol: bool = False,
    ) -> pa.Table:
        """Trades or quotes in time order (ts, symbol, sequence), or (symbol, ts, sequence) when `by_symbol`."""
        rows = self._rows(dataset, symbols, span or TimeRange(), snapshot_id, as_of, by_symbol)
        return rows.slice(0, limit) if limit else rows

    def _rows(self, dataset: Dataset, symbols: list[str] | None, span: TimeRange, snapshot_id: int | None,
              as_of: dt.datetime | None, by_symbol: bool) -> pa.Table:
        plan = self._plan(dataset, symbols, span, snapshot_id, as_of)
        return self._reader.read(plan, arrow_schema(dataset), symbols, span.start, span.end, by_time=not by_symbol)

    def count(
        self, dataset: Dataset, symbols: list[str] | None = None, span: TimeRange | None = None,
        snapshot_id: int | None = None, as_of: dt.datetime | None = None,
    ) -> int:
        """How many rows `ticks` would return without a limit."""
        span = span or TimeRange()
        plan = self._plan(dataset, symbols, span, snapshot_id, as_of)
        return self._reader.count(plan, symbols, span.start, span.end)

    def trades(
        self, symbols: list[str] | None = None, span: TimeRange | None = None, limit: int | None = None,
        snapshot_id: int | None = None, as_of: dt.datetime | None = None,
    ) -> pa.Table:
        return self.ticks(Dataset.TRADES, symbols, span, limit, snapshot_id, as_of)

    def quotes(
        self, symbols: list[str] | None = None, span: TimeRange | None = None, limit: int | None = None,
        snapshot_id: int | None = None, as_of: dt.datetime | None = None,
    ) -> pa.Table:
        return self.ticks(Dataset.QUOTES, symbols, span, limit, snapshot_id, as_of)

    def reference(self, dataset: Dataset = Dataset.REFERENCE, symbols: list[str] | None = None) -> pa.Table:
        """Instruments (valid_from order) or corporate actions (ex_date order) — small, unpartitioned tables."""
        plan = self._plan(dataset, symbols, TimeRange(), None)
        if not plan.paths:
            return arrow_schema(dataset).empty_table()
        clauses, params = where(symbols, None, None)
        order = "valid_from" if dataset is Dataset.REFERENCE else "ex_date"
        sql = (f"SELECT {TICK_COLUMNS} FROM read_parquet(?, union_by_name = true, hive_partitioning = false) "
               f"WHERE {clauses} "
               f"ORDER BY symbol, {order}")
        local = [readable(p) for p in plan.paths]
        with self._cursor() as con:
            return conform(con.execute(sql, [local, *params]).to_arrow_table(), arrow_schema(dataset))

    @timed("bars")
    def bars(
        self, symbols: list[str] | None = None, interval: str = "1m", span: TimeRange | None = None,
        snapshot_id: int | None = None, as_of: dt.datetime | None = None, adjust: Adjust = Adjust.NONE,
    ) -> pa.Table:
        """OHLCV bars per symbol on UTC boundaries; open/close are the first/last trade by (ts, sequence) in each
        bar, VWAP is exact (integer arithmetic, rounded half to even at 8 decimals). `adjust` back-adjusts
        prices and volumes for splits (and cash dividends) from the corporate actions (query/adjust.py)."""
        bars = self._bars(symbols, interval, span, snapshot_id, as_of)
        return self.adjusted(bars, adjust, "bar_start", interval_micros(interval))

    def adjusted(
        self, bars: pa.Table, adjust: Adjust, time_column: str, step_us: int = 0,
        price_columns: tuple[str, ...] = PRICE_COLUMNS, volume_columns: tuple[str, ...] = ("volume",),
    ) -> pa.Table:
        """`bars` (or ticks: `step_us` 1 on their ts) back-adjusted for corporate actions (query/adjust.py)."""
        if adjust is Adjust.NONE or bars.num_rows == 0:
            return bars
        actions = self.reference(Dataset.CORPORATE_ACTIONS, pc.unique(bars.column("symbol")).to_pylist())
        zones = Zones(self.reference(Dataset.REFERENCE))
        exchange_of = dict(zip(actions.column("symbol").to_pylist(), actions.column("exchange").to_pylist(),
                               strict=True))

        def close_before(symbol: str, moment: dt.datetime) -> Decimal | None:
            found = self.last(Dataset.TRADES, [symbol], moment - dt.timedelta(microseconds=1))
            return found.column("price")[0].as_py() if found.num_rows else None

        return adjust_bars(bars, actions, adjust, lambda s: zones.zone(exchange_of.get(s, ""), s), close_before,
                           time_column, step_us, price_columns, volume_columns)

    def _bars(
        self, symbols: list[str] | None, interval: str, span: TimeRange | None, snapshot_id: int | None,
        as_of: dt.datetime | None,
    ) -> pa.Table:
        span = span or TimeRange()
        step_us = interval_micros(interval)
        rolled = self._rolled(symbols, span, step_us, snapshot_id, as_of)
        if rolled is not None:
            return pa.table({
                "symbol": pa.array(rolled.symbol, pa.string()), "bar_start": micros_array(rolled.bar_start),
                "open": price_array(rolled.open), "high": price_array(rolled.high), "low": price_array(rolled.low),
                "close": price_array(rolled.close), "volume": rolled.volume, "trades": rolled.trades,
                "vwap": price_array(rolled.vwap),
            }, schema=BARS_SCHEMA)
        # integer bucketing on the epoch: time_bucket() on TIMESTAMPTZ goes through ICU calendar code (~100x)
        result = self._aggregate_trades(
            symbols, span, snapshot_id, as_of,
            """SELECT symbol, (epoch_us(ts) // ?) * ? AS bar_start,
                   arg_min(price, (ts, sequence)) AS open, max(price) AS high, min(price) AS low,
                   arg_max(price, (ts, sequence)) AS close, sum(size)::BIGINT AS volume, count(*) AS trades,
                   CAST(sum(price * size) / sum(size) AS DECIMAL(18, 8)) AS vwap
               FROM ticks GROUP BY ALL ORDER BY symbol, bar_start""",
            [step_us, step_us],
        )
        return result.set_column(1, "bar_start", result.column("bar_start").cast(_TS)).cast(BARS_SCHEMA)

    def _aggregate_trades(self, symbols: list[str] | None, span: TimeRange, snapshot_id: int | None,
                          as_of: dt.datetime | None, select: str, params: list[object]) -> pa.Table:
        """Run `select` (over a relation named `ticks`; its parameters all before FROM) on the matching trades:
        the hot tier's rows when it is on, else DuckDB straight over the planned files (a one-shot process
        should not decode every row into Arrow just to aggregate it again)."""
        if self._tier.budget > 0:
            rows = self.ticks(Dataset.TRADES, symbols, span, snapshot_id=snapshot_id, as_of=as_of, by_symbol=True)
            with self._cursor() as con:
                con.register("ticks", rows)
                result: pa.Table = con.execute(select, params).to_arrow_table()
                return result
        plan = self._plan(Dataset.TRADES, symbols, span, snapshot_id, as_of)
        local = [readable(p) for p in plan.paths]
        clauses, where_params = where(symbols, span.start, span.end)
        source = (f"(SELECT {TICK_COLUMNS} FROM read_parquet(?, union_by_name = true, hive_partitioning = false) "
                  f"WHERE {clauses}) AS ticks")
        with self._cursor() as con:
            if not local:  # an empty relation of the right columns
                source = "(SELECT * FROM _k2_empty) AS ticks"
                con.register("_k2_empty", arrow_schema(Dataset.TRADES).empty_table())
            sql = select.replace("FROM ticks", f"FROM {source}", 1)
            extra = [local, *where_params] if local else []
            return con.execute(sql, [*params, *extra]).to_arrow_table()

    def _cursor(self) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]:
        return self._duck.cursor()

    def _rolled(self, symbols: list[str] | None, span: TimeRange, step_us: int | None, snapshot_id: int | None,
                as_of: dt.datetime | None) -> Rolled | None:
        """Bars from minute partials, when the interval and window allow it (see aggregate.py)."""
        partials = self._partials(symbols, span, step_us, snapshot_id, as_of)
        return roll_up(partials, step_us) if partials is not None else None

    def _partials(self, symbols: list[str] | None, span: TimeRange, step_us: int | None, snapshot_id: int | None,
                  as_of: dt.datetime | None) -> Partials | None:
        """Partials from the hot tier when it holds every planned file already (fastest: in memory), else from
        the materialized bar table when it covers the snapshot, else from the tier after loading the files; None
        when only raw ticks can answer (window or interval not on minute boundaries, sums beyond 64 bits)."""
        plan = self._plan(Dataset.TRADES, symbols, span, snapshot_id, as_of)
        start_us = to_micros(span.start) if span.start is not None else None
        end_us = to_micros(span.end) if span.end is not None else None
        if partial_step(step_us, start_us, end_us) is None:
            return None
        if not self._tier.holds(plan.paths, symbols):
            stored = self._stored.partials(plan, symbols, span.start, span.end, step_us)
            if stored is not None:
                return stored
        return self._reader.partials(plan, symbols, span.start, span.end, step_us)

    @timed("vwap")
    def vwap(
        self, symbols: list[str] | None = None, span: TimeRange | None = None, interval: str | None = None,
        snapshot_id: int | None = None, as_of: dt.datetime | None = None,
    ) -> pa.Table:
        """Volume-weighted average price per symbol over the window, or per UTC bucket of `interval` within it
        (exact: the sum of price x size in 38-digit decimals)."""
        span = span or TimeRange()
        step_us = interval_micros(interval) if interval else None
        schema = VWAP_BUCKET_SCHEMA if step_us else VWAP_SCHEMA
        rolled = self._rolled(symbols, span, step_us, snapshot_id, as_of)
        if rolled is not None:
            columns = {
                "symbol": pa.array(rolled.symbol, pa.string()), "bar_start": micros_array(rolled.bar_start),
                "vwap": price_array(rolled.vwap), "volume": rolled.volume, "trades": rolled.trades,
                "first_ts": micros_array(rolled.first_ts), "last_ts": micros_array(rolled.last_ts),
            }
            return pa.table({f.name: columns[f.name] for f in schema}, schema=schema)
        bucket = "(epoch_us(ts) // ?) * ? AS bar_start, " if step_us else ""
        result = self._aggregate_trades(
            symbols, span, snapshot_id, as_of,
            f"""SELECT symbol, {bucket}CAST(sum(price * size) / sum(size) AS DECIMAL(18, 8)) AS vwap,
                   sum(size)::BIGINT AS volume, count(*) AS trades, min(ts) AS first_ts, max(ts) AS last_ts
               FROM ticks GROUP BY ALL ORDER BY ALL""",
            [step_us, step_us] if step_us else [],
        )
        if step_us:
            result = result.set_column(1, "bar_start", result.column("bar_start").cast(_TS))
        return result.cast(schema)

    @timed("summary")
    def summary(
        self, symbols: list[str] | None = None, first_day: dt.date | None = None, last_day: dt.date | None = None,
        snapshot_id: int | None = None, as_of: dt.datetime | None = None, adjust: Adjust = Adjust.NONE,
    ) -> pa.Table:
        """Daily figures per symbol and session date (the exchange's own calendar day, see query/sessions.py):
        open, high, low, close, volume, trades, VWAP, first and last trade time, and the zone used."""
        zones = Zones(self.reference(Dataset.REFERENCE))
        pad = dt.timedelta(days=1)  # no zone is more than a day from UTC: read a day more on each side
        span = TimeRange(
            dt.datetime.combine(first_day, dt.time(), dt.UTC) - pad if first_day else None,
            dt.datetime.combine(last_day, dt.time(), dt.UTC) + 2 * pad if last_day else None,
        )
        partials = self._partials(symbols, span, MINUTE_US, snapshot_id, as_of)
        if partials is None:
            rows = self.ticks(Dataset.TRADES, symbols, span, snapshot_id=snapshot_id, as_of=as_of, by_symbol=True)
            partials = raw_partials(rows)
        if partials is None or len(partials) == 0:
            return SUMMARY_SCHEMA.empty_table()
        zone = zones.of(partials.exchange, partials.symbol)
        days = session_days(partials.minute, zone)
        low = (first_day - EPOCH_DAY).days if first_day else None
        high = (last_day - EPOCH_DAY).days if last_day else None
        keep = np.ones(len(days), bool) if low is None else days >= low
        if high is not None:
            keep &= days <= high
        partials, days, zone = partials.take(np.flatnonzero(keep)), days[keep], zone[keep]
        rolled = roll_up(partials, None, buckets=days)
        if rolled is None:
            raise QueryError("the day's value sum does not fit 64-bit integers; narrow the query")
        used = dict(zip(partials.symbol.tolist(), zone.tolist(), strict=True))
        return self.adjusted(pa.table({
            "exchange": pa.array(rolled.exchange, pa.string()), "symbol": pa.array(rolled.symbol, pa.string()),
            "session_date": pa.array(rolled.bar_start.astype("datetime64[D]"), pa.date32()),
            "timezone": pa.array([used[s] for s in rolled.symbol.tolist()], pa.string()),
            "open": price_array(rolled.open), "high": price_array(rolled.high), "low": price_array(rolled.low),
            "close": price_array(rolled.close), "volume": rolled.volume, "trades": rolled.trades,
            "vwap": price_array(rolled.vwap), "first_ts": micros_array(rolled.first_ts),
            "last_ts": micros_array(rolled.last_ts),
        }, schema=SUMMARY_SCHEMA), adjust, "session_date")

    @timed("last")
    def last(
        self, dataset: Dataset, symbols: list[str] | None, at: dt.datetime, snapshot_id: int | None = None,
        as_of: dt.datetime | None = None,
    ) -> pa.Table:
        """The last trade or quote at or before `at` for each symbol (every symbol when None), by (ts, sequence):
        a point-in-time snapshot of the market. Symbols with nothing before `at` are left out."""
        end = at + dt.timedelta(microseconds=1)
        plan = self._planner.plan(dataset, symbols, None, end, snapshot_id, as_of)
        return self._reader.last(plan, arrow_schema(dataset), symbols, end)

    @timed("asof")
    def asof(
        self, symbols: list[str] | None = None, span: TimeRange | None = None, snapshot_id: int | None = None,
        as_of: dt.datetime | None = None,
    ) -> pa.Table:
        """Every trade with the quote prevailing at its time: the last quote of its symbol with ts ≤ the trade's
        (ties go to the quote: it was on the book when the trade printed). Trades before any quote get nulls."""
        span = span or TimeRange()
        # the quotes are read on another thread while this one reads the trades: from disk, the two reads overlap
        # (Parquet decoding releases the GIL), and a first-touch join waits for the slower, not for the sum
        quoting = _side_reader().submit(self._rows, Dataset.QUOTES, symbols, span, snapshot_id, as_of, True)
        trades = self._rows(Dataset.TRADES, symbols, span, snapshot_id, as_of, True)
        quotes = quoting.result()
        prior = None
        late = quoted_late(trades, quotes) if span.start is not None and trades.num_rows else []
        if late and span.start is not None:  # the quotes prevailing at the start, for symbols trading before quoting
            prior = self.last(Dataset.QUOTES, late, span.start - dt.timedelta(microseconds=1),
                              snapshot_id=snapshot_id, as_of=as_of)
        return asof_join(trades, quotes, prior)

    @timed("counts")
    def counts(
        self, symbols: list[str] | None = None, span: TimeRange | None = None, snapshot_id: int | None = None
    ) -> pa.Table:
        """Rows and time span per (exchange, symbol)."""
        span = span or TimeRange()
        result = self._aggregate_trades(
            symbols, span, snapshot_id, None,
            "SELECT exchange, symbol, count(*) AS trades, min(ts) AS first_ts, max(ts) AS last_ts "
            "FROM ticks GROUP BY ALL ORDER BY exchange, symbol",
            [],
        )
        return result.cast(COUNTS_SCHEMA)

    @timed("quality")
    def quality(self, symbols: list[str] | None = None) -> pa.Table:
        """Per (dataset, exchange, symbol, day): rows received/landed, duplicates dropped, late rows, and the
        current gaps (count and missing sequence numbers) with the landed sequence span. Only batches in each data
        table's current ancestry count: a rolled-back batch's counts are gone with its rows."""
        from k2.lake.quality import BATCH_PROPERTY, QUALITY_TABLE, landed_batches

        files = [readable(p) for p in self._planner.plan(QUALITY_TABLE).paths]
        if not files:
            return QUALITY_VIEW_SCHEMA.empty_table()
        tables = [t for d in Dataset if (t := self.table(d)) is not None]
        batches = [b for t in tables for b in landed_batches(t.properties, t)]
        # a batch whose snapshot expired was in the history when it did (expiry deletes rolled-back ones first)
        kept = [b for t in tables for s in t.snapshots if (b := s.property_value(BATCH_PROPERTY))]
        snapshots = [s.snapshot_id for t in tables for s in t.ancestry()]  # rows from before batch ids
        clauses, params = where(symbols, None, None)
        with self._cursor() as con:
            con.register("_k2_batches", pa.table({"batch": pa.array(batches, pa.string())}))
            con.register("_k2_snapshots", pa.table({"snapshot_id": pa.array(snapshots, pa.int64())}))
            con.register("_k2_kept", pa.table({"batch": pa.array(kept, pa.string())}))
            result: pa.Table = con.execute(
                "SELECT dataset, exchange, symbol, day, sum(received)::BIGINT AS received, "
                "sum(landed)::BIGINT AS landed, sum(duplicates)::BIGINT AS duplicates, sum(late)::BIGINT AS late, "
                "arg_max(first_sequence, committed_at) AS first_sequence, "
                "arg_max(last_sequence, committed_at) AS last_sequence, "
                "arg_max(gaps, committed_at) AS gaps, arg_max(missing, committed_at) AS missing "
                "FROM read_parquet(?, union_by_name = true, hive_partitioning = false) "
                f"WHERE {clauses} AND (batch IN (SELECT batch FROM _k2_batches) "
                "OR (batch IS NOT NULL AND batch NOT IN (SELECT batch FROM _k2_kept)) "
                "OR (batch IS NULL AND snapshot_id IN (SELECT snapshot_id FROM _k2_snapshots))) "
                "GROUP BY ALL ORDER BY ALL",
                [files, *params],
            ).to_arrow_table()
            return result


def _describe_offsets(text: str | None) -> str | None:
    if not text:
        return None
    offsets = LandedOffsets.from_json(text)
    return f"{offsets.topic} " + " ".join(f"{p}:{o}" for p, o in sorted(offsets.next_offsets.items()))
