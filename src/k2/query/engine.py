"""DuckDB query engine over K2's Iceberg tables.

pyiceberg plans the scan (partition and manifest pruning on symbol and time), DuckDB reads the surviving parquet
files with row-group pruning. Measured against `iceberg_scan()` in bench/query.py; see docs/decisions/0003.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import duckdb
import pyarrow as pa
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    In,
    LessThan,
)
from pyiceberg.table import Table

from k2.errors import QueryError
from k2.lake.catalog import catalog_errors, load_table, open_catalog
from k2.lake.offsets import OFFSETS_PROPERTY, LandedOffsets
from k2.lake.quality import QUALITY_TABLE, landed_batches
from k2.lake.snapshots import ancestry, property_of, require_snapshot
from k2.schemas import Dataset, arrow_schema
from k2.settings import Settings

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
    ("total_rows", pa.int64()), ("kafka_offsets", pa.string()),
])


def parse_interval(text: str) -> str:
    """'1m', '5min', '1h', '1d' → a DuckDB INTERVAL literal; at most a year."""
    match = _INTERVAL.match(text.strip().lower())
    if not match or int(match.group(1)) <= 0:
        raise QueryError(f"interval {text!r} is not like 1m, 5m, 15m, 1h, 1d")
    count, unit = int(match.group(1)), _UNITS[match.group(2)]
    if count * _UNIT_SECONDS[unit] > MAX_INTERVAL_DAYS * 86_400:
        raise QueryError(f"interval {text!r} is longer than {MAX_INTERVAL_DAYS} days")
    return f"{count} {unit}"


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@dataclass(frozen=True)
class TimeRange:
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def __post_init__(self) -> None:
        if self.start and self.end and _utc(self.start) >= _utc(self.end):
            raise QueryError(f"start {self.start.isoformat()} is not before end {self.end.isoformat()}")


class QueryEngine:
    """Read-side API used by the CLI, the API and the demo."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # a reader may work on a read-only home; a home that does not exist yet is created, empty
        self._catalog = open_catalog(settings, writable=not settings.home_path.exists())
        self._con = duckdb.connect()
        self._con.execute("SET TimeZone = 'UTC'")

    @property
    def settings(self) -> Settings:
        return self._settings

    def close(self) -> None:
        self._con.close()

    def table(self, dataset: Dataset) -> Table | None:
        return load_table(self._catalog, self._settings, dataset)

    def snapshots(self, dataset: Dataset) -> pa.Table:
        """The table's current history, newest first, with the Kafka offsets each snapshot had landed up to."""
        table = self.table(dataset)
        if table is None:
            return SNAPSHOTS_SCHEMA.empty_table()
        rows = []
        for snapshot in ancestry(table.metadata):
            summary = snapshot.summary
            extra = summary.additional_properties if summary is not None else {}
            offsets = property_of(snapshot, OFFSETS_PROPERTY)
            rows.append({
                "snapshot_id": snapshot.snapshot_id,
                "committed_at": dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, dt.UTC),
                "operation": summary.operation.value if summary is not None else None,
                "added_rows": int(extra.get("added-records", 0)),
                "total_rows": int(extra.get("total-records", 0)),
                "kafka_offsets": _describe_offsets(offsets),
            })
        return pa.Table.from_pylist(rows, schema=SNAPSHOTS_SCHEMA)

    def _filter(self, symbols: list[str] | None, span: TimeRange) -> BooleanExpression:
        # pyiceberg's predicate classes are pydantic models whose stubs hide the positional constructor
        expr: BooleanExpression = AlwaysTrue()
        if symbols:
            by_symbol = EqualTo("symbol", symbols[0]) if len(symbols) == 1 else In("symbol", symbols)  # type: ignore
            expr = And(expr, by_symbol)
        if span.start:
            expr = And(expr, GreaterThanOrEqual("ts", _utc(span.start).isoformat()))  # type: ignore
        if span.end:
            expr = And(expr, LessThan("ts", _utc(span.end).isoformat()))  # type: ignore
        return expr

    def files(
        self, dataset: Dataset, symbols: list[str] | None = None, span: TimeRange | None = None,
        snapshot_id: int | None = None,
    ) -> list[str]:
        """Data files that may hold matching rows, after partition and column-statistics pruning."""
        return self._plan(self.table(dataset), self._filter(symbols, span or TimeRange()), snapshot_id)

    @staticmethod
    def _plan(table: Table | None, row_filter: BooleanExpression, snapshot_id: int | None = None) -> list[str]:
        if table is None:
            if snapshot_id is not None:
                raise QueryError(f"snapshot {snapshot_id}: the table does not exist yet")
            return []
        if snapshot_id is not None:
            require_snapshot(table, snapshot_id)
        if table.current_snapshot() is None:
            return []
        paths = []
        with catalog_errors(".".join(table.name())):
            tasks = list(table.scan(row_filter=row_filter, snapshot_id=snapshot_id).plan_files())
        for task in tasks:
            if task.delete_files:
                raise QueryError(f"{table.name()} has delete files; K2 tables are append/overwrite only")
            paths.append(task.file.file_path.removeprefix("file://"))
        return paths

    def _where(self, symbols: list[str] | None, span: TimeRange) -> tuple[str, list[object]]:
        clauses: list[str] = ["TRUE"]
        params: list[object] = []
        if symbols:
            clauses.append(f"symbol IN ({', '.join('?' for _ in symbols)})")
            params.extend(symbols)
        if span.start:
            clauses.append("ts >= ?")
            params.append(_utc(span.start))
        if span.end:
            clauses.append("ts < ?")
            params.append(_utc(span.end))
        return " AND ".join(clauses), params

    def _run(self, sql: str, files: list[str], params: list[object]) -> pa.Table:
        source = "read_parquet(?, union_by_name = true, hive_partitioning = false)"
        result: pa.Table = self._con.execute(sql.format(source=source), [files, *params]).to_arrow_table()
        return result

    def ticks(
        self, dataset: Dataset, symbols: list[str] | None = None, span: TimeRange | None = None,
        limit: int | None = None, snapshot_id: int | None = None,
    ) -> pa.Table:
        """Trades or quotes in time order (ts, symbol, sequence)."""
        span = span or TimeRange()
        files = self.files(dataset, symbols, span, snapshot_id)
        if not files:
            return arrow_schema(dataset).empty_table()
        where, params = self._where(symbols, span)
        limit_sql = f" LIMIT {int(limit)}" if limit else ""
        return self._run(
            f"SELECT * FROM {{source}} WHERE {where} ORDER BY ts, symbol, sequence{limit_sql}", files, params
        )

    def count(
        self, dataset: Dataset, symbols: list[str] | None = None, span: TimeRange | None = None,
        snapshot_id: int | None = None,
    ) -> int:
        """How many rows `ticks` would return without a limit."""
        span = span or TimeRange()
        files = self.files(dataset, symbols, span, snapshot_id)
        if not files:
            return 0
        where, params = self._where(symbols, span)
        result = self._run(f"SELECT count(*) AS n FROM {{source}} WHERE {where}", files, params)
        return int(result.column("n")[0].as_py())

    def trades(
        self, symbols: list[str] | None = None, span: TimeRange | None = None, limit: int | None = None,
        snapshot_id: int | None = None,
    ) -> pa.Table:
        return self.ticks(Dataset.TRADES, symbols, span, limit, snapshot_id)

    def quotes(
        self, symbols: list[str] | None = None, span: TimeRange | None = None, limit: int | None = None,
        snapshot_id: int | None = None,
    ) -> pa.Table:
        return self.ticks(Dataset.QUOTES, symbols, span, limit, snapshot_id)

    def reference(self, dataset: Dataset = Dataset.REFERENCE, symbols: list[str] | None = None) -> pa.Table:
        """Instruments (valid_from order) or corporate actions (ex_date order) — small, unpartitioned tables."""
        files = self.files(dataset, symbols)
        if not files:
            return arrow_schema(dataset).empty_table()
        where, params = self._where(symbols, TimeRange())
        order = "valid_from" if dataset is Dataset.REFERENCE else "ex_date"
        return self._run(f"SELECT * FROM {{source}} WHERE {where} ORDER BY symbol, {order}", files, params)

    def bars(
        self, symbols: list[str] | None = None, interval: str = "1m", span: TimeRange | None = None,
        snapshot_id: int | None = None,
    ) -> pa.Table:
        """OHLCV bars per symbol; open/close are the first/last trade by (ts, sequence) in each bar."""
        span = span or TimeRange()
        step = parse_interval(interval)
        files = self.files(Dataset.TRADES, symbols, span, snapshot_id)
        if not files:
            return BARS_SCHEMA.empty_table()
        where, params = self._where(symbols, span)
        sql = f"""
            SELECT symbol, time_bucket(INTERVAL '{step}', ts) AS bar_start,
                   first(price ORDER BY ts, sequence) AS open, max(price) AS high, min(price) AS low,
                   last(price ORDER BY ts, sequence) AS close, sum(size)::BIGINT AS volume,
                   count(*) AS trades,
                   CAST(sum(price * size) / sum(size) AS DECIMAL(18, 8)) AS vwap
            FROM {{source}} WHERE {where}
            GROUP BY ALL ORDER BY symbol, bar_start"""
        return self._run(sql, files, params)

    def counts(
        self, symbols: list[str] | None = None, span: TimeRange | None = None, snapshot_id: int | None = None
    ) -> pa.Table:
        """Rows and time span per (exchange, symbol)."""
        span = span or TimeRange()
        files = self.files(Dataset.TRADES, symbols, span, snapshot_id)
        if not files:
            return COUNTS_SCHEMA.empty_table()
        where, params = self._where(symbols, span)
        return self._run(
            "SELECT exchange, symbol, count(*) AS trades, min(ts) AS first_ts, max(ts) AS last_ts "
            f"FROM {{source}} WHERE {where} GROUP BY ALL ORDER BY exchange, symbol",
            files, params,
        )

    def quality(self, symbols: list[str] | None = None) -> pa.Table:
        """Per (dataset, exchange, symbol, day): rows received/landed, duplicates dropped, late rows, and the
        current gaps (count and missing sequence numbers) with the landed sequence span. Only batches in each data
        table's current ancestry count: a rolled-back batch's counts are gone with its rows."""
        identifier = (self._settings.namespace, QUALITY_TABLE)
        table = self._catalog.load_table(identifier) if self._catalog.table_exists(identifier) else None
        files = self._plan(table, AlwaysTrue())
        if not files:
            return QUALITY_VIEW_SCHEMA.empty_table()
        tables = [t for d in Dataset if (t := self.table(d)) is not None]
        batches = [b for t in tables for b in landed_batches(t)]
        snapshots = [s.snapshot_id for t in tables for s in ancestry(t.metadata)]  # rows from before batch ids
        where, params = self._where(symbols, TimeRange())
        self._con.register("_k2_batches", pa.table({"batch": pa.array(batches, pa.string())}))
        self._con.register("_k2_snapshots", pa.table({"snapshot_id": pa.array(snapshots, pa.int64())}))
        try:
            return self._run(
                "SELECT dataset, exchange, symbol, day, sum(received)::BIGINT AS received, "
                "sum(landed)::BIGINT AS landed, sum(duplicates)::BIGINT AS duplicates, sum(late)::BIGINT AS late, "
                "arg_max(first_sequence, committed_at) AS first_sequence, "
                "arg_max(last_sequence, committed_at) AS last_sequence, "
                "arg_max(gaps, committed_at) AS gaps, arg_max(missing, committed_at) AS missing "
                f"FROM {{source}} WHERE {where} AND (batch IN (SELECT batch FROM _k2_batches) "
                "OR (batch IS NULL AND snapshot_id IN (SELECT snapshot_id FROM _k2_snapshots))) "
                "GROUP BY ALL ORDER BY ALL",
                files, params,
            )
        finally:
            self._con.unregister("_k2_batches")
            self._con.unregister("_k2_snapshots")


def _describe_offsets(text: str | None) -> str | None:
    if not text:
        return None
    offsets = LandedOffsets.from_json(text)
    return f"{offsets.topic} " + " ".join(f"{p}:{o}" for p, o in sorted(offsets.next_offsets.items()))
