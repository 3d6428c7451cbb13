"""The merged, ordered stream of a pinned replay, read one UTC day at a time.

The tick tables are partitioned by day, so a day is the natural unit: for each day in range, DuckDB reads the
day's planned files of every dataset (pruned by symbol and time, at the pinned snapshots), and sorts them on the
replay order (replay/order.py). Its memory limit bounds what a day may hold in memory (a larger day spills to
disk), and the stream is handed on in Arrow batches as the sort produces them: memory depends on the size of one
day, never on the length of the range. Resuming after a cursor skips whole days before it and filters the day it
is in on the full order key.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator

import duckdb
import numpy as np
import pyarrow as pa

from k2.lake.fileio import readable
from k2.query.duck import quiet
from k2.query.objectstore import attach_object_store
from k2.query.plan import Planner, to_micros
from k2.replay.cursor import Position, ReplayRequest
from k2.replay.order import DATASET_COLUMNS, KIND, RANK, SCHEMA
from k2.schemas import Dataset

DAY_US = 86_400_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _instant(micros: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=micros)


class MergedSource:
    def __init__(self, planner: Planner, request: ReplayRequest, batch_rows: int = 65_536,
                 memory_mb: int = 1024) -> None:
        self._planner = planner
        self._request = request
        self._batch_rows = batch_rows
        self._memory_mb = memory_mb
        self._connection: duckdb.DuckDBPyConnection | None = None

    @property
    def _con(self) -> duckdb.DuckDBPyConnection:
        if self._connection is None:
            self._connection = quiet(duckdb.connect(config={
                "memory_limit": f"{self._memory_mb}MB", "temp_directory": tempfile.gettempdir(),
            }))
            self._connection.execute("SET TimeZone = 'UTC'")
            attach_object_store(self._connection, self._planner.settings)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def days(self) -> list[int]:
        """The UTC days (µs of their midnight) that hold planned files, in order."""
        found: set[int] = set()
        request = self._request
        for dataset in request.datasets:
            plan = self._planner.plan(dataset, list(request.symbols) if request.symbols else None, request.start,
                                      request.end, snapshot_id=request.snapshots.get(dataset))
            if plan.paths:
                lows = np.asarray(plan.oldest, np.int64)
                highs = np.asarray(plan.newest, np.int64)
                for low, high in zip(lows.tolist(), highs.tolist(), strict=True):
                    found.update(range(low // DAY_US * DAY_US, high // DAY_US * DAY_US + 1, DAY_US))
        start = to_micros(request.start) // DAY_US * DAY_US if request.start else None
        end = to_micros(request.end) if request.end else None
        return sorted(d for d in found if (start is None or d >= start) and (end is None or d < end))

    def batches(self, after: Position | None = None) -> Iterator[pa.RecordBatch]:
        for day in self.days():
            if after is not None and day + DAY_US <= after.ts:
                continue
            yield from self._day(day, after)

    def _day(self, day: int, after: Position | None) -> Iterator[pa.RecordBatch]:
        request = self._request
        low = max(day, to_micros(request.start)) if request.start else day
        high = min(day + DAY_US, to_micros(request.end)) if request.end else day + DAY_US
        selects, params = [], []
        for dataset in request.datasets:
            plan = self._planner.plan(dataset, list(request.symbols) if request.symbols else None, _instant(low),
                                      _instant(high), snapshot_id=request.snapshots.get(dataset))
            if not plan.paths:
                continue
            paths = [readable(p) for p in plan.paths]
            select, bound = self._select(dataset, paths, low, high, after)
            selects.append(select)
            params.extend(bound)
        if not selects:
            return
        sql = " UNION ALL ".join(selects) + " ORDER BY ts, sequence, rank, exchange, symbol"
        reader = self._con.execute(sql, params).to_arrow_reader(self._batch_rows)
        for batch in reader:
            if batch.num_rows:
                yield batch.cast(SCHEMA) if not batch.schema.equals(SCHEMA) else batch

    def _select(self, dataset: Dataset, paths: list[str], low: int, high: int,
                after: Position | None) -> tuple[str, list[object]]:
        source = "read_parquet(?, union_by_name = true, hive_partitioning = false)"
        present = set(self._con.execute(f"SELECT * FROM {source} LIMIT 0", [paths]).to_arrow_table().column_names)
        columns = [f"'{KIND[dataset]}' AS kind", f"{RANK[dataset]}::TINYINT AS rank", "exchange", "symbol", "ts",
                   "sequence"]
        for name in SCHEMA.names[6:]:
            wanted = SCHEMA.field(name).type
            mine = name in DATASET_COLUMNS[dataset] and name in present
            columns.append(name if mine else f"NULL::{_duck_type(wanted)} AS {name}")
        clauses = ["ts >= ?", "ts < ?"]
        params: list[object] = [paths, _instant(low), _instant(high)]
        if self._request.symbols:
            clauses.append(f"symbol IN ({', '.join('?' for _ in self._request.symbols)})")
            params.extend(self._request.symbols)
        if after is not None and after.ts >= low:
            clauses.append(_after_clause(RANK[dataset]))
            params.extend(_after_params(after))
        return f"SELECT {', '.join(columns)} FROM {source} WHERE {' AND '.join(clauses)}", params


def _duck_type(arrow: pa.DataType) -> str:
    if pa.types.is_decimal(arrow):
        return f"DECIMAL({arrow.precision}, {arrow.scale})"
    return "BIGINT" if pa.types.is_integer(arrow) else "VARCHAR"


def _after_clause(rank: int) -> str:
    """The row comes after the cursor in (ts, sequence, rank, exchange, symbol) order (rank is this dataset's)."""
    return (
        "(ts > ? OR (ts = ? AND (sequence > ? OR (sequence = ? AND "
        f"({rank} > ? OR ({rank} = ? AND (exchange > ? OR (exchange = ? AND symbol > ?))))))))"
    )


def _after_params(after: Position) -> list[object]:
    moment = _instant(after.ts)
    return [moment, moment, after.sequence, after.sequence, after.rank, after.rank, after.exchange, after.exchange,
            after.symbol]
