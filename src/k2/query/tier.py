"""The hot tier: decoded data files kept in memory, sorted, with each symbol's row range known.

Iceberg data files never change once written, so a decoded file stays valid for as long as any snapshot lists it
(a compaction writes new files; the old ones fall out of the plan and then out of this cache). A symbol's rows in
a file sorted by (symbol, ts, sequence) are one contiguous range, and a time range within it is two binary
searches: a symbol-day becomes a zero-copy slice. The cache is bounded in bytes (K2_QUERY_CACHE_MB), least
recently used out first; files larger than the whole budget are not cached (the engine reads those with DuckDB).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from k2.arrow_util import micros, symbol_runs
from k2.lake.fileio import open_input
from k2.lake.partials import MINUTE_US, Partials, coarsen, minute_partials
from k2.schemas import SORT_COLUMNS


@dataclass(frozen=True)
class HotFile:
    table: pa.Table
    ts: np.ndarray  # int64 µs, in row order
    symbols: dict[str, tuple[int, int]]  # symbol → [start, stop) rows
    _derived: dict[int, Partials | None] = field(default_factory=dict, compare=False)

    @property
    def nbytes(self) -> int:
        return int(self.table.nbytes + self.ts.nbytes)

    @property
    def has_partials(self) -> bool:
        return any(value is not None for value in self._derived.values())

    def partials(self, step_us: int) -> Partials | None:
        """(symbol, bucket) partial bars of a trades file for one of PARTIAL_STEPS, computed on first use from the
        minute partials (None: not exact in int64)."""
        if step_us not in self._derived:
            if step_us == MINUTE_US:
                self._derived[step_us] = minute_partials(self.table, self.ts, self.symbols)
            else:
                minutes = self.partials(MINUTE_US)
                self._derived[step_us] = coarsen(minutes, step_us) if minutes is not None else None
        return self._derived[step_us]

    def rows(self, symbol: str, start_us: int | None, end_us: int | None) -> tuple[int, int]:
        """[first, stop) rows of `symbol` with start <= ts < end."""
        first, stop = self.symbols.get(symbol, (0, 0))
        if first == stop:
            return 0, 0
        ts = self.ts[first:stop]
        low = first + int(np.searchsorted(ts, start_us, "left")) if start_us is not None else first
        high = first + int(np.searchsorted(ts, end_us, "left")) if end_us is not None else stop
        return low, max(low, high)


# string columns decoded as dictionaries (Parquet's own dictionary pages, no string per row): a file decodes ~3x
# faster, which is what the first query on a symbol-day waits for; rows leave the tier as plain strings
# (reader.conform casts the slices a query returns), and symbol and exchange are made plain here (the tier
# compares and searches them)
DICTIONARY_COLUMNS = ["exchange", "symbol", "side", "trade_id", "conditions", "venue"]
_PLAIN = ("exchange", "symbol")


def prepare(table: pa.Table) -> HotFile:
    """Sort by (symbol, ts, sequence) unless it already is, and index the symbol ranges."""
    for name in _PLAIN:
        if name in table.column_names and pa.types.is_dictionary(table.schema.field(name).type):
            column = table.column(name)
            table = table.set_column(table.column_names.index(name), name, column.cast(column.type.value_type))
    if not _is_sorted(table):
        table = table.sort_by([(c, "ascending") for c in SORT_COLUMNS if c in table.column_names])
    table = table.combine_chunks()
    ts = micros(table.column("ts"))
    return HotFile(table, ts, symbol_runs(table) if "symbol" in table.column_names else {})


def _is_sorted(table: pa.Table) -> bool:
    if table.num_rows < 2 or "ts" not in table.column_names:
        return True
    symbol = table.column("symbol").combine_chunks()
    ts = table.column("ts").combine_chunks().cast(pa.int64())
    same_symbol = pc.equal(symbol[1:], symbol[:-1])
    symbol_ok = pc.all(pc.or_(same_symbol, pc.greater(symbol[1:], symbol[:-1]))).as_py()
    if not symbol_ok:
        return False
    ts_back = pc.less(ts[1:], ts[:-1])
    if pc.any(pc.and_(same_symbol, ts_back)).as_py():
        return False
    if "sequence" not in table.column_names:
        return True
    sequence = table.column("sequence").combine_chunks()
    tie_back = pc.and_(pc.and_(same_symbol, pc.equal(ts[1:], ts[:-1])), pc.less(sequence[1:], sequence[:-1]))
    return not pc.any(tie_back).as_py()


_LOADER: ThreadPoolExecutor | None = None


def _loader() -> ThreadPoolExecutor:
    global _LOADER  # one small pool per process, made on first use
    if _LOADER is None:
        _LOADER = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2), thread_name_prefix="k2-tier")
    return _LOADER


class HotTier:
    """Decoded files by path, bounded in bytes, shared by the threads of one process."""

    def __init__(self, budget_bytes: int) -> None:
        self._budget = budget_bytes
        self._files: OrderedDict[str, HotFile] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def budget(self) -> int:
        return self._budget

    @property
    def used_bytes(self) -> int:
        return self._used

    def get(self, path: str, size_hint: int | None = None) -> HotFile | None:
        """The decoded file, loading it if it fits the budget; None when it never could (read it elsewhere)."""
        with self._lock:
            hot = self._files.get(path)
            if hot is not None:
                self._files.move_to_end(path)
                self.hits += 1
                return hot
        if self._budget <= 0 or (size_hint is not None and size_hint > self._budget):
            return None
        with open_input(path) as stream:
            footer = pq.ParquetFile(stream)
            names = set(footer.schema_arrow.names)
            dictionary = [c for c in DICTIONARY_COLUMNS if c in names]
            hot = prepare(pq.ParquetFile(stream, metadata=footer.metadata, read_dictionary=dictionary).read())
        with self._lock:
            self.misses += 1
            if hot.nbytes > self._budget:
                return hot  # used once, not kept
            if path not in self._files:
                self._files[path] = hot
                self._used += hot.nbytes
            while self._used > self._budget and self._files:
                _, dropped = self._files.popitem(last=False)
                self._used -= dropped.nbytes
        return hot

    def warm(self, paths: list[str]) -> None:
        """Load the files of `paths` not in the tier yet, several at once (Parquet decoding releases the GIL):
        the first query on a symbol-day waits for its slowest file, not for the sum of them."""
        if self._budget <= 0:
            return
        with self._lock:
            missing = [p for p in paths if p not in self._files]
        if len(missing) < 2:
            return
        for _ in _loader().map(self.get, missing):
            pass

    def holds(self, paths: list[str]) -> bool:
        """Every one of `paths` is decoded in the tier (a query over them reads no file)."""
        with self._lock:
            return all(path in self._files for path in paths)

    def files(self) -> list[HotFile]:
        with self._lock:
            return list(self._files.values())

    def clear(self) -> None:
        with self._lock:
            self._files.clear()
            self._used = 0
