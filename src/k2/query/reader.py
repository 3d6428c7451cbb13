"""Rows of the planned files that match symbols and a time range, as one Arrow table in a stated order.

Files in the hot tier are sliced (zero copy); files it cannot hold are read by DuckDB with the same predicate
(row-group pruning on the sorted columns). Pieces from several files are merged: concatenated when their time
ranges do not overlap (the usual case: each commit covers later ticks), sorted otherwise.
"""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.arrow_util import micros
from k2.lake.fileio import readable
from k2.lake.partials import Partials
from k2.query.aggregate import partial_step
from k2.query.duck import Duck
from k2.query.plan import Plan, to_micros
from k2.query.tier import HotFile, HotTier
from k2.schemas import LINEAGE_COLUMNS

# every column but the lineage ones (DuckDB resolves this to a plain projection, and it holds for files that
# predate those columns, where naming them would fail)
TICK_COLUMNS = "COLUMNS(c -> c NOT IN ({}))".format(", ".join(f"'{name}'" for name in LINEAGE_COLUMNS))


class Reader:
    def __init__(self, tier: HotTier, duck: Duck) -> None:
        self._tier = tier
        self._duck = duck

    def read(
        self, plan: Plan, schema: pa.Schema, symbols: list[str] | None, start: dt.datetime | None,
        end: dt.datetime | None, by_time: bool = True,
    ) -> pa.Table:
        """Matching rows in (ts, symbol, sequence) order when `by_time`, else (symbol, ts, sequence)."""
        if plan.table is None or not plan.paths:
            return schema.empty_table()
        start_us = to_micros(start) if start is not None else None
        end_us = to_micros(end) if end is not None else None
        pieces: list[pa.Table] = []
        cold: list[str] = []
        wanted = sorted(set(symbols)) if symbols else None
        self._tier.warm(plan.paths, wanted)
        for path in plan.paths:
            hots = self._tier.pieces(path, wanted)
            if hots is None:
                cold.append(path)
                continue
            for hot in hots:
                for symbol in wanted if wanted is not None else sorted(hot.symbols):
                    first, stop = hot.rows(symbol, start_us, end_us)
                    if stop > first:
                        pieces.append(hot.table.slice(first, stop - first))
        if cold:
            pieces.append(self._read_cold(cold, wanted, start, end))
        return _merged([conform(p, schema) for p in pieces if p.num_rows], schema, by_time)

    def count(self, plan: Plan, symbols: list[str] | None, start: dt.datetime | None,
              end: dt.datetime | None) -> int:
        if plan.table is None or not plan.paths:
            return 0
        start_us = to_micros(start) if start is not None else None
        end_us = to_micros(end) if end is not None else None
        total = 0
        cold: list[str] = []
        for path in plan.paths:
            hots = self._tier.pieces(path, symbols)
            if hots is None:
                cold.append(path)
                continue
            for hot in hots:
                for symbol in symbols if symbols else hot.symbols:
                    first, stop = hot.rows(symbol, start_us, end_us)
                    total += stop - first
        if cold:
            total += self._read_cold(cold, symbols, start, end).num_rows
        return total

    def partials(self, plan: Plan, symbols: list[str] | None, start: dt.datetime | None,
                 end: dt.datetime | None, step_us: int | None) -> Partials | None:
        """Partial bars of the matching trades for bars of `step_us` (None: one per symbol), when the window and
        the interval lie on kept bucket boundaries and every planned file is in the hot tier and exact; else None
        (the caller reads raw ticks)."""
        if plan.table is None:
            return None
        start_us = to_micros(start) if start is not None else None
        end_us = to_micros(end) if end is not None else None
        size = partial_step(step_us, start_us, end_us)
        if size is None:
            return None
        self._tier.warm(plan.paths, symbols)
        parts = []
        for path in plan.paths:
            hots = self._tier.pieces(path, symbols)
            if hots is None:
                return None
            for hot in hots:
                partials = hot.partials(size)
                if partials is None:
                    return None
                parts.append(partials.select(symbols, start_us, end_us))
        return Partials.concat(parts) if parts else None

    def last(self, plan: Plan, schema: pa.Schema, symbols: list[str] | None, end: dt.datetime) -> pa.Table:
        """Per symbol, the row with the greatest (ts, sequence) before `end`, in symbol order. Files are visited
        newest first, hot or cold alike; once every asked symbol has a row later than all that the next file could
        hold, the rest are skipped (a symbol-day query touches one or two files however long the history)."""
        if plan.table is None or not plan.paths:
            return schema.empty_table()
        end_us = to_micros(end)
        best: dict[str, tuple[int, int, pa.Table]] = {}  # symbol → (ts, sequence, one-row table)
        cold: list[str] = []
        newest = plan.newest or [end_us] * len(plan.paths)
        for position in sorted(range(len(plan.paths)), key=lambda i: newest[i], reverse=True):
            if symbols and len(best) == len(set(symbols)) and all(b[0] > newest[position] for b in best.values()):
                break
            path = plan.paths[position]
            hots = self._tier.pieces(path, symbols)
            if hots is None and symbols:  # no tier: DuckDB reads this file alone, then the check above again
                self._keep_latest(best, self._last_cold([path], symbols, end, schema))
            elif hots is None:
                cold.append(path)  # every symbol: no early stop is possible, one DuckDB pass over them all
            else:
                for hot in hots:
                    self._keep_latest(best, _last_rows(hot, symbols, end_us))
        if cold:
            self._keep_latest(best, self._last_cold(cold, symbols, end, schema))
        found = [conform(best[s][2], schema) for s in sorted(best)]
        return pa.concat_tables(found) if found else schema.empty_table()

    @staticmethod
    def _keep_latest(best: dict[str, tuple[int, int, pa.Table]], rows: pa.Table) -> None:
        """Fold one-row-per-symbol `rows` into `best`, keeping each symbol's greatest (ts, sequence)."""
        ts = micros(rows.column("ts"))
        for i, (symbol, sequence) in enumerate(zip(rows.column("symbol").to_pylist(),
                                                   rows.column("sequence").to_pylist(), strict=True)):
            key = (int(ts[i]), int(sequence))
            if symbol not in best or key > best[symbol][:2]:
                best[symbol] = (*key, rows.slice(i, 1))

    def _last_cold(self, paths: list[str], symbols: list[str] | None, end: dt.datetime,
                   schema: pa.Schema) -> pa.Table:
        clauses, params = where(symbols, None, end)
        sql = (f"SELECT {TICK_COLUMNS} FROM read_parquet(?, union_by_name = true, hive_partitioning = false) "
               f"WHERE {clauses} "
               "QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY ts DESC, sequence DESC) = 1")
        with self._duck.cursor() as con:
            rows = con.execute(sql, [[readable(p) for p in paths], *params]).to_arrow_table()
        return conform(rows, schema)

    def _read_cold(self, paths: list[str], symbols: list[str] | None, start: dt.datetime | None,
                   end: dt.datetime | None) -> pa.Table:
        clauses, params = where(symbols, start, end)
        sql = (f"SELECT {TICK_COLUMNS} FROM read_parquet(?, union_by_name = true, hive_partitioning = false) "
               f"WHERE {clauses} ORDER BY symbol, ts, sequence")
        local = [readable(p) for p in paths]
        with self._duck.cursor() as con:  # a cursor per query: threads may share the engine
            result: pa.Table = con.execute(sql, [local, *params]).to_arrow_table()
        return result


