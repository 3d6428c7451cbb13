"""The hot tier: decoded row groups of data files kept in memory, sorted, with each symbol's row range known.

Iceberg data files never change once written, so a decoded file stays valid for as long as any snapshot lists it
(a compaction writes new files; the old ones fall out of the plan and then out of this cache). A symbol's rows in
a file sorted by (symbol, ts, sequence) are one contiguous range, and a time range within it is two binary
searches: a symbol-day becomes a zero-copy slice. The cache is bounded in bytes (K2_QUERY_CACHE_MB), least
recently used out first; files with a row group larger than the whole budget are not cached (the engine reads
those with DuckDB). Files are written in row groups of K2_ROW_GROUP_ROWS rows (docs/decisions/0019), so a
symbol-day query reads and decodes its symbol's row groups, not the whole partition.
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
from k2.schemas import LINEAGE_COLUMNS, SORT_COLUMNS


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


def prepare(table: pa.Table) -> HotFile:
    """Sort by (symbol, ts, sequence) unless it already is, and index the symbol ranges. (Strings are decoded
    plain: decoding them as Parquet dictionaries was ~3x faster on whole as-ingested files, but 1.6-1.9x slower
    per symbol's row groups of 16,384 rows, and every answer then cast them back: docs/decisions/0019.)"""
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
    """Decoded row groups by (path, row group), bounded in bytes, shared by the threads of one process.

    The unit is the row group, not the file: a file holds every symbol of its partition (bucket) and day, sorted by
    symbol, and a row group's symbol statistics say which symbols it can hold; a symbol-day query decodes (and
    reads from disk) only the row groups of its symbol. Queries over every symbol load every row group."""

    def __init__(self, budget_bytes: int) -> None:
        self._budget = budget_bytes
        self._pieces: OrderedDict[tuple[str, int], HotFile] = OrderedDict()
        self._layouts: OrderedDict[str, FileLayout] = OrderedDict()
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

    def pieces(self, path: str, symbols: list[str] | None) -> list[HotFile] | None:
        """The decoded row groups of `path` that may hold any of `symbols` (every one when None), loading those not
        in the tier; None when the tier is off or a row group would not fit it (read the file elsewhere)."""
        if self._budget <= 0:
            return None
        layout = self._layout(path)
        wanted = layout.row_groups(symbols)
        with self._lock:
            found = {i: hot for i in wanted if (hot := self._pieces.get((path, i))) is not None}
            for i in found:
                self._pieces.move_to_end((path, i))
            self.hits += len(found)
        missing = [i for i in wanted if i not in found]
        if any(layout.sizes[i] > self._budget for i in missing):
            return None
        if missing:
            found.update(self._load(path, layout, missing))
        return [found[i] for i in wanted]

    def holds(self, paths: list[str], symbols: list[str] | None) -> bool:
        """Every row group of `paths` that may hold `symbols` is decoded in the tier (a query over them reads no
        file)."""
        with self._lock:
            layouts = [self._layouts.get(p) for p in paths]
            return all(
                layout is not None and all((path, i) in self._pieces for i in layout.row_groups(symbols))
                for path, layout in zip(paths, layouts, strict=True)
            )

    def warm(self, paths: list[str], symbols: list[str] | None) -> None:
        """Load the row groups of `paths` for `symbols` not in the tier yet, several files at once (Parquet
        decoding releases the GIL): the first query on a symbol-day waits for its slowest file, not for the sum."""
        if self._budget <= 0 or len(paths) < 2:
            return
        with self._lock:
            cold = [p for p in paths if p not in self._layouts
                    or any((p, i) not in self._pieces for i in self._layouts[p].row_groups(symbols))]
        if len(cold) < 2:
            return
        for _ in _loader().map(lambda p: self.pieces(p, symbols), cold):
            pass

    def files(self) -> list[HotFile]:
        with self._lock:
            return list(self._pieces.values())

    def clear(self) -> None:
        with self._lock:
            self._pieces.clear()
            self._layouts.clear()
            self._used = 0

    def _layout(self, path: str) -> FileLayout:
        with self._lock:
            layout = self._layouts.get(path)
            if layout is not None:
                self._layouts.move_to_end(path)
                return layout
        with open_input(path) as stream:
            layout = FileLayout.of(pq.ParquetFile(stream).metadata)
        with self._lock:
            self._layouts[path] = layout
            while len(self._layouts) > _MAX_LAYOUTS:
                self._layouts.popitem(last=False)
        return layout

    def _load(self, path: str, layout: FileLayout, row_groups: list[int]) -> dict[int, HotFile]:
        """Decode `row_groups` of `path` in one read, one HotFile each, and keep them (least recently used out)."""
        with open_input(path) as stream:
            columns = [name for name in layout.metadata.schema.names if name not in LINEAGE_COLUMNS]
            table = pq.ParquetFile(stream, metadata=layout.metadata).read_row_groups(row_groups, columns=columns)
        loaded: dict[int, HotFile] = {}
        offset = 0
        for i in row_groups:
            rows = layout.metadata.row_group(i).num_rows
            loaded[i] = prepare(table.slice(offset, rows))
            offset += rows
        with self._lock:
            self.misses += len(loaded)
            for i, hot in loaded.items():
                if (path, i) not in self._pieces:
                    self._pieces[(path, i)] = hot
                    self._used += hot.nbytes
            while self._used > self._budget and self._pieces:
                _, dropped = self._pieces.popitem(last=False)
                self._used -= dropped.nbytes
        return loaded


# footers kept per process (a few KB each): a symbol-day query must not re-read a file's footer to find its rows
_MAX_LAYOUTS = 65_536


@dataclass(frozen=True)
class FileLayout:
    """A data file's footer and, per row group, its symbol range and an upper bound of its decoded size."""

    metadata: pq.FileMetaData
    ranges: list[tuple[str, str] | None]  # (min, max) symbol per row group; None: unknown, may hold any
    sizes: list[int]

    @classmethod
    def of(cls, metadata: pq.FileMetaData) -> FileLayout:
        names = metadata.schema.names
        symbol = names.index("symbol") if "symbol" in names else None
        ranges: list[tuple[str, str] | None] = []
        sizes = []
        for i in range(metadata.num_row_groups):
            group = metadata.row_group(i)
            sizes.append(group.total_byte_size)
            stats = group.column(symbol).statistics if symbol is not None else None
            if stats is not None and stats.has_min_max:
                ranges.append((_text(stats.min), _text(stats.max)))
            else:
                ranges.append(None)
        return cls(metadata, ranges, sizes)

    def row_groups(self, symbols: list[str] | None) -> list[int]:
        if not symbols:
            return list(range(len(self.ranges)))
        return [i for i, span in enumerate(self.ranges)
                if span is None or any(span[0] <= s <= span[1] for s in symbols)]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