def where(symbols: list[str] | None, start: dt.datetime | None, end: dt.datetime | None,
          time_column: str = "ts") -> tuple[str, list[object]]:
    """A parameterised WHERE over symbol and time: user values are bound, never spliced."""
    clauses: list[str] = ["TRUE"]
    params: list[object] = []
    if symbols:
        clauses.append(f"symbol IN ({', '.join('?' for _ in symbols)})")
        params.extend(symbols)
    if start is not None:
        clauses.append(f"{time_column} >= ?")
        params.append(start)
    if end is not None:
        clauses.append(f"{time_column} < ?")
        params.append(end)
    return " AND ".join(clauses), params


def _last_rows(hot: HotFile, symbols: list[str] | None, end_us: int) -> pa.Table:
    """Each symbol's last row before `end_us` in one decoded row group."""
    rows = []
    for symbol in symbols or hot.symbols:
        first, stop = hot.rows(symbol, None, end_us)
        if stop > first:
            rows.append(stop - 1)
    return hot.table.take(pa.array(rows, pa.int64())) if rows else hot.table.slice(0, 0)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table with exactly `schema`'s columns (fields a file predates read as null)."""
    if table.schema.equals(schema, check_metadata=False):
        return table
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _merged(pieces: list[pa.Table], schema: pa.Schema, by_time: bool) -> pa.Table:
    """One table from per-file pieces, each in (symbol, ts, sequence) order."""
    if not pieces:
        return schema.empty_table()
    if len(pieces) == 1 and (not by_time or _single_symbol(pieces[0])):
        return pieces[0]
    if all(_single_symbol(p) for p in pieces):
        ordered = _ordered_without_sort(pieces, by_time)
        if ordered is not None:
            return pa.concat_tables(ordered)
    keys = ["ts", "symbol", "sequence"] if by_time else ["symbol", "ts", "sequence"]
    combined = pa.concat_tables(pieces)
    return combined.take(pc.sort_indices(combined, [(k, "ascending") for k in keys]))


def _ordered_without_sort(pieces: list[pa.Table], by_time: bool) -> list[pa.Table] | None:
    """The single-symbol pieces in output order when concatenating them is enough, else None: in time order
    their time ranges must not overlap; in symbol order only those of one symbol must not."""
    firsts = np.array([_ts_at(p, 0) for p in pieces])
    lasts = np.array([_ts_at(p, p.num_rows - 1) for p in pieces])
    symbols = [p.column("symbol")[0].as_py() for p in pieces]
    if by_time:
        by_start = np.argsort(firsts, kind="stable")
        return [pieces[i] for i in by_start] if bool(np.all(lasts[by_start][:-1] < firsts[by_start][1:])) else None
    order = sorted(range(len(pieces)), key=lambda i: (symbols[i], firsts[i]))
    for before, after in itertools.pairwise(order):
        if symbols[before] == symbols[after] and lasts[before] >= firsts[after]:
            return None
    return [pieces[i] for i in order]


def _ts_at(table: pa.Table, row: int) -> int:
    return int(table.column("ts")[row].cast(pa.int64()).as_py())


def _single_symbol(table: pa.Table) -> bool:
    symbol = table.column("symbol")
    return table.num_rows == 0 or bool(symbol[0] == symbol[-1])
